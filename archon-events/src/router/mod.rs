//! The router: typed handlers per topic and consumer group, a middleware stack, settlement
//! policy (retry, delayed redelivery, dead-letter with reasons), per-key ordered concurrency,
//! batch handlers and graceful shutdown.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use archon_events::router::{EventContext, HandlerError, Route, Router, TimeoutLayer, TracingLayer};
//! use archon_events::{Envelope, Event, EventBus, JsonCodec, MemoryBus, Publisher};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderCreated { id: u64 }
//! impl Event for OrderCreated { const TYPE: &'static str = "com.example.order.created.v1"; }
//!
//! async fn bill(ctx: EventContext, order: OrderCreated) -> Result<(), HandlerError> {
//!     tracing::info!(order = order.id, attempt = ctx.attempt(), "billing");
//!     Ok(())
//! }
//!
//! let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
//! let router = Router::new(bus.clone())
//!     .layer(TracingLayer::new())
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .route(Route::new("orders", "billing").concurrency(4), bill)
//!     .start()
//!     .await?;
//! bus.publish("orders", Envelope::event("/shop", &OrderCreated { id: 1 }, &JsonCodec)?.build()?).await?;
//! let report = router.shutdown().await;
//! # let _ = report;
//! # Ok(()) }
//! ```
//!
//! # What happens to a handled event
//!
//! | handler result | settlement |
//! |---|---|
//! | `Ok(())` | `ack` |
//! | [`Permanent`](HandlerErrorKind::Permanent) or [`Decode`](HandlerErrorKind::Decode) (bad payload, unknown type) | `dead_letter` at once |
//! | transient, timeout or panic, delivery attempt < `max_deliveries` | `nack(delay)`: redelivered after the route's backoff (or the error's `retry_after`) |
//! | transient, timeout or panic, attempt = `max_deliveries` | `dead_letter` |
//!
//! Dead-lettered events carry the reason headers of
//! [`crate::dead_letter_headers`]: error text, attempts, original topic,
//! group, handler name, first and last failure time. A panic is logged at error level and the
//! router goes on.

mod backoff;
mod context;
mod error;
mod handler;
mod layers;

pub use self::backoff::Backoff;
pub use self::context::EventContext;
pub use self::error::{HandlerError, HandlerErrorKind};
pub use self::handler::HandlerService;
pub use self::layers::{
    Dedupe, DedupeLayer, DedupeStore, Elapsed, MemoryDedupeStore, MeteredPublisher, Metrics,
    MetricsLayer, Retry, RetryLayer, Timeout, TimeoutLayer, Tracing, TracingLayer, metric_names,
};

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_service::Service as _;

use self::handler::{TypedHandler, panic_message};
use crate::bus::{DeadLetter, Delivery, EventBus, StartPosition, SubscribeOptions, Subscription};
use crate::{Codec, EnvelopeEventExt as _, Event, JsonCodec, Result, dead_letter_headers};

/// Queue length in front of each lane.
const LANE_QUEUE: usize = 16;

/// Where a handler reads from and how its failures are settled.
///
/// ```
/// use std::time::Duration;
/// use archon_events::router::{Backoff, Route};
/// let route = Route::new("orders", "billing")
///     .name("bill-order")
///     .concurrency(8)
///     .max_deliveries(3)
///     .redelivery(Backoff::fixed(Duration::from_secs(5)));
/// assert_eq!(route.handler_name(), "bill-order");
/// ```
#[derive(Debug, Clone)]
pub struct Route {
    topic: String,
    group: String,
    name: Option<String>,
    concurrency: usize,
    prefetch: Option<usize>,
    max_deliveries: u32,
    redelivery: Backoff,
    dead_letter_topic: Option<String>,
    start: StartPosition,
}

impl Route {
    /// Handle `topic` in consumer group `group`. Defaults: concurrency 1, 5 deliveries before
    /// dead-lettering, redelivery backoff 1 s doubling to 60 s with randomization 0.5.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            name: None,
            concurrency: 1,
            prefetch: None,
            max_deliveries: 5,
            redelivery: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)),
            dead_letter_topic: None,
            start: StartPosition::Latest,
        }
    }
    /// Names the handler (logs, metrics, dead-letter headers); default `<topic>/<group>`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Number of lanes: events are spread over them by partition key (by id without one), each
    /// lane handles its events one at a time in order, so order and ack order hold per key.
    #[must_use]
    pub fn concurrency(mut self, lanes: usize) -> Self {
        self.concurrency = lanes.max(1);
        self
    }
    /// Unsettled deliveries held (default: the larger of 64 and 2 x concurrency).
    #[must_use]
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }
    /// Deliveries before a failing event is dead-lettered (at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }
    /// Delay before redelivery after a failed delivery.
    #[must_use]
    pub fn redelivery(mut self, backoff: Backoff) -> Self {
        self.redelivery = backoff;
        self
    }
    /// Dead-letter topic (default `<topic>.dlq`).
    #[must_use]
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }
    /// Start position of a new group.
    #[must_use]
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }
    /// The handler name.
    pub fn handler_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.topic, self.group))
    }

    fn options(&self, min_prefetch: usize) -> SubscribeOptions {
        let prefetch = self
            .prefetch
            .unwrap_or_else(|| 64.max(self.concurrency * 2))
            .max(min_prefetch);
        let mut options = SubscribeOptions::group(self.group.clone())
            .with_start(self.start)
            .with_prefetch(prefetch)
            .with_concurrency(self.concurrency);
        options.dead_letter_topic = self.dead_letter_topic.clone();
        options
    }
}

/// How a batch handler collects events: up to `max_size`, waiting at most `max_wait` after the
/// first one.
///
/// ```
/// use std::time::Duration;
/// let options = archon_events::router::BatchOptions::new(100, Duration::from_millis(50));
/// # drop(options);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    max_size: usize,
    max_wait: Duration,
}

impl BatchOptions {
    /// Batches of at most `max_size` (at least 1) collected for at most `max_wait`.
    pub fn new(max_size: usize, max_wait: Duration) -> Self {
        Self {
            max_size: max_size.max(1),
            max_wait,
        }
    }
}

type LayerFn = Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;
type BatchFn = Arc<
    dyn Fn(Vec<EventContext>) -> BoxFuture<'static, Vec<Result<(), HandlerError>>> + Send + Sync,
>;

enum Kind {
    Single(HandlerService),
    Batch(BatchFn, BatchOptions),
}

struct Entry {
    route: Route,
    kind: Kind,
}

/// Registers handlers, then runs them. See the [module docs](self).
pub struct Router {
    bus: Arc<dyn EventBus>,
    entries: Vec<Entry>,
    layers: Vec<LayerFn>,
    shutdown_timeout: Duration,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("bus", &self.bus)
            .field(
                "routes",
                &self.entries.iter().map(|e| &e.route).collect::<Vec<_>>(),
            )
            .field("layers", &self.layers.len())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

impl Router {
    /// A router over `bus` with no routes; shutdown waits 30 s for in-flight handlers.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let router = archon_events::router::Router::new(Arc::new(archon_events::MemoryBus::new()));
    /// # drop(router);
    /// ```
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            bus,
            entries: Vec::new(),
            layers: Vec::new(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// How long [`RunningRouter::shutdown`] waits for in-flight handlers before nacking them.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds a middleware layer to every single-event route (batch routes are not wrapped). The
    /// first layer added is the outermost.
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<HandlerService> + Send + Sync + 'static,
        L::Service: tower_service::Service<EventContext, Response = (), Error = HandlerError>
            + Clone
            + Send
            + 'static,
        <L::Service as tower_service::Service<EventContext>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |svc: HandlerService| {
            HandlerService::new(layer.layer(svc))
        }));
        self
    }

    /// Adds a typed handler, payload decoded as JSON.
    #[must_use]
    pub fn route<T, H, Fut>(self, route: Route, handler: H) -> Self
    where
        T: Event + serde::de::DeserializeOwned + serde::Serialize,
        H: Fn(EventContext, T) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.route_with_codec(route, JsonCodec, handler)
    }

    /// Adds a typed handler with a codec.
    #[must_use]
    pub fn route_with_codec<T, C, H, Fut>(mut self, route: Route, codec: C, handler: H) -> Self
    where
        T: Event,
        C: Codec<T>,
        H: Fn(EventContext, T) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let service = HandlerService::new(TypedHandler::new(handler, codec));
        self.entries.push(Entry {
            route,
            kind: Kind::Single(service),
        });
        self
    }

    /// Adds a batch handler: it gets up to `options.max_size` events at once. `Ok` acks them
    /// all; an error settles each like a single handler's would. Events that fail to decode are
    /// dead-lettered one by one and left out of the batch. One batch runs at a time (the route's
    /// concurrency is not used) and router layers do not wrap batch handlers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use archon_events::router::{BatchOptions, EventContext, HandlerError, Route, Router};
    /// use archon_events::{Event, MemoryBus};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Reading { value: f64 }
    /// impl Event for Reading { const TYPE: &'static str = "com.example.reading.v1"; }
    ///
    /// let router = Router::new(Arc::new(MemoryBus::new()))
    ///     .batch_route(
    ///         Route::new("readings", "archiver"),
    ///         BatchOptions::new(500, Duration::from_millis(100)),
    ///         |batch: Vec<(EventContext, Reading)>| async move {
    ///             let _sum: f64 = batch.iter().map(|(_, r)| r.value).sum();
    ///             Ok::<(), HandlerError>(())
    ///         },
    ///     )
    ///     .start()
    ///     .await?;
    /// router.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn batch_route<T, H, Fut>(mut self, route: Route, options: BatchOptions, handler: H) -> Self
    where
        T: Event + serde::de::DeserializeOwned + serde::Serialize,
        H: Fn(Vec<(EventContext, T)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let batch: BatchFn = Arc::new(move |contexts: Vec<EventContext>| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let mut results: Vec<Option<Result<(), HandlerError>>> =
                    Vec::with_capacity(contexts.len());
                let mut items = Vec::new();
                for ctx in contexts {
                    match ctx.envelope().decode::<T, JsonCodec>(&JsonCodec) {
                        Ok(value) => {
                            results.push(None);
                            items.push((ctx, value));
                        }
                        Err(e) => {
                            results.push(Some(Err(HandlerError::new(HandlerErrorKind::Decode, e))));
                        }
                    }
                }
                let outcome = if items.is_empty() {
                    Ok(())
                } else {
                    match AssertUnwindSafe(handler(items)).catch_unwind().await {
                        Ok(outcome) => outcome,
                        Err(panic) => Err(HandlerError::new(
                            HandlerErrorKind::Panic,
                            panic_message(panic.as_ref()),
                        )),
                    }
                };
                let text = outcome.as_ref().err().map(ToString::to_string);
                let kind = outcome.as_ref().err().map(HandlerError::kind);
                results
                    .into_iter()
                    .map(|r| match r {
                        Some(r) => r,
                        None => match (kind, &text) {
                            (Some(kind), Some(text)) => Err(HandlerError::new(kind, text.clone())),
                            _ => Ok(()),
                        },
                    })
                    .collect()
            })
        });
        self.entries.push(Entry {
            route,
            kind: Kind::Batch(batch, options),
        });
        self
    }

    /// Subscribes every route and starts handling. Fails if a subscription fails.
    pub async fn start(self) -> Result<RunningRouter> {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let failures = Arc::new(FailureLog::default());
        let system = self.bus.system();
        let mut tasks = JoinSet::new();
        let mut subscriptions = Vec::new();
        for entry in &self.entries {
            let min_prefetch = match &entry.kind {
                Kind::Batch(_, options) => options.max_size,
                Kind::Single(_) => 1,
            };
            let sub = self
                .bus
                .subscribe(&entry.route.topic, entry.route.options(min_prefetch))
                .await?;
            subscriptions.push(sub);
        }
        for (entry, sub) in self.entries.into_iter().zip(subscriptions) {
            let shared = RouteShared {
                topic: Arc::from(entry.route.topic.as_str()),
                group: Arc::from(entry.route.group.as_str()),
                handler: Arc::from(entry.route.handler_name()),
                system,
                max_deliveries: entry.route.max_deliveries,
                redelivery: entry.route.redelivery,
                stop: stop.clone(),
                abort: abort.clone(),
                stats: Arc::clone(&stats),
                failures: Arc::clone(&failures),
            };
            match entry.kind {
                Kind::Single(service) => {
                    let service = self
                        .layers
                        .iter()
                        .rev()
                        .fold(service, |svc, layer| layer(svc));
                    tasks.spawn(run_single(
                        Arc::new(shared),
                        sub,
                        service,
                        entry.route.concurrency,
                    ));
                }
                Kind::Batch(batch, options) => {
                    tasks.spawn(run_batch(Arc::new(shared), sub, batch, options));
                }
            }
        }
        Ok(RunningRouter {
            tasks,
            stop,
            abort,
            stats,
            shutdown_timeout: self.shutdown_timeout,
        })
    }

    /// Starts, runs until `signal` completes, then shuts down gracefully.
    ///
    /// ```no_run
    /// # async fn run(router: archon_events::router::Router) -> archon_events::Result<()> {
    /// let report = router.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
    /// # let _ = report; Ok(()) }
    /// ```
    pub async fn run(self, signal: impl Future<Output = ()> + Send) -> Result<ShutdownReport> {
        let running = self.start().await?;
        signal.await;
        Ok(running.shutdown().await)
    }
}

/// What a shutdown did.
///
/// ```
/// let report = archon_events::router::ShutdownReport::default();
/// assert_eq!(report.aborted, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events handled successfully over the router's life.
    pub handled: u64,
    /// Events whose handler failed over the router's life.
    pub failed: u64,
    /// Events fetched but not started when shutdown began: nacked for redelivery.
    pub nacked: u64,
    /// Handlers still running at the deadline: cancelled and nacked.
    pub aborted: u64,
}

#[derive(Debug, Default)]
struct Stats {
    handled: AtomicU64,
    failed: AtomicU64,
    nacked: AtomicU64,
    aborted: AtomicU64,
}

/// A started router; [`shutdown`](Self::shutdown) stops it gracefully.
#[derive(Debug)]
pub struct RunningRouter {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    abort: CancellationToken,
    stats: Arc<Stats>,
    shutdown_timeout: Duration,
}

impl RunningRouter {
    /// Stops fetching, lets in-flight handlers finish within the shutdown timeout, nacks what
    /// was fetched but not started, and cancels (and nacks) handlers still running at the
    /// deadline.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.stop.cancel();
        let deadline = tokio::time::sleep(self.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => {
                    match joined {
                        None => break,
                        Some(Err(error)) => tracing::error!(%error, "router task failed"),
                        Some(Ok(())) => {}
                    }
                }
                () = &mut deadline, if !self.abort.is_cancelled() => {
                    tracing::warn!("shutdown deadline reached: cancelling in-flight handlers");
                    self.abort.cancel();
                }
            }
        }
        ShutdownReport {
            handled: self.stats.handled.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            nacked: self.stats.nacked.load(Ordering::Relaxed),
            aborted: self.stats.aborted.load(Ordering::Relaxed),
        }
    }
}

/// First failure time per event, for the dead-letter headers (bounded; in-process only).
#[derive(Debug, Default)]
struct FailureLog {
    first: Mutex<HashMap<String, SystemTime>>,
    /// Entries in `first`, so the success path skips the lock when there are none.
    len: AtomicU64,
}

impl FailureLog {
    const MAX: usize = 10_000;

    fn record(&self, key: &str, now: SystemTime) -> SystemTime {
        let mut map = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::MAX && !map.contains_key(key) {
            map.clear();
        }
        let first = *map.entry(key.to_owned()).or_insert(now);
        self.len.store(map.len() as u64, Ordering::Relaxed);
        first
    }

    fn forget(&self, key: &str) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(key);
        self.len.store(map.len() as u64, Ordering::Relaxed);
    }
}

struct RouteShared {
    topic: Arc<str>,
    group: Arc<str>,
    handler: Arc<str>,
    system: &'static str,
    max_deliveries: u32,
    redelivery: Backoff,
    stop: CancellationToken,
    abort: CancellationToken,
    stats: Arc<Stats>,
    failures: Arc<FailureLog>,
}

impl RouteShared {
    fn context(&self, delivery: &Delivery) -> EventContext {
        EventContext::new(
            delivery.shared_envelope(),
            Arc::clone(&self.topic),
            Arc::clone(&self.group),
            Arc::clone(&self.handler),
            delivery.attempt(),
        )
        .with_system(self.system)
    }

    async fn nack_now(&self, delivery: Delivery, aborted: bool) {
        let counter = if aborted {
            &self.stats.aborted
        } else {
            &self.stats.nacked
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = delivery.nack(Duration::ZERO).await {
            tracing::warn!(%error, "nack on shutdown failed");
        }
    }

    async fn settle(&self, delivery: Delivery, result: Result<(), HandlerError>) {
        let outcome = match result {
            Ok(()) => {
                self.stats.handled.fetch_add(1, Ordering::Relaxed);
                if self.failures.len.load(Ordering::Relaxed) > 0 {
                    self.failures.forget(&delivery.envelope().dedupe_key());
                }
                delivery.ack().await
            }
            Err(error) => {
                let key = delivery.envelope().dedupe_key();
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let now = SystemTime::now();
                let first = self.failures.record(&key, now);
                let attempt = delivery.attempt();
                let kind = error.kind();
                if kind == HandlerErrorKind::Panic {
                    tracing::error!(
                        handler = &*self.handler,
                        event.id = delivery.envelope().id(),
                        %error,
                        "handler panicked"
                    );
                }
                if kind.is_permanent() || attempt >= self.max_deliveries {
                    let reason = if kind.is_permanent() {
                        error.to_string()
                    } else {
                        format!("gave up after {attempt} attempts: {error}")
                    };
                    tracing::warn!(
                        handler = &*self.handler,
                        event.id = delivery.envelope().id(),
                        %reason,
                        "dead-lettering event"
                    );
                    self.failures.forget(&key);
                    let fmt = |t| humantime::format_rfc3339_millis(t).to_string();
                    let dead = DeadLetter::new(reason)
                        .with_header(dead_letter_headers::HANDLER, &*self.handler)
                        .with_header(dead_letter_headers::FIRST_FAILURE, fmt(first))
                        .with_header(dead_letter_headers::LAST_FAILURE, fmt(now));
                    delivery.dead_letter(dead).await
                } else {
                    let delay = error
                        .retry_after()
                        .unwrap_or_else(|| self.redelivery.delay(attempt));
                    tracing::debug!(
                        handler = &*self.handler,
                        event.id = delivery.envelope().id(),
                        %error,
                        ?delay,
                        "handler failed, redelivering"
                    );
                    delivery.nack(delay).await
                }
            }
        };
        if let Err(error) = outcome {
            tracing::warn!(handler = &*self.handler, %error, "settling a delivery failed");
        }
    }
}

fn lane_of(delivery: &Delivery, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let env = delivery.envelope();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env.partition_key().unwrap_or(env.id()).hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

async fn run_single(
    shared: Arc<RouteShared>,
    mut sub: Subscription,
    service: HandlerService,
    lanes: usize,
) {
    if lanes <= 1 {
        return run_inline(shared, sub, service).await;
    }
    let mut workers = JoinSet::new();
    let mut senders = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        senders.push(tx);
        workers.spawn(run_lane(Arc::clone(&shared), rx, service.clone()));
    }
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            next = sub.next() => next,
        };
        let delivery = match next {
            None => break,
            Some(Err(error)) => {
                tracing::warn!(topic = &*shared.topic, %error, "fetch failed");
                continue;
            }
            Some(Ok(delivery)) => delivery,
        };
        let lane = lane_of(&delivery, lanes);
        let Some(sender) = senders.get(lane) else {
            break;
        };
        let permit = tokio::select! {
            biased;
            () = shared.stop.cancelled() => {
                shared.nack_now(delivery, false).await;
                break;
            }
            permit = sender.reserve() => permit,
        };
        match permit {
            Ok(permit) => permit.send(delivery),
            Err(_) => {
                shared.nack_now(delivery, false).await;
                break;
            }
        }
    }
    drop(sub);
    drop(senders);
    while let Some(joined) = workers.join_next().await {
        if let Err(error) = joined {
            tracing::error!(%error, "router lane failed");
        }
    }
}

/// Handles one delivery and settles it; `false` when shutdown's deadline cancelled it.
async fn handle(shared: &RouteShared, service: &mut HandlerService, delivery: Delivery) -> bool {
    let ctx = shared.context(&delivery);
    let call = async {
        let ready = service.ready().await?;
        ready.call(ctx).await
    };
    let result = tokio::select! {
        result = AssertUnwindSafe(call).catch_unwind() => result,
        () = shared.abort.cancelled() => {
            shared.nack_now(delivery, true).await;
            return false;
        }
    };
    let result = result.unwrap_or_else(|panic| {
        Err(HandlerError::new(
            HandlerErrorKind::Panic,
            panic_message(panic.as_ref()),
        ))
    });
    shared.settle(delivery, result).await;
    true
}

async fn run_lane(
    shared: Arc<RouteShared>,
    mut rx: mpsc::Receiver<Delivery>,
    mut service: HandlerService,
) {
    loop {
        let delivery = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            next = rx.recv() => match next {
                Some(delivery) => delivery,
                None => break,
            },
        };
        if !handle(&shared, &mut service, delivery).await {
            break;
        }
    }
    rx.close();
    while let Ok(delivery) = rx.try_recv() {
        shared.nack_now(delivery, false).await;
    }
}

/// One lane: handle deliveries in the fetch loop itself, no hand-over.
async fn run_inline(shared: Arc<RouteShared>, mut sub: Subscription, mut service: HandlerService) {
    loop {
        let next = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            next = sub.next() => next,
        };
        match next {
            None => break,
            Some(Err(error)) => tracing::warn!(topic = &*shared.topic, %error, "fetch failed"),
            Some(Ok(delivery)) => {
                if !handle(&shared, &mut service, delivery).await {
                    break;
                }
            }
        }
    }
}

async fn run_batch(
    shared: Arc<RouteShared>,
    mut sub: Subscription,
    batch: BatchFn,
    options: BatchOptions,
) {
    let mut ended = false;
    while !ended {
        let first = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            next = sub.next() => next,
        };
        let first = match first {
            None => break,
            Some(Err(error)) => {
                tracing::warn!(topic = &*shared.topic, %error, "fetch failed");
                continue;
            }
            Some(Ok(delivery)) => delivery,
        };
        let mut deliveries = vec![first];
        let deadline = tokio::time::Instant::now() + options.max_wait;
        while deliveries.len() < options.max_size {
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                next = sub.next() => match next {
                    Some(Ok(delivery)) => deliveries.push(delivery),
                    Some(Err(error)) => tracing::warn!(topic = &*shared.topic, %error, "fetch failed"),
                    None => {
                        ended = true;
                        break;
                    }
                },
            }
        }
        if shared.stop.is_cancelled() {
            for delivery in deliveries {
                shared.nack_now(delivery, false).await;
            }
            break;
        }
        let contexts = deliveries.iter().map(|d| shared.context(d)).collect();
        let results = tokio::select! {
            results = batch(contexts) => results,
            () = shared.abort.cancelled() => {
                for delivery in deliveries {
                    shared.nack_now(delivery, true).await;
                }
                break;
            }
        };
        for (delivery, result) in deliveries.into_iter().zip(results) {
            shared.settle(delivery, result).await;
        }
    }
}

#[cfg(test)]
mod tests;
