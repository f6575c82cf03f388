//! A tracing span per event that continues the producer's trace.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower_service::Service;
use tracing::Instrument as _;

use crate::router::{EventContext, HandlerError};

/// Runs each handler call inside a `process <topic>` span carrying the OpenTelemetry messaging
/// attributes and the producer's trace (`trace_id`, `parent_span_id`; `span_id` is a new child
/// span), and makes [`EventContext::follow_up_metadata`] the task's current
/// [`Metadata`](archon_core::context::Metadata), so events published by the handler with
/// [`Envelope::event`](crate::Envelope::event) continue the same trace.
///
/// ```
/// let layer = archon_events::router::TracingLayer::new();
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLayer {
    _private: (),
}

impl TracingLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower_layer::Layer<S> for TracingLayer {
    type Service = Tracing<S>;
    fn layer(&self, inner: S) -> Tracing<S> {
        Tracing { inner }
    }
}

/// The service made by [`TracingLayer`].
#[derive(Debug, Clone)]
pub struct Tracing<S> {
    inner: S,
}

impl<S> Tracing<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<EventContext> for Tracing<S>
where
    S: Service<EventContext, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ctx: EventContext) -> Self::Future {
        let follow_up = ctx.follow_up_metadata();
        let producer = ctx.metadata();
        let span = tracing::info_span!(
            "process",
            otel.name = %format_args!("process {}", ctx.topic()),
            otel.kind = "consumer",
            messaging.system = ctx.system(),
            messaging.operation.name = "process",
            messaging.operation.type = "process",
            messaging.destination.name = ctx.topic(),
            messaging.consumer.group.name = ctx.group(),
            messaging.message.id = ctx.envelope().id(),
            cloudevents.event_type = ctx.envelope().event_type(),
            handler = ctx.handler_name(),
            attempt = ctx.attempt(),
            trace_id = follow_up.trace_id(),
            span_id = follow_up.span_id(),
            parent_span_id = producer.span_id(),
            correlation_id = follow_up.correlation_id.as_deref(),
            tenant_id = follow_up.tenant_id.as_deref(),
            error.type = tracing::field::Empty,
        );
        let fut = self.inner.call(ctx);
        let record = span.clone();
        Box::pin(
            async move {
                let result = follow_up.scope(fut).await;
                if let Err(e) = &result {
                    record.record("error.type", e.kind().as_str());
                }
                result
            }
            .instrument(span),
        )
    }
}
