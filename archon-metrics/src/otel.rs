//! OpenTelemetry tracing: the SDK set up from `OTEL_*` variables, the `tracing` bridge, and a
//! clean shutdown that flushes spans.
//!
//! [`Tracing`] owns the SDK tracer provider. [`init`] is the one-call setup: OTLP export as the
//! standard variables say, the W3C propagator, and a global `tracing` subscriber that writes
//! Archon's log lines *and* feeds spans to OpenTelemetry:
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! let service = archon_core::service_info!();
//! let metrics = archon_metrics::install(&archon_metrics::MetricsConfig::new(&service))?;
//! let tracing = archon_metrics::otel::init(&service, &archon_core::config::LogConfig::default())?;
//! // ... serve `metrics.router()` and your routes behind `ObserveServerLayer` ...
//! tracing.shutdown()?; // flushes the spans still queued
//! # let _ = metrics; Ok(()) }
//! ```
//!
//! To build the subscriber yourself, compose the layers in one registry; the order does not
//! matter:
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use archon_core::{config::LogConfig, logging};
//!
//! let service = archon_core::ServiceInfo::new("orders", "1.0.0");
//! let tracing = archon_metrics::otel::Tracing::without_exporter(&service);
//! let subscriber = tracing_subscriber::registry()
//!     .with(logging::layer(&service, &LogConfig::default(), std::io::sink))
//!     .with(tracing.layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("work", trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
//!     archon_metrics::otel::record_ids(&span); // log lines inside now carry the OTel ids
//!     let _entered = span.enter();
//!     tracing::info!("inside");
//! });
//! ```
//!
//! ## Environment
//! Read by the SDK and the OTLP exporter: `OTEL_SERVICE_NAME` (else the [`ServiceInfo`] name),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `..._PROTOCOL` (`grpc` or
//! `http/protobuf`, the default), `..._HEADERS`, `..._TIMEOUT`. Read here:
//! `OTEL_TRACES_EXPORTER` = `otlp` (default) or `none` (spans get ids for logs and propagation
//! but are not exported). With the gRPC protocol, build inside a Tokio runtime.

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use archon_core::ServiceInfo;
use archon_core::config::LogConfig;

use crate::{Error, Result};

/// The instrumentation scope name of Archon's spans.
const TRACER_NAME: &str = "archon";

/// The OpenTelemetry tracer provider of this service. Dropping it (or calling
/// [`shutdown`](Self::shutdown)) flushes queued spans.
///
/// ```
/// let tracing = archon_metrics::otel::Tracing::without_exporter(&archon_core::ServiceInfo::new("svc", "1.0.0"));
/// tracing.shutdown()?;
/// # Ok::<(), archon_metrics::Error>(())
/// ```
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    shut_down: bool,
}

impl Tracing {
    /// The provider configured from the `OTEL_*` variables (see the [module docs](self)):
    /// OTLP over HTTP/protobuf or gRPC with a batch processor, unless
    /// `OTEL_TRACES_EXPORTER=none`. Also installs the W3C propagator.
    ///
    /// # Errors
    /// [`Error::Exporter`] when the exporter cannot be built (bad endpoint, gRPC outside a Tokio
    /// runtime), [`Error::Config`] for an unsupported `OTEL_TRACES_EXPORTER`.
    pub fn from_env(service: &ServiceInfo) -> Result<Self> {
        let choice = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
        match choice.trim() {
            "none" => Ok(Self::without_exporter(service)),
            "" | "otlp" => Self::otlp(service),
            other => Err(Error::Config {
                key: "OTEL_TRACES_EXPORTER",
                reason: format!("`{other}` is not supported; use `otlp` or `none`"),
            }),
        }
    }

    #[cfg(feature = "otlp")]
    fn otlp(service: &ServiceInfo) -> Result<Self> {
        let protocol = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .filter_map(|key| std::env::var(key).ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .find(|v| matches!(v.as_str(), "grpc" | "http/protobuf" | "http/json"));
        if protocol.as_deref() == Some("grpc") && tokio::runtime::Handle::try_current().is_err() {
            // tonic would panic building its channel: say so instead.
            return Err(Error::Exporter(
                "OTLP over gRPC needs a Tokio runtime: build the tracer inside one".into(),
            ));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map_err(|e| Error::Exporter(Box::new(e)))?;
        Ok(Self::with_exporter(service, exporter))
    }

    #[cfg(not(feature = "otlp"))]
    fn otlp(service: &ServiceInfo) -> Result<Self> {
        tracing::warn!(
            "archon-metrics was built without the `otlp` feature; spans are not exported"
        );
        Ok(Self::without_exporter(service))
    }

    /// A provider exporting to `exporter` through a batch processor (for tests: the SDK's
    /// `InMemorySpanExporter`, then [`force_flush`](Self::force_flush)). Installs the W3C
    /// propagator.
    pub fn with_exporter<E: SpanExporter + 'static>(service: &ServiceInfo, exporter: E) -> Self {
        Self::build(
            service,
            SdkTracerProvider::builder().with_batch_exporter(exporter),
        )
    }

    /// A provider that exports nothing: spans still get trace and span ids, for log lines and
    /// propagation. Installs the W3C propagator.
    pub fn without_exporter(service: &ServiceInfo) -> Self {
        Self::build(service, SdkTracerProvider::builder())
    }

    fn build(
        service: &ServiceInfo,
        builder: opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> Self {
        crate::propagation::install_propagator();
        let provider = builder.with_resource(resource(service)).build();
        Self {
            provider,
            shut_down: false,
        }
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans (honouring `otel.kind`,
    /// `otel.name`, `otel.status_code` fields) through this provider.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(TRACER_NAME))
            .with_tracked_inactivity(false)
            .with_threads(false)
    }

    /// The SDK provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Makes this provider OpenTelemetry's global one (for libraries that use
    /// `opentelemetry::global::tracer`).
    pub fn set_global(&self) {
        opentelemetry::global::set_tracer_provider(self.provider.clone());
    }

    /// Exports every finished span now.
    ///
    /// # Errors
    /// [`Error::Shutdown`] when the exporter fails.
    pub fn force_flush(&self) -> Result<()> {
        self.provider
            .force_flush()
            .map_err(|e| Error::Shutdown(Box::new(e)))
    }

    /// Flushes queued spans and stops the exporter.
    ///
    /// # Errors
    /// [`Error::Shutdown`] when flushing or stopping fails (spans may be lost).
    pub fn shutdown(mut self) -> Result<()> {
        self.shut_down = true;
        self.provider
            .shutdown()
            .map_err(|e| Error::Shutdown(Box::new(e)))
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if !self.shut_down
            && let Err(error) = self.provider.shutdown()
        {
            tracing::warn!(%error, "tracer shutdown failed; spans may be lost");
        }
    }
}

/// The resource: `service.name` (unless `OTEL_SERVICE_NAME` is set), `service.version`,
/// `service.instance.id`, `deployment.environment.name`, plus `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service: &ServiceInfo) -> Resource {
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("service.version", service.version.clone()),
        KeyValue::new("service.instance.id", service.instance_id.clone()),
        KeyValue::new("deployment.environment.name", service.environment.clone()),
    ]);
    let env_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_default();
    if env_name.trim().is_empty() {
        builder = builder.with_service_name(service.name.clone());
    }
    builder.build()
}

/// The one-call setup: [`Tracing::from_env`], made global, and a global `tracing` subscriber
/// with Archon's filter and log format ([`archon_core::logging`]) plus the OpenTelemetry layer.
/// Keep the returned [`Tracing`] alive and [`shutdown`](Tracing::shutdown) it on exit.
///
/// # Errors
/// As [`Tracing::from_env`]; [`Error::Config`] for an invalid log filter;
/// [`Error::AlreadyInstalled`] when a global subscriber is already set.
pub fn init(service: &ServiceInfo, log: &LogConfig) -> Result<Tracing> {
    let tracing = Tracing::from_env(service)?;
    let filter = archon_core::logging::filter(log).map_err(|e| Error::Config {
        key: "log.filter",
        reason: e.to_string(),
    })?;
    tracing_subscriber::registry()
        .with(filter)
        .with(archon_core::logging::layer(service, log, std::io::stdout))
        .with(tracing.layer())
        .try_init()
        .map_err(|_| Error::AlreadyInstalled {
            what: "tracing subscriber",
        })?;
    tracing.set_global();
    Ok(tracing)
}

/// Records the span's OpenTelemetry ids into its `trace_id` and `span_id` fields, so that
/// Archon's log lines inside it carry them. The span must declare both fields (as
/// `tracing::field::Empty`); Archon's own server, client and messaging spans do. Call it after
/// any `set_parent`: it starts the OpenTelemetry span.
///
/// ```
/// let span = tracing::info_span!("job", trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
/// archon_metrics::otel::record_ids(&span); // no OpenTelemetry layer: nothing recorded
/// ```
pub fn record_ids(span: &tracing::Span) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The current span's W3C trace context as Archon [`Metadata`](archon_core::context::Metadata)
/// trace parent, if there is a valid OpenTelemetry span.
///
/// ```
/// assert!(archon_metrics::otel::current_traceparent().is_none());
/// ```
pub fn current_traceparent() -> Option<archon_core::context::TraceParent> {
    let cx = tracing::Span::current().context();
    crate::propagation::traceparent_of(cx.span().span_context())
}
