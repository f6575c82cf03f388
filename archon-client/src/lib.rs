//! # archon-client
//!
//! **Status: planned.** This crate will hold resilient clients built from tower layers, each
//! usable alone on any `tower::Service`:
//!
//! - a circuit breaker (count- and time-based windows, slow calls, half-open probes, keyed
//!   breakers), with Resilience4j semantics;
//! - retry with exponential backoff, full jitter and a retry budget, honouring `Retry-After` and
//!   `grpc-retry-pushback-ms`;
//! - bulkhead, timeout, rate limit, fallback and hedging;
//! - a builder that assembles them for a reqwest client, a tonic channel or any tower service.
//!
//! Nothing is exported yet.
