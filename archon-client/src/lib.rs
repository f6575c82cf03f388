//! # archon-client
//!
//! Resilient service-to-service calls from composable tower layers. Each layer lives in its own
//! module and works alone on any `tower::Service`; [`ResiliencePolicy`] assembles them from
//! configuration in a documented order ([`ResilienceLayer`]); [`http::HttpClient`] and
//! [`grpc::channel`] put the stack in front of reqwest and tonic.
//!
//! | module | what it adds |
//! |---|---|
//! | [`circuit_breaker`] | Resilience4j-style breaker: true ring or per-second time window (O(1), atomics, no allocation), slow calls, exactly N half-open probes, generations, forced/disabled/metrics-only, keyed registry |
//! | [`retry`] | a `tower::retry::Policy`: full-jitter backoff, attempt/time limits, an exact retry budget, `Retry-After` and `grpc-retry-pushback-ms`, idempotency rules |
//! | [`hedge`] | a second attempt for slow idempotent calls after a fixed delay or the observed p-th percentile latency, drawing on the retry budget |
//! | [`bulkhead`] | at most N calls in flight, bounded wait, `BulkheadFull` |
//! | [`rate_limit`] | client-side GCRA rate limit (governor), wait or reject; keyed by host, path or a header (tenant) with a bounded key count |
//! | [`timeout`] | overall deadline across retries and its `grpc-timeout` propagation (per attempt: tower's `Timeout`) |
//! | [`fallback`] | selected errors become a fallback response |
//! | [`balance`] | power-of-two-choices over a static endpoint list or DNS re-resolution, outlier ejection by per-endpoint breakers; from configuration for HTTP upstreams and gRPC channels |
//! | `http` | reqwest client with named upstreams, per-route policies, JSON helpers, trace/correlation headers |
//! | `grpc` | the stack around a tonic `Channel`, so generated clients work unchanged |
//!
//! High-level calls fail with one opaque [`Error`] ([`Error::kind`], [`Error::is_retryable`]);
//! each layer alone fails with a small marker type found by `downcast_ref`, as in tower.
//!
//! ## Feature flags
//! - `http` (default): the reqwest client (`http` module).
//! - `grpc` (default): the tonic channel wrapper (`grpc` module).
//! - `rustls`: `https` upstreams, through reqwest's rustls TLS (implies `http`) and, with
//!   `grpc`, tonic's TLS (aws-lc-rs crypto, the platform's trust roots, plus a configured CA
//!   file per HTTP upstream or gRPC config, `tls.ca_file`). Without it an `https` gRPC
//!   endpoint or a `tls.ca_file` is a configuration error and reqwest has no TLS.
//!
//! ## Example
//! ```
//! use std::time::Duration;
//! use archon_client::{ResiliencePolicy, circuit_breaker::CircuitBreakerConfig, retry::RetryConfig};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let policy: ResiliencePolicy = toml::from_str(r#"
//!     timeout = "1s"
//!     deadline = "3s"
//!     [retry]
//!     max_attempts = 3
//!     [circuit_breaker]
//!     window_size = 20
//!     minimum_calls = 10
//! "#).unwrap();
//! let mut svc = policy.build("inventory").unwrap().wrap(tower::service_fn(
//!     |_req: http::Request<()>| async { Ok::<_, std::io::Error>(http::Response::new(())) },
//! ));
//! let resp = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! # }
//! ```

pub mod balance;
mod builder;
pub mod bulkhead;
pub mod circuit_breaker;
mod classify;
mod error;
pub mod fallback;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod hedge;
#[cfg(feature = "http")]
pub mod http;
mod metric_names;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use self::builder::{InvalidPolicy, ResilienceLayer, ResiliencePolicy};
pub use self::classify::{Classifier, DefaultClassifier, ErrorIsFailure, Outcome};
pub use self::error::{Error, ErrorKind, Result};
