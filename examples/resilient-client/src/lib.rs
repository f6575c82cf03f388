//! The demo behind `cargo run -p resilient-client`: a flaky server and a resilient client,
//! built from functions so that a test can drive them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::bulkhead::BulkheadConfig;
use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitState};
use archon_client::http::{HttpClient, HttpClientConfig, UpstreamConfig};
use archon_client::retry::{ExponentialBackoff, RetryConfig};
use archon_client::{ErrorKind, ResiliencePolicy};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// How the flaky server behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers 200.
    Healthy,
    /// Answers 503 to every request.
    Outage,
    /// Answers 503 to every second request.
    Flaky,
}

/// The server's switch and its request counter.
#[derive(Debug, Default)]
pub struct Server {
    mode: AtomicU8,
    hits: AtomicUsize,
}

impl Server {
    /// Changes the behaviour.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts the flaky server on 127.0.0.1:0; returns its base URL and its switch.
///
/// # Errors
/// When the port cannot be bound.
pub async fn start_server() -> anyhow::Result<(String, Arc<Server>)> {
    let state = Arc::new(Server::default());
    let app = Router::new()
        .route(
            "/stock",
            get(|State(s): State<Arc<Server>>| async move {
                let n = s.hits.fetch_add(1, Ordering::SeqCst);
                let ok = match s.mode.load(Ordering::SeqCst) {
                    0 => true,
                    1 => false,
                    _ => n % 2 == 0,
                };
                if ok {
                    (StatusCode::OK, "42")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy")
                }
            }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), state))
}

/// The client's policy: 1 s per attempt, 3 s in all, 3 attempts with jittered backoff and a
/// 20 % budget, a breaker opening at 75 % failures over the last 20 attempts, 16 calls at
/// once.
pub fn policy() -> ResiliencePolicy {
    ResiliencePolicy::default()
        .timeout(Duration::from_secs(1))
        .deadline(Duration::from_secs(3))
        .retry(
            RetryConfig::default()
                .max_attempts(3)
                .backoff(ExponentialBackoff::new(
                    Duration::from_millis(5),
                    Duration::from_millis(50),
                    2.0,
                )),
        )
        .circuit_breaker(
            CircuitBreakerConfig::default()
                .failure_rate_threshold(75.0)
                .count_window(20)
                .minimum_calls(10)
                .wait_in_open(Duration::from_millis(500))
                .permitted_calls_in_half_open(3),
        )
        .bulkhead(BulkheadConfig {
            max_concurrent: 16,
            max_wait: Duration::from_millis(100),
        })
}

/// What one phase of the demo saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Phase {
    /// The phase's name.
    pub name: &'static str,
    /// Calls that succeeded.
    pub ok: usize,
    /// Calls that failed at the server (after retries).
    pub failed: usize,
    /// Calls refused at once by the open breaker.
    pub rejected: usize,
    /// Requests the server received during the phase.
    pub server_hits: usize,
    /// The breaker's state at the end.
    pub breaker: String,
}

/// Runs the demo: healthy, flaky (retries hide it), outage (the breaker opens and sheds
/// load), recovery (half-open probes close it). Calls `report` after each phase.
///
/// # Errors
/// When the server cannot start or the client cannot be built.
pub async fn run(mut report: impl FnMut(&Phase)) -> anyhow::Result<Vec<Phase>> {
    let (base, server) = start_server().await?;
    let client = HttpClient::new(
        &HttpClientConfig::default().upstream("inventory", UpstreamConfig::new(base, policy())),
    )?;
    let breaker = client
        .circuit_breaker("inventory", "/stock")
        .ok_or_else(|| anyhow::anyhow!("policy has a breaker"))?;
    let mut phases = Vec::new();
    for (name, mode, pause) in [
        ("healthy", Mode::Healthy, Duration::ZERO),
        ("flaky", Mode::Flaky, Duration::ZERO),
        ("outage", Mode::Outage, Duration::ZERO),
        ("recovery", Mode::Healthy, Duration::from_millis(600)),
    ] {
        server.set(mode);
        tokio::time::sleep(pause).await;
        let before = server.hits();
        let mut phase = Phase {
            name,
            ..Phase::default()
        };
        for _ in 0..40 {
            match client.get("inventory", "/stock").send().await {
                Ok(_) => phase.ok += 1,
                Err(e) if e.kind() == ErrorKind::CircuitOpen => phase.rejected += 1,
                Err(_) => phase.failed += 1,
            }
        }
        phase.server_hits = server.hits() - before;
        phase.breaker = match breaker.state() {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
            _ => "other",
        }
        .to_owned();
        report(&phase);
        phases.push(phase);
    }
    Ok(phases)
}
