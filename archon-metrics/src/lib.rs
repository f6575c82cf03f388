//! # archon-metrics
//!
//! Archon's observability: Prometheus metrics and OpenTelemetry tracing with the OpenTelemetry
//! semantic-convention names, so that every Archon crate and service reports the same way and
//! one trace follows a request across HTTP, gRPC and events.
//!
//! | item | what it gives you |
//! |---|---|
//! | [`install`], [`MetricsConfig`], [`MetricsHandle::router`] | the Prometheus recorder for the [`metrics`] facade (explicit second buckets, service labels) and a `GET /metrics` route; no listener of its own |
//! | [`names`] | every metric name and attribute key, with its Prometheus form |
//! | [`ObserveServerLayer`] | RED metrics and server spans for axum and tonic, continuing the caller's trace |
//! | [`ObserveClientLayer`] | RED metrics, client spans and trace-context injection for any `tower::Service<http::Request<B>>` |
//! | [`otel`] | the OpenTelemetry SDK from `OTEL_*` variables (OTLP gRPC or HTTP), composed with Archon's logs; clean shutdown |
//! | [`propagation`] | W3C trace context and correlation id through `http::HeaderMap`, tonic metadata and event headers |
//! | [`messaging`] | messaging counters, durations and `send`/`process` spans for event buses |
//! | [`policy`] | handle sets for Archon's breakers, bulkheads, retries, sagas and outbox |
//!
//! ## Two-line setup
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! # let service = archon_core::service_info!();
//! # let log = archon_core::config::LogConfig::default();
//! let metrics = archon_metrics::install(&archon_metrics::MetricsConfig::new(&service))?;
//! let tracing = archon_metrics::otel::init(&service, &log)?;
//!
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders/{id}", axum::routing::get(|| async { "order" }))
//!     .layer(archon_metrics::ObserveServerLayer::new())
//!     .merge(metrics.router());
//! # let _ = app;
//! // ... serve; on exit:
//! tracing.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//! - `otlp` (default): the OTLP span exporter (gRPC via tonic, HTTP/protobuf via reqwest).
//!   Without it spans still get ids for logs and propagation, and any
//!   [`SpanExporter`](opentelemetry_sdk::trace::SpanExporter) can be plugged in with
//!   [`otel::Tracing::with_exporter`].

mod client;
mod error;
pub mod messaging;
pub mod names;
mod observe;
pub mod otel;
pub mod policy;
mod prometheus;
pub mod propagation;
mod server;

pub use self::client::{ObserveClient, ObserveClientLayer};
pub use self::error::{Error, Result};
pub use self::observe::ObservedBody;
pub use self::prometheus::{
    DURATION_BUCKETS, MetricsConfig, MetricsHandle, PROMETHEUS_CONTENT_TYPE, build_recorder,
    install,
};
pub use self::server::future::ResponseFuture;
pub use self::server::{ObserveServer, ObserveServerLayer};
