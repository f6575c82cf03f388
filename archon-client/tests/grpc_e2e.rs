#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "grpc")]
//! End to end against a real tonic server on 127.0.0.1:0 that misbehaves on command.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::ResiliencePolicy;
use archon_client::circuit_breaker::CircuitBreakerConfig;
use archon_client::grpc::{GrpcConfig, channel, channel_lazy};
use archon_client::retry::{ExponentialBackoff, RetryConfig};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

#[derive(Default)]
struct Flaky {
    /// The first `unavailable` calls fail with UNAVAILABLE.
    unavailable: AtomicUsize,
    calls: AtomicUsize,
    hang: std::sync::atomic::AtomicBool,
    timeouts: std::sync::Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Svc(Arc<Flaky>);

#[tonic::async_trait]
impl Health for Svc {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let n = self.0.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = req.metadata().get("grpc-timeout") {
            self.0
                .timeouts
                .lock()
                .unwrap()
                .push(t.to_str().unwrap().to_owned());
        }
        if self.0.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if n < self.0.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("warming up"));
        }
        if req.get_ref().service == "bad" {
            return Err(Status::invalid_argument("no such service"));
        }
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

async fn start() -> (String, Arc<Flaky>) {
    let state = Arc::new(Flaky::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = HealthServer::new(Svc(state.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (format!("http://{addr}"), state)
}

fn retry() -> RetryConfig {
    RetryConfig::default()
        .max_attempts(4)
        .backoff(ExponentialBackoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
            2.0,
        ))
}

#[tokio::test]
async fn generated_client_retries_unavailable_through_the_channel() {
    let (endpoint, server) = start().await;
    server.unavailable.store(2, Ordering::SeqCst);
    let cfg = GrpcConfig::new(endpoint, ResiliencePolicy::default().retry(retry()));
    let mut client = HealthClient::new(channel(&cfg).await.unwrap());
    let resp = client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(resp.get_ref().status, 1);
    assert_eq!(server.calls.load(Ordering::SeqCst), 3);

    // INVALID_ARGUMENT is not retried.
    let err = client
        .check(HealthCheckRequest {
            service: "bad".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(server.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn deadline_propagates_as_grpc_timeout_and_ends_the_call() {
    let (endpoint, server) = start().await;
    server.hang.store(true, Ordering::SeqCst);
    let cfg = GrpcConfig::new(
        endpoint,
        ResiliencePolicy::default()
            .deadline(Duration::from_millis(300))
            .retry(retry()),
    );
    let mut client = HealthClient::new(channel_lazy(&cfg).unwrap());
    let err = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert!(err.message().contains("deadline"), "{err:?}");
    let seen = server.timeouts.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // The server was told it had at most the 300 ms deadline.
    let (n, unit) = seen[0].split_at(seen[0].len() - 1);
    let n: u64 = n.parse().unwrap();
    let micros = match unit {
        "u" => n,
        "n" => n / 1000,
        "m" => n * 1000,
        other => panic!("unit {other}"),
    };
    assert!(micros <= 300_000 && micros > 100_000, "{seen:?}");
}

#[tokio::test]
async fn breaker_opens_on_unavailable_and_fails_fast() {
    let (endpoint, server) = start().await;
    server.unavailable.store(usize::MAX, Ordering::SeqCst);
    let cfg = GrpcConfig::new(
        endpoint,
        ResiliencePolicy::default().circuit_breaker(
            CircuitBreakerConfig::default()
                .count_window(5)
                .minimum_calls(5),
        ),
    );
    let mut client = HealthClient::new(channel(&cfg).await.unwrap());
    for _ in 0..5 {
        let err = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
    for _ in 0..5 {
        let err = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert!(err.message().contains("circuit breaker is open"), "{err:?}");
    }
    assert_eq!(server.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn body_over_the_replay_limit_is_sent_once_and_says_why() {
    let (endpoint, server) = start().await;
    server.unavailable.store(usize::MAX, Ordering::SeqCst);
    let mut cfg = GrpcConfig::new(endpoint, ResiliencePolicy::default().retry(retry()));
    cfg.max_replay_bytes = 16;
    let mut client = HealthClient::new(channel(&cfg).await.unwrap());
    let err = client
        .check(HealthCheckRequest {
            service: "x".repeat(100),
        })
        .await
        .unwrap_err();
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    assert!(err.message().contains("not retried"), "{err:?}");

    // A small body is retried as usual.
    let err = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(server.calls.load(Ordering::SeqCst), 1 + 4);
}
