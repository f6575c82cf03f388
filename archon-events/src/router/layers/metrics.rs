//! Metrics with the OpenTelemetry messaging names, through the `metrics` facade.

use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;
use metrics::Label;
use tower_service::Service;

use crate::bus::{EventBus, Features, Publisher, SubscribeOptions, Subscriber, Subscription};
use crate::router::{EventContext, HandlerError};
use crate::{Envelope, Result};

/// Metric and attribute names (OpenTelemetry messaging semantic conventions).
pub mod names {
    /// Counter: events handed to a handler.
    pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
    /// Counter: events published.
    pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
    /// Histogram (seconds): handler duration.
    pub const PROCESS_DURATION: &str = "messaging.process.duration";
    /// Histogram (seconds): publish duration.
    pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
    /// Attribute: the backend.
    pub const SYSTEM: &str = "messaging.system";
    /// Attribute: the topic.
    pub const DESTINATION: &str = "messaging.destination.name";
    /// Attribute: the consumer group.
    pub const GROUP: &str = "messaging.consumer.group.name";
    /// Attribute: `send`, `process`, ...
    pub const OPERATION: &str = "messaging.operation.name";
    /// Attribute: the failure kind, absent on success.
    pub const ERROR_TYPE: &str = "error.type";
}

/// Records, per handler call, `messaging.client.consumed.messages` (+1) and
/// `messaging.process.duration` (seconds, with `error.type` on failure), with the
/// `messaging.system`, `messaging.destination.name` and `messaging.consumer.group.name`
/// attributes. Install a recorder (archon-metrics) to export them; set the histogram buckets
/// from REFERENCE.md there.
///
/// ```
/// let layer = archon_events::router::MetricsLayer::new();
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer {
    _private: (),
}

impl MetricsLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
}

impl<S> Metrics<S> {
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

impl<S> Service<EventContext> for Metrics<S>
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
        let labels = vec![
            Label::new(names::SYSTEM, ctx.system()),
            Label::new(names::DESTINATION, ctx.shared_topic()),
            Label::new(names::GROUP, ctx.shared_group()),
        ];
        metrics::counter!(names::CONSUMED_MESSAGES, labels.iter()).increment(1);
        let start = Instant::now();
        let fut = self.inner.call(ctx);
        Box::pin(async move {
            let result = fut.await;
            let elapsed = start.elapsed().as_secs_f64();
            let mut labels = labels;
            if let Err(e) = &result {
                labels.push(Label::new(names::ERROR_TYPE, e.kind().as_str()));
            }
            metrics::histogram!(names::PROCESS_DURATION, labels).record(elapsed);
            result
        })
    }
}

/// A publisher (or whole bus) that counts `messaging.client.sent.messages` and records
/// `messaging.client.operation.duration` for each publish, with `messaging.system`,
/// `messaging.destination.name` and `messaging.operation.name = send`.
///
/// ```
/// use std::sync::Arc;
/// use archon_events::{EventBus, MemoryBus};
/// use archon_events::router::MeteredPublisher;
/// let bus: Arc<dyn EventBus> = Arc::new(MeteredPublisher::new(MemoryBus::new()));
/// assert_eq!(bus.system(), "memory");
/// ```
#[derive(Debug, Clone)]
pub struct MeteredPublisher<P> {
    inner: P,
    system: &'static str,
}

impl<P: EventBus> MeteredPublisher<P> {
    /// Wraps a bus (its `system()` names the metrics).
    pub fn new(inner: P) -> Self {
        let system = inner.system();
        Self { inner, system }
    }
}

impl<P> MeteredPublisher<P> {
    /// Wraps any publisher, with `system` as `messaging.system`.
    pub fn with_system(inner: P, system: &'static str) -> Self {
        Self { inner, system }
    }
    /// The wrapped publisher.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
    /// Unwraps the publisher.
    pub fn into_inner(self) -> P {
        self.inner
    }

    fn record(&self, topic: &str, n: usize, start: Instant, ok: bool) {
        let labels = [
            (names::SYSTEM, self.system.to_owned()),
            (names::DESTINATION, topic.to_owned()),
            (names::OPERATION, "send".to_owned()),
        ];
        if ok {
            metrics::counter!(names::SENT_MESSAGES, &labels).increment(n as u64);
            metrics::histogram!(names::OPERATION_DURATION, &labels)
                .record(start.elapsed().as_secs_f64());
        } else {
            let [a, b, c] = labels;
            let labels = [a, b, c, (names::ERROR_TYPE, "publish".to_owned())];
            metrics::histogram!(names::OPERATION_DURATION, &labels)
                .record(start.elapsed().as_secs_f64());
        }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for MeteredPublisher<P> {
    async fn publish(&self, topic: &str, event: Envelope) -> Result<()> {
        let start = Instant::now();
        let result = self.inner.publish(topic, event).await;
        self.record(topic, 1, start, result.is_ok());
        result
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Envelope>) -> Result<()> {
        let start = Instant::now();
        let n = events.len();
        let result = self.inner.publish_batch(topic, events).await;
        self.record(topic, n, start, result.is_ok());
        result
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl<P: Subscriber> Subscriber for MeteredPublisher<P> {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        self.inner.subscribe(topic, options).await
    }
}

impl<P: EventBus> EventBus for MeteredPublisher<P> {
    fn features(&self) -> Features {
        self.inner.features()
    }
    fn system(&self) -> &'static str {
        self.system
    }
}
