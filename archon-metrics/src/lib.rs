//! # archon-metrics
//!
//! **Status: planned.** This crate will hold Archon's observability:
//!
//! - a Prometheus recorder and `/metrics` route, with OpenTelemetry semantic-convention names and
//!   second-based histogram buckets;
//! - RED (rate, errors, duration) layers for axum, tonic and archon-client;
//! - OpenTelemetry tracing (OTLP) with W3C propagation through HTTP, gRPC and events, so one trace
//!   spans them all;
//! - a Grafana dashboard.
//!
//! Nothing is exported yet.
