#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "http")]
//! End to end against a real axum server on 127.0.0.1:0 that misbehaves on command.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::bulkhead::BulkheadConfig;
use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitState};
use archon_client::hedge::HedgeConfig;
use archon_client::http::{HttpClient, HttpClientConfig, UpstreamConfig};
use archon_client::retry::{ExponentialBackoff, RetryBudgetConfig, RetryConfig};
use archon_client::{ErrorKind, ResiliencePolicy};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};

#[derive(Default)]
struct Server {
    /// Status `/flaky` answers with.
    status: AtomicU16,
    hits: std::sync::Mutex<HashMap<&'static str, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Server {
    fn hit(&self, route: &'static str) -> usize {
        let mut hits = self.hits.lock().unwrap();
        let n = hits.entry(route).or_default();
        *n += 1;
        *n
    }

    fn hits(&self, route: &'static str) -> usize {
        self.hits.lock().unwrap().get(route).copied().unwrap_or(0)
    }
}

async fn start() -> (String, Arc<Server>) {
    let state = Arc::new(Server {
        status: AtomicU16::new(200),
        ..Server::default()
    });
    let app = Router::new()
        .route(
            "/flaky",
            get(|State(s): State<Arc<Server>>| async move {
                s.hit("flaky");
                StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route(
            "/orders",
            post(|State(s): State<Arc<Server>>| async move {
                s.hit("orders");
                StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route(
            "/retry-after",
            get(|State(s): State<Arc<Server>>| async move {
                if s.hit("retry-after") == 1 {
                    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response()
                } else {
                    StatusCode::OK.into_response()
                }
            }),
        )
        .route(
            "/hang",
            get(|State(s): State<Arc<Server>>| async move {
                s.hit("hang");
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK
            }),
        )
        .route(
            "/inflight",
            get(|State(s): State<Arc<Server>>| async move {
                s.hit("inflight");
                let n = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_in_flight.fetch_max(n, Ordering::SeqCst);
                // Long enough that the four admitted calls overlap even on a loaded machine.
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                StatusCode::OK
            }),
        )
        .route(
            "/hedge",
            get(|State(s): State<Arc<Server>>| async move {
                // Odd requests land on the "slow instance".
                if s.hit("hedge") % 2 == 1 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "slow"
                } else {
                    "fast"
                }
            }),
        )
        .route(
            "/item",
            get(|| async { axum::Json(serde_json::json!({"id": 7, "name": "lamp"})) }),
        )
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let get = |k: &str| {
                    headers
                        .get(k)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                axum::Json(serde_json::json!({
                    "traceparent": get("traceparent"),
                    "correlation": get("x-correlation-id"),
                }))
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn client(base: &str, policy: ResiliencePolicy) -> HttpClient {
    HttpClient::new(&HttpClientConfig::default().upstream("svc", UpstreamConfig::new(base, policy)))
        .unwrap()
}

fn quick_retry() -> RetryConfig {
    RetryConfig::default()
        .max_attempts(3)
        .backoff(ExponentialBackoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
            2.0,
        ))
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_recovers_through_half_open() {
    let (base, server) = start().await;
    let policy = ResiliencePolicy::default().circuit_breaker(
        CircuitBreakerConfig::default()
            .count_window(10)
            .minimum_calls(10)
            .wait_in_open(Duration::from_millis(300))
            .permitted_calls_in_half_open(2),
    );
    let client = client(&base, policy);
    let breaker = client.circuit_breaker("svc", "/flaky").unwrap();
    server.status.store(503, Ordering::SeqCst);
    for _ in 0..10 {
        let err = client.get("svc", "/flaky").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status(503));
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    for _ in 0..20 {
        let err = client.get("svc", "/flaky").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
        assert!(err.circuit_open().unwrap().remaining_wait().is_some());
    }
    assert_eq!(
        server.hits("flaky"),
        10,
        "rejected calls never reach the server"
    );

    server.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..2 {
        client.get("svc", "/flaky").send().await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(server.hits("flaky"), 12);
}

#[tokio::test]
async fn retries_stop_at_the_budget_during_a_total_outage() {
    let (base, server) = start().await;
    let budget = RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 1,
        ttl: Duration::from_secs(30),
    };
    let client = client(
        &base,
        ResiliencePolicy::default().retry(quick_retry().budget(Some(budget))),
    );
    // 100 healthy calls earn 20 retries; the reserve adds 1/s over 30 s.
    for _ in 0..100 {
        client.get("svc", "/flaky").send().await.unwrap();
    }
    server.status.store(503, Ordering::SeqCst);
    let mut exhausted = 0;
    for _ in 0..100 {
        let err = client.get("svc", "/flaky").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Status(503));
        if err.to_string().contains("budget") {
            exhausted += 1;
        }
    }
    let extra = server.hits("flaky") - 200;
    assert_eq!(extra, 20 + 30, "retries = deposits + reserve");
    assert!(exhausted >= 70, "{exhausted}");
}

#[tokio::test]
async fn bulkhead_caps_concurrency_at_the_server() {
    let (base, server) = start().await;
    let client = client(
        &base,
        ResiliencePolicy::default().bulkhead(BulkheadConfig {
            max_concurrent: 4,
            max_wait: Duration::from_secs(10),
        }),
    );
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("svc", "/inflight").send().await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(server.hits("inflight"), 24);
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn hedging_answers_from_the_fast_instance() {
    let (base, server) = start().await;
    let client = client(
        &base,
        ResiliencePolicy::default()
            .hedge(HedgeConfig::fixed(Duration::from_millis(50)))
            .retry(quick_retry()),
    );
    let body = client
        .get("svc", "/hedge")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "fast");
    assert_eq!(server.hits("hedge"), 2);
}

#[tokio::test]
async fn retry_after_from_the_server_is_honoured() {
    let (base, server) = start().await;
    let client = client(&base, ResiliencePolicy::default().retry(quick_retry()));
    client.get("svc", "/retry-after").send().await.unwrap();
    assert_eq!(server.hits("retry-after"), 2);
}

#[tokio::test]
async fn per_attempt_timeout_and_deadline_on_a_hanging_server() {
    let (base, server) = start().await;
    let client = client(
        &base,
        ResiliencePolicy::default()
            .timeout(Duration::from_millis(100))
            .deadline(Duration::from_millis(250))
            .retry(quick_retry().max_attempts(10)),
    );
    let err = client.get("svc", "/hang").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    // Per-attempt timeouts of 100 ms inside a 250 ms deadline: 3 attempts at most (fewer
    // reach the handler when the machine is slow to connect).
    let hits = server.hits("hang");
    assert!((1..=3).contains(&hits), "{hits}");
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_and_post_is_not_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(
        &format!("http://{addr}"),
        ResiliencePolicy::default().retry(quick_retry()),
    );
    let err = client.get("svc", "/x").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.is_retryable());
    let err = client
        .post("svc", "/orders")
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not retried: POST is not idempotent"),
        "{err}"
    );
}

#[tokio::test]
async fn post_is_sent_once_unless_it_has_an_idempotency_key() {
    let (base, server) = start().await;
    server.status.store(503, Ordering::SeqCst);
    let client = client(&base, ResiliencePolicy::default().retry(quick_retry()));
    client
        .post("svc", "/orders")
        .body("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(server.hits("orders"), 1);
    client
        .post("svc", "/orders")
        .idempotency_key("k-1")
        .body("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(server.hits("orders"), 4);
}

#[tokio::test]
async fn json_helpers_and_context_headers() {
    #[derive(serde::Deserialize)]
    struct Item {
        id: u64,
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Echo {
        traceparent: String,
        correlation: String,
    }
    let (base, _server) = start().await;
    let client = client(&base, ResiliencePolicy::default());
    let item: Item = client.get("svc", "/item").send_json().await.unwrap();
    assert_eq!((item.id, item.name.as_str()), (7, "lamp"));
    let err = client
        .get("svc", "/item")
        .send_json::<Vec<u8>>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);

    let md = archon_core::context::Metadata::new_root();
    let trace = md.trace_id().unwrap();
    let correlation = md.correlation_id.clone().unwrap();
    let echo: Echo = md
        .scope(async { client.get("svc", "/echo").send_json().await })
        .await
        .unwrap();
    assert!(echo.traceparent.contains(&trace), "{}", echo.traceparent);
    assert_eq!(echo.correlation, correlation);

    let err = client.get("nope", "/").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownUpstream);
}

/// Without the `rustls` feature reqwest has no TLS: a CA file cannot be honoured.
#[cfg(not(feature = "rustls"))]
#[test]
fn ca_file_without_the_rustls_feature_is_a_config_error() {
    let up = UpstreamConfig::new("https://localhost:1", ResiliencePolicy::default()).tls(
        archon_client::http::HttpTlsConfig::ca_file("/etc/archon/ca.pem"),
    );
    let err = HttpClient::new(&HttpClientConfig::default().upstream("secure", up)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("rustls"), "{err}");
}
