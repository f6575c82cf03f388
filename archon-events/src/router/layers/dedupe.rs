//! Idempotent consumer: skip events already handled.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tower_service::Service;

use crate::Result;
use crate::router::{EventContext, HandlerError};

/// Remembers which events were handled, for a while. The key is the event's
/// [`dedupe_key`](crate::Envelope::dedupe_key) (`source` + `id`) plus the consumer group.
///
/// An implementation backed by a plain map (the in-memory one is [`MemoryDedupeStore`]; a
/// PostgreSQL one comes with the backends):
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use archon_events::router::DedupeStore;
/// #[derive(Debug, Default)]
/// struct Forever(Mutex<HashSet<String>>);
/// #[async_trait::async_trait]
/// impl DedupeStore for Forever {
///     async fn seen(&self, key: &str) -> archon_events::Result<bool> {
///         Ok(self.0.lock().unwrap().contains(key))
///     }
///     async fn mark(&self, key: &str, _ttl: Duration) -> archon_events::Result<()> {
///         self.0.lock().unwrap().insert(key.to_owned());
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait DedupeStore: Send + Sync + fmt::Debug + 'static {
    /// Whether `key` was marked and has not expired.
    async fn seen(&self, key: &str) -> Result<bool>;
    /// Marks `key` as handled for `ttl`.
    async fn mark(&self, key: &str, ttl: Duration) -> Result<()>;
}

/// An in-process [`DedupeStore`] with a time-to-live and a cap on entries (oldest evicted
/// first).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
/// use std::time::Duration;
/// use archon_events::router::{DedupeStore, MemoryDedupeStore};
/// let store = MemoryDedupeStore::new(10_000);
/// store.mark("evt-1", Duration::from_secs(60)).await?;
/// assert!(store.seen("evt-1").await?);
/// assert!(!store.seen("evt-2").await?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryDedupeStore {
    max_entries: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    expiry: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl MemoryDedupeStore {
    /// A store keeping at most `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            inner: Mutex::new(Entries::default()),
        }
    }
}

impl Default for MemoryDedupeStore {
    /// 100,000 entries.
    fn default() -> Self {
        Self::new(100_000)
    }
}

#[async_trait]
impl DedupeStore for MemoryDedupeStore {
    async fn seen(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        let entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(entries.expiry.get(key).is_some_and(|&until| until > now))
    }

    async fn mark(&self, key: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let until = now + ttl;
        let mut entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Entries { expiry, order } = &mut *entries;
        while let Some((at, k)) = order.front() {
            let expired = *at <= now;
            let full = expiry.len() >= self.max_entries;
            if !(expired || full) {
                break;
            }
            if expiry.get(k) == Some(at) {
                expiry.remove(k);
            }
            order.pop_front();
        }
        expiry.insert(key.to_owned(), until);
        order.push_back((until, key.to_owned()));
        Ok(())
    }
}

/// Skips events this consumer group already handled: the handler is not called and the event
/// is acknowledged. Marks an event only after the handler succeeded.
///
/// ```
/// use std::time::Duration;
/// use archon_events::router::{DedupeLayer, MemoryDedupeStore};
/// let layer = DedupeLayer::new(MemoryDedupeStore::default(), Duration::from_secs(3600));
/// # drop(layer);
/// ```
#[derive(Debug, Clone)]
pub struct DedupeLayer {
    store: Arc<dyn DedupeStore>,
    ttl: Duration,
}

impl DedupeLayer {
    /// Dedupe with `store`, remembering handled events for `ttl`.
    pub fn new(store: impl DedupeStore, ttl: Duration) -> Self {
        Self {
            store: Arc::new(store),
            ttl,
        }
    }
    /// Dedupe with a shared store.
    pub fn shared(store: Arc<dyn DedupeStore>, ttl: Duration) -> Self {
        Self { store, ttl }
    }
}

impl<S> tower_layer::Layer<S> for DedupeLayer {
    type Service = Dedupe<S>;
    fn layer(&self, inner: S) -> Dedupe<S> {
        Dedupe {
            inner,
            store: Arc::clone(&self.store),
            ttl: self.ttl,
        }
    }
}

/// The service made by [`DedupeLayer`].
#[derive(Debug, Clone)]
pub struct Dedupe<S> {
    inner: S,
    store: Arc<dyn DedupeStore>,
    ttl: Duration,
}

impl<S> Dedupe<S> {
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

impl<S> Service<EventContext> for Dedupe<S>
where
    S: Service<EventContext, Response = (), Error = HandlerError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ctx: EventContext) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = Arc::clone(&self.store);
        let ttl = self.ttl;
        Box::pin(async move {
            let key = format!("{}\u{1f}{}", ctx.group(), ctx.envelope().dedupe_key());
            if store.seen(&key).await.map_err(HandlerError::transient)? {
                tracing::debug!(event.id = ctx.envelope().id(), "duplicate event skipped");
                return Ok(());
            }
            inner.call(ctx).await?;
            store.mark(&key, ttl).await.map_err(HandlerError::transient)
        })
    }
}
