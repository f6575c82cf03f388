//! W3C trace context (and Archon's correlation id) in and out of HTTP headers, gRPC metadata
//! and event headers.
//!
//! The trace context goes through OpenTelemetry's global propagator (installed as
//! [`TraceContextPropagator`](opentelemetry_sdk::propagation::TraceContextPropagator) by
//! [`otel::init`](crate::otel::init) and [`install_propagator`]); correlation, causation and
//! tenant ids go through [`archon_core::context::Metadata`]. Any `archon_core` carrier works:
//! [`http::HeaderMap`] (reqwest, axum), string maps (event headers), and tonic's
//! [`MetadataMap`](tonic::metadata::MetadataMap) through [`MetadataMapCarrier`].
//!
//! ```
//! use std::collections::HashMap;
//! use archon_metrics::propagation;
//!
//! propagation::install_propagator();
//! let mut headers: HashMap<String, String> = HashMap::new();
//! headers.insert(
//!     "traceparent".into(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
//! );
//! let cx = propagation::extract(&headers);
//! use opentelemetry::trace::TraceContextExt as _;
//! assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//!
//! let mut out: HashMap<String, String> = HashMap::new();
//! propagation::inject(&cx, &mut out);
//! assert_eq!(out["traceparent"], headers["traceparent"]);
//! ```

use archon_core::context::{Extractor, Injector, Metadata, TraceParent};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Installs [`TraceContextPropagator`](opentelemetry_sdk::propagation::TraceContextPropagator)
/// as OpenTelemetry's global propagator (the default one does nothing). Idempotent.
///
/// ```
/// archon_metrics::propagation::install_propagator();
/// ```
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
}

/// Adapts an `archon_core` carrier to OpenTelemetry's propagation traits.
struct Carrier<'a, C: ?Sized>(&'a mut C);
struct ReadCarrier<'a, C: ?Sized>(&'a C);

impl<C: Injector + ?Sized> opentelemetry::propagation::Injector for Carrier<'_, C> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

impl<C: Extractor + ?Sized> opentelemetry::propagation::Extractor for ReadCarrier<'_, C> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        // The W3C propagators look keys up by name; nothing enumerates them.
        Vec::new()
    }
}

/// Writes `cx`'s trace context into `carrier` with the global propagator.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// archon_metrics::propagation::inject(&opentelemetry::Context::new(), &mut headers);
/// assert!(headers.is_empty(), "no span, nothing to propagate");
/// ```
pub fn inject<C: Injector + ?Sized>(cx: &Context, carrier: &mut C) {
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut Carrier(carrier)));
}

/// Reads a trace context from `carrier` with the global propagator. An absent or invalid
/// `traceparent` gives a context without a span: whatever starts from it starts a new trace.
///
/// ```
/// use opentelemetry::trace::TraceContextExt as _;
/// let headers = std::collections::HashMap::from([("traceparent".to_owned(), "garbage".to_owned())]);
/// let cx = archon_metrics::propagation::extract(&headers);
/// assert!(!cx.span().span_context().is_valid());
/// ```
pub fn extract<C: Extractor + ?Sized>(carrier: &C) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&ReadCarrier(carrier)))
}

/// Writes the current span's trace context (or, without OpenTelemetry, the task's
/// [`Metadata::current`] trace parent) and correlation ids into `carrier`: what a producer
/// or client does before sending.
///
/// ```
/// use archon_metrics::propagation::{inject_current, MetadataMapCarrier};
///
/// // reqwest: build the headers, hand them to the request builder.
/// let mut headers = http::HeaderMap::new();
/// inject_current(&mut headers);
/// let request = reqwest::Client::new().get("http://orders.internal/").headers(headers);
///
/// // tonic: the request's metadata.
/// let mut call = tonic::Request::new(());
/// inject_current(&mut MetadataMapCarrier(call.metadata_mut()));
///
/// // Event headers: any string map.
/// let mut event_headers = std::collections::HashMap::<String, String>::new();
/// inject_current(&mut event_headers);
/// # drop(request);
/// ```
pub fn inject_current<C: Injector + Extractor + ?Sized>(carrier: &mut C) {
    inject_span(&tracing::Span::current(), carrier);
}

/// Writes `span`'s trace context and the correlation ids in scope into `carrier`. Ids already
/// present in the carrier are kept.
pub(crate) fn inject_span<C: Injector + Extractor + ?Sized>(span: &tracing::Span, carrier: &mut C) {
    let cx = if span.is_disabled() {
        Context::new()
    } else {
        span.context()
    };
    let metadata = context_metadata(&cx);
    if cx.span().span_context().is_valid() {
        inject(&cx, carrier);
    } else if let Some(tp) = metadata.as_ref().and_then(|m| m.traceparent) {
        let md = Metadata::default().with_traceparent(tp.child());
        md.inject(carrier);
    }
    if let Some(md) = metadata {
        let ids = md;
        let mut missing = Metadata::default();
        let present = Metadata::extract(&*carrier);
        if present.correlation_id.is_none() {
            missing.correlation_id = ids.correlation_id;
        }
        if present.causation_id.is_none() {
            missing.causation_id = ids.causation_id;
        }
        if present.tenant_id.is_none() {
            missing.tenant_id = ids.tenant_id;
        }
        missing.inject(carrier);
    }
}

/// Archon's [`Metadata`] stored in an OpenTelemetry context by the server layer and the
/// messaging helpers, so that calls made while handling a request carry its correlation id.
#[derive(Debug, Clone)]
pub(crate) struct ContextMetadata(pub(crate) Metadata);

impl ContextMetadata {
    /// The ids of `metadata` (correlation, causation, tenant), without its trace context: the
    /// OpenTelemetry context carries that.
    pub(crate) fn ids_of(metadata: &Metadata) -> Self {
        let mut ids = metadata.clone();
        ids.traceparent = None;
        ids.tracestate = None;
        Self(ids)
    }
}

/// The metadata in scope: the task's [`Metadata::current`], else the one stored in `cx`.
fn context_metadata(cx: &Context) -> Option<Metadata> {
    Metadata::current().or_else(|| cx.get::<ContextMetadata>().map(|m| m.0.clone()))
}

/// The OpenTelemetry span context of a W3C trace parent.
///
/// ```
/// use archon_core::context::TraceParent;
/// let tp = TraceParent::new_root();
/// let sc = archon_metrics::propagation::span_context_of(&tp);
/// assert_eq!(sc.trace_id().to_string(), tp.trace_id());
/// assert!(sc.is_remote());
/// ```
pub fn span_context_of(tp: &TraceParent) -> SpanContext {
    SpanContext::new(
        opentelemetry::trace::TraceId::from(tp.trace_id_u128()),
        opentelemetry::trace::SpanId::from(tp.span_id_u64()),
        TraceFlags::new(tp.flags()),
        true,
        TraceState::NONE,
    )
}

/// The W3C trace parent of an OpenTelemetry span context, `None` when it is not valid.
///
/// ```
/// use archon_core::context::TraceParent;
/// let tp = TraceParent::new_root();
/// let sc = archon_metrics::propagation::span_context_of(&tp);
/// assert_eq!(archon_metrics::propagation::traceparent_of(&sc), Some(tp));
/// ```
pub fn traceparent_of(sc: &SpanContext) -> Option<TraceParent> {
    if !sc.is_valid() {
        return None;
    }
    TraceParent::from_parts(
        u128::from_be_bytes(sc.trace_id().to_bytes()),
        u64::from_be_bytes(sc.span_id().to_bytes()),
        sc.trace_flags().to_u8(),
    )
}

/// tonic's [`MetadataMap`](tonic::metadata::MetadataMap) as an `archon_core` carrier (and so
/// for [`inject`], [`extract`] and [`Metadata`]).
///
/// ```
/// use archon_core::context::Metadata;
/// use archon_metrics::propagation::MetadataMapCarrier;
///
/// let mut request = tonic::Request::new(());
/// let md = Metadata::new_root();
/// md.inject(&mut MetadataMapCarrier(request.metadata_mut()));
/// let back = Metadata::extract(&MetadataMapCarrier(request.metadata_mut()));
/// assert_eq!(back.trace_id(), md.trace_id());
/// ```
#[derive(Debug)]
pub struct MetadataMapCarrier<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataMapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value.as_str());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                self.0.insert(key, value);
            }
            _ => tracing::debug!("context value is not valid gRPC metadata; not sent"),
        }
    }
}

impl Extractor for MetadataMapCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
}
