//! Request context that crosses service boundaries: correlation, causation, tenant and W3C trace
//! context.
//!
//! [`Metadata`] is written into and read from any carrier with the same keys ([`keys`]), so HTTP
//! headers, gRPC metadata and event headers carry it the same way. Incoming values are checked
//! before they are trusted: a malformed `traceparent` or an over-long id is dropped with a debug
//! log, and the service carries on as if it had not been sent.
//!
//! ```
//! use std::collections::HashMap;
//! use archon_core::context::{Metadata, TraceParent};
//!
//! // Caller side: a fresh trace and correlation id, written into headers.
//! let outgoing = Metadata::new_root().with_tenant_id("acme");
//! let mut headers = HashMap::new();
//! outgoing.inject(&mut headers);
//!
//! // Callee side: read back.
//! let incoming = Metadata::extract(&headers);
//! assert_eq!(incoming.tenant_id.as_deref(), Some("acme"));
//! assert_eq!(incoming.trace_id(), outgoing.trace_id());
//!
//! // A forged header is ignored, never trusted.
//! let forged = HashMap::from([("traceparent".to_owned(), "00-zz-01".to_owned())]);
//! assert!(Metadata::extract(&forged).traceparent.is_none());
//! ```

mod carrier;
mod traceparent;

pub use self::carrier::{Extractor, Injector};
pub use self::traceparent::TraceParent;

use std::future::Future;

/// The header (and metadata, and event header) names context travels under.
pub mod keys {
    /// W3C Trace Context parent.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C Trace Context vendor state.
    pub const TRACESTATE: &str = "tracestate";
    /// The id shared by everything done for one business request.
    pub const CORRELATION_ID: &str = "x-correlation-id";
    /// The id of the message or request that directly caused this one.
    pub const CAUSATION_ID: &str = "x-causation-id";
    /// The tenant the work is done for.
    pub const TENANT_ID: &str = "x-tenant-id";
}

/// Longest id accepted from a carrier; longer ones are dropped.
const MAX_ID_LEN: usize = 256;
/// Longest `tracestate` accepted (the W3C limit is 32 members; 512 bytes is the usual cut).
const MAX_TRACESTATE_LEN: usize = 512;

tokio::task_local! {
    static CURRENT: Metadata;
}

/// Correlation, causation, tenant and trace context of the work in hand.
///
/// ```
/// use archon_core::context::Metadata;
/// let md = Metadata::default().with_correlation_id("order-42");
/// assert_eq!(md.correlation_id.as_deref(), Some("order-42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// Shared by everything done for one business request.
    pub correlation_id: Option<String>,
    /// The id of the message or request that caused this one.
    pub causation_id: Option<String>,
    /// The tenant the work is done for.
    pub tenant_id: Option<String>,
    /// W3C trace parent.
    pub traceparent: Option<TraceParent>,
    /// W3C trace state, passed on unchanged.
    pub tracestate: Option<String>,
}

impl Metadata {
    /// Context for work that starts here: a new trace and a new correlation id (UUIDv7).
    pub fn new_root() -> Self {
        Self {
            correlation_id: Some(uuid::Uuid::now_v7().to_string()),
            traceparent: Some(TraceParent::new_root()),
            ..Self::default()
        }
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the tenant id.
    #[must_use]
    pub fn with_tenant_id(mut self, id: impl Into<String>) -> Self {
        self.tenant_id = Some(id.into());
        self
    }

    /// Sets the trace parent.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: TraceParent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// Sets the W3C trace state (passed on unchanged).
    #[must_use]
    pub fn with_tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// The trace id, when there is a trace.
    pub fn trace_id(&self) -> Option<String> {
        self.traceparent.map(|tp| tp.trace_id())
    }

    /// The span id, when there is a trace.
    pub fn span_id(&self) -> Option<String> {
        self.traceparent.map(|tp| tp.span_id())
    }

    /// Fills what is missing so the work can be followed: a correlation id and a trace.
    #[must_use]
    pub fn or_new_root(mut self) -> Self {
        if self.correlation_id.is_none() {
            self.correlation_id = Some(uuid::Uuid::now_v7().to_string());
        }
        if self.traceparent.is_none() {
            self.traceparent = Some(TraceParent::new_root());
            self.tracestate = None;
        }
        self
    }

    /// Context for work caused by this one: same correlation, tenant and trace, a new span id,
    /// and `causation_id` set to `cause` (the id of the message or request being handled).
    #[must_use]
    pub fn caused_by(&self, cause: impl Into<String>) -> Self {
        Self {
            causation_id: Some(cause.into()),
            traceparent: self.traceparent.map(|tp| tp.child()),
            ..self.clone()
        }
    }

    /// Writes the context into a carrier under the names in [`keys`]. Absent fields are not
    /// written.
    pub fn inject<C: Injector + ?Sized>(&self, carrier: &mut C) {
        if let Some(tp) = &self.traceparent {
            carrier.set(keys::TRACEPARENT, tp.to_string());
            if let Some(state) = &self.tracestate {
                carrier.set(keys::TRACESTATE, state.clone());
            }
        }
        for (key, value) in [
            (keys::CORRELATION_ID, &self.correlation_id),
            (keys::CAUSATION_ID, &self.causation_id),
            (keys::TENANT_ID, &self.tenant_id),
        ] {
            if let Some(value) = value {
                carrier.set(key, value.clone());
            }
        }
    }

    /// Reads the context from a carrier. Invalid values are dropped (with a debug log), never
    /// trusted; `tracestate` is kept only with a valid `traceparent`.
    pub fn extract<C: Extractor + ?Sized>(carrier: &C) -> Self {
        let traceparent = carrier
            .get(keys::TRACEPARENT)
            .and_then(|raw| match raw.parse() {
                Ok(tp) => Some(tp),
                Err(error) => {
                    tracing::debug!(%error, "ignoring invalid incoming traceparent");
                    None
                }
            });
        let tracestate = traceparent
            .and_then(|_| carrier.get(keys::TRACESTATE))
            .and_then(|raw| checked(keys::TRACESTATE, raw, MAX_TRACESTATE_LEN));
        Self {
            correlation_id: carrier
                .get(keys::CORRELATION_ID)
                .and_then(|raw| checked(keys::CORRELATION_ID, raw, MAX_ID_LEN)),
            causation_id: carrier
                .get(keys::CAUSATION_ID)
                .and_then(|raw| checked(keys::CAUSATION_ID, raw, MAX_ID_LEN)),
            tenant_id: carrier
                .get(keys::TENANT_ID)
                .and_then(|raw| checked(keys::TENANT_ID, raw, MAX_ID_LEN)),
            traceparent,
            tracestate,
        }
    }

    /// A `tracing` span carrying `trace_id`, `span_id`, `correlation_id` and `tenant_id`, so that
    /// every log line inside it shows them (see [`logging`](crate::logging)).
    ///
    /// ```
    /// let md = archon_core::context::Metadata::new_root();
    /// let _guard = md.span().entered();
    /// tracing::info!("this line carries the trace and correlation ids");
    /// ```
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "context",
            trace_id = self.trace_id(),
            span_id = self.span_id(),
            correlation_id = self.correlation_id.as_deref(),
            tenant_id = self.tenant_id.as_deref(),
        )
    }

    /// Runs `future` with this as the [`current`](Self::current) context of the task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use archon_core::context::Metadata;
    /// let md = Metadata::default().with_correlation_id("c-1");
    /// let seen = md.scope(async { Metadata::current() }).await;
    /// assert_eq!(seen.and_then(|m| m.correlation_id).as_deref(), Some("c-1"));
    /// assert!(Metadata::current().is_none());
    /// # }
    /// ```
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// The context set by [`scope`](Self::scope) for the running task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

/// Keeps a carrier value only if it is short and printable ASCII.
fn checked(key: &str, raw: &str, max: usize) -> Option<String> {
    let raw = raw.trim();
    let ok = !raw.is_empty()
        && raw.len() <= max
        && raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Some(raw.to_owned())
    } else {
        tracing::debug!(key, "ignoring invalid incoming context value");
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn inject_then_extract_round_trips_through_http_headers() {
        let md = Metadata::new_root()
            .with_causation_id("msg-1")
            .with_tenant_id("acme");
        let md = Metadata {
            tracestate: Some("congo=t61rcWkgMzE".into()),
            ..md
        };
        let mut headers = http::HeaderMap::new();
        md.inject(&mut headers);
        assert_eq!(Metadata::extract(&headers), md);
    }

    #[test]
    fn drops_invalid_values() {
        let carrier = HashMap::from([
            (
                "TraceParent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_owned(),
            ),
            ("tracestate".to_owned(), "a=b".to_owned()),
            ("x-correlation-id".to_owned(), "x".repeat(1000)),
            ("x-tenant-id".to_owned(), "bad\nvalue".to_owned()),
            ("x-causation-id".to_owned(), "ok-1".to_owned()),
        ]);
        let md = Metadata::extract(&carrier);
        assert_eq!(md.traceparent, None);
        assert_eq!(
            md.tracestate, None,
            "tracestate without a valid traceparent is dropped"
        );
        assert_eq!(md.correlation_id, None);
        assert_eq!(md.tenant_id, None);
        assert_eq!(md.causation_id.as_deref(), Some("ok-1"));
    }

    #[test]
    fn extraction_is_case_insensitive_for_string_maps() {
        let tp = TraceParent::new_root();
        let carrier = HashMap::from([("TRACEPARENT".to_owned(), tp.to_string())]);
        assert_eq!(Metadata::extract(&carrier).traceparent, Some(tp));
    }

    #[test]
    fn caused_by_keeps_the_trace_and_correlation() {
        let parent = Metadata::new_root();
        let child = parent.caused_by("evt-9");
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert_eq!(child.correlation_id, parent.correlation_id);
        assert_eq!(child.causation_id.as_deref(), Some("evt-9"));
    }
}
