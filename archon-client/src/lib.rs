//! # archon-client
//!
//! Resilient service-to-service calls from composable tower layers. Each layer lives in its own
//! module and works alone on any `tower::Service`:
//!
//! | module | what it adds |
//! |---|---|
//! | [`circuit_breaker`] | Resilience4j-style breaker: ring or time window, slow calls, half-open probes, generations, keyed registry |
//!
//! ## Feature flags
//! - `http` (default): the reqwest client with named upstreams.
//! - `grpc` (default): the tonic channel wrapper.

pub mod circuit_breaker;
mod classify;

pub use self::classify::{Classifier, DefaultClassifier, ErrorIsFailure, Outcome};
