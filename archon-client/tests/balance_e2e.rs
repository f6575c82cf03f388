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
