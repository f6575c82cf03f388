#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "http")]
//! Power-of-two-choices over two real axum servers, one of them failing: its breaker ejects it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::balance::balanced;
use archon_client::circuit_breaker::CircuitBreakerConfig;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower::{Service, ServiceExt, service_fn};

async fn server(status: u16) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/"), hits)
}

#[tokio::test]
async fn failing_endpoint_is_ejected_and_taken_back_after_recovery_wait() {
    let (good_url, good) = server(200).await;
    let (bad_url, bad) = server(503).await;
    let client = reqwest::Client::new();
    let endpoint = |url: String| {
        let client = client.clone();
        service_fn(move |()| {
            let req = client.get(url.as_str()).build().unwrap();
            client.execute(req)
        })
    };
    let breaker = CircuitBreakerConfig::default()
        .count_window(4)
        .minimum_calls(4)
        .wait_in_open(Duration::from_millis(1500))
        .permitted_calls_in_half_open(1);
    let mut lb = balanced(
        [
            ("good".to_owned(), endpoint(good_url)),
            ("bad".to_owned(), endpoint(bad_url)),
        ],
        "inventory",
        &breaker,
    )
    .unwrap();
    let mut failures = 0;
    for _ in 0..100 {
        let resp = lb.ready().await.unwrap().call(()).await.unwrap();
        if resp.status() != 200 {
            failures += 1;
        }
    }
    // The bad endpoint saw exactly the 4 calls that opened its breaker, then was ejected.
    assert_eq!(bad.load(Ordering::SeqCst), 4);
    assert_eq!(failures, 4);
    assert_eq!(good.load(Ordering::SeqCst), 96);

    // After the wait it is back in the set for one half-open probe, fails, and leaves again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..100 {
        lb.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(bad.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn discovery_inserts_and_removes_as_resolution_changes() {
    use archon_client::balance::discover;
    use futures::StreamExt;
    use std::net::SocketAddr;
    use tower::discover::Change;

    let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let answers = Arc::new(std::sync::Mutex::new(vec![
        Ok(vec![b]),
        Err(std::io::Error::other("dns down")),
        Ok(vec![a, b]),
        Ok(vec![a]),
    ]));
    let script = answers.clone();
    let mut changes = discover(
        move || {
            let next = script.lock().unwrap().pop().unwrap_or_else(|| Ok(vec![b]));
            async move { next }
        },
        Duration::from_secs(30),
        |addr| addr.port(),
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        match changes.next().await.unwrap().unwrap() {
            Change::Insert(addr, port) => seen.push(format!("+{addr}/{port}")),
            Change::Remove(addr) => seen.push(format!("-{addr}")),
        }
    }
    // [a] -> [a, b] -> (failure: keep) -> [b]
    assert_eq!(seen, ["+10.0.0.1:80/80", "+10.0.0.2:80/80", "-10.0.0.1:80"]);
}

#[tokio::test]
async fn balancer_over_dns_discovery_calls_the_resolved_server() {
    use archon_client::balance::{balanced_discover, dns};
    let (url, hits) = server(200).await;
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let client = reqwest::Client::new();
    let discovery = dns("127.0.0.1", port, Duration::from_secs(60), move |addr| {
        let client = client.clone();
        service_fn(move |()| {
            let req = client.get(format!("http://{addr}/")).build().unwrap();
            client.execute(req)
        })
    });
    let mut lb = balanced_discover(discovery, "dns", &CircuitBreakerConfig::default()).unwrap();
    for _ in 0..5 {
        let resp = lb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 5);
}
