//! # archon-client
//!
//! Resilient service-to-service calls from composable tower layers. Each layer lives in its own
//! module and works alone on any `tower::Service`:
//!
//! | module | what it adds |
//! |---|---|
//! | [`circuit_breaker`] | Resilience4j-style breaker: ring or time window, slow calls, half-open probes, generations, keyed registry |
//! | [`retry`] | a `tower::retry::Policy`: full-jitter backoff, attempt/time limits, retry budget, `Retry-After`, idempotency |
//! | [`bulkhead`] | at most N calls in flight, bounded wait |
//! | [`timeout`] | overall deadline across retries, `grpc-timeout` propagation (per-attempt: tower's `Timeout`) |
//! | [`rate_limit`] | client-side GCRA rate limit (governor), wait or reject |
//! | [`fallback`] | selected errors become a fallback response |
//!
//! ## Feature flags
//! - `http` (default): the reqwest client with named upstreams.
//! - `grpc` (default): the tonic channel wrapper.

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
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use self::builder::{InvalidPolicy, ResilienceLayer, ResiliencePolicy};
pub use self::classify::{Classifier, DefaultClassifier, ErrorIsFailure, Outcome};
pub use self::error::{Error, ErrorKind, Result};
