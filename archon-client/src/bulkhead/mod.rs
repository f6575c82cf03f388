//! A bulkhead: at most N calls in flight, with a bounded wait for a slot.
//!
//! Rejection is the marker [`BulkheadFull`] (boxed without allocating: it has no fields). The
//! slots in use and the limit are the gauges `archon.bulkhead.permits.in_use` and
//! `archon.bulkhead.permits.limit`, rejections the counter `archon.bulkhead.rejected.calls`
//! (labelled `archon.policy.name`); the slots left are also [`BulkheadLayer::available_permits`].
//!
//! ```
//! use std::time::Duration;
//! use archon_client::bulkhead::{BulkheadConfig, BulkheadFull, BulkheadLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = BulkheadLayer::new("db", BulkheadConfig { max_concurrent: 1, max_wait: Duration::ZERO });
//! let mut svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//!     Ok::<_, archon_core::BoxError>(())
//! }));
//! let first = svc.ready().await.unwrap().call(());
//! let second = svc.ready().await.unwrap().call(()).await;
//! assert!(second.unwrap_err().is::<BulkheadFull>());
//! assert_eq!(layer.available_permits(), 0);
//! first.await.unwrap();
//! assert_eq!(layer.available_permits(), 1);
//! # }
//! ```

mod error;
pub mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use archon_core::BoxError;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tower_service::Service;

pub use self::error::BulkheadFull;
pub use self::layer::BulkheadLayer;

/// Bulkhead settings (Resilience4j's defaults: 25 calls, no wait).
///
/// ```
/// let cfg: archon_client::bulkhead::BulkheadConfig =
///     toml::from_str("max_concurrent = 8\nmax_wait = '20ms'").unwrap();
/// assert_eq!(cfg.max_concurrent, 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed in flight at once (at least 1).
    pub max_concurrent: usize,
    /// How long a call may wait for a slot; zero rejects at once.
    #[serde(with = "archon_core::config::duration")]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 25,
            max_wait: Duration::ZERO,
        }
    }
}

/// The slots of one bulkhead: a counter of calls in flight (one compare-and-swap to take a
/// slot, one subtraction to give it back) and a `Notify` for callers allowed to wait.
#[derive(Debug)]
pub(crate) struct Shared {
    in_flight: AtomicUsize,
    /// Callers waiting for a slot; a release notifies only when there are some.
    waiters: AtomicUsize,
    notify: Notify,
    pub(crate) max_concurrent: usize,
    pub(crate) max_wait: Duration,
    pub(crate) in_use: metrics::Gauge,
    pub(crate) rejected: metrics::Counter,
}

impl Shared {
    pub(crate) fn new(
        max_concurrent: usize,
        max_wait: Duration,
        in_use: metrics::Gauge,
        rejected: metrics::Counter,
    ) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            notify: Notify::new(),
            max_concurrent,
            max_wait,
            in_use,
            rejected,
        }
    }

    /// Slots free now.
    pub(crate) fn available(&self) -> usize {
        self.max_concurrent
            .saturating_sub(self.in_flight.load(Ordering::SeqCst))
    }

    pub(crate) fn report(&self) {
        self.in_use
            .set(self.in_flight.load(Ordering::Relaxed) as f64);
    }

    /// Takes a slot if one is free.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        // SeqCst pairs with `release`: a waiter either sees the slot freed or is notified.
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current >= self.max_concurrent {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    self.in_use.set((current + 1) as f64);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives a slot back, waking one waiter if any.
    #[inline]
    pub(crate) fn release(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.in_use.set(before.saturating_sub(1) as f64);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// Waits up to `max_wait` for a slot.
    pub(crate) async fn acquire_within(&self, max_wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max_wait;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let acquired = loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking at the counter, so a release in between is not missed.
            notified.as_mut().enable();
            if self.try_acquire() {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self.try_acquire();
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        acquired
    }
}

/// A service with at most `max_concurrent` calls in flight. Built by [`BulkheadLayer`].
///
/// ```
/// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
/// use tower::Layer;
/// let svc = BulkheadLayer::new("x", BulkheadConfig::default())
///     .layer(tower::service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>(()) }));
/// # drop(svc);
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Bulkhead<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    ///
    /// ```
    /// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = BulkheadLayer::new("db", BulkheadConfig::default());
    /// let svc = layer.layer(service_fn(|n: u32| async move {
    ///     Ok::<_, archon_core::BoxError>(n * 2)
    /// }));
    /// // A clone of the inner service answers without taking a slot.
    /// assert_eq!(svc.get_ref().clone().oneshot(21).await.unwrap(), 42);
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = BulkheadLayer::new("db", BulkheadConfig::default());
    /// let mut svc = layer.layer(service_fn(|n: u32| async move {
    ///     Ok::<_, archon_core::BoxError>(n * 2)
    /// }));
    /// let call = svc.get_mut().ready().await.unwrap().call(21); // the inner service itself
    /// assert_eq!(layer.available_permits(), 25); // no slot taken
    /// assert_eq!(call.await.unwrap(), 42);
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = BulkheadLayer::new("db", BulkheadConfig::default());
    /// let svc = layer.layer(service_fn(|n: u32| async move {
    ///     Ok::<_, archon_core::BoxError>(n * 2)
    /// }));
    /// let inner = svc.into_inner(); // no bulkhead any more
    /// assert_eq!(inner.oneshot(21).await.unwrap(), 42);
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.shared.try_acquire() {
            // The slot first: the inner call's future is then moved straight into ours
            // (taken after, the reference count in between costs a copy of that future).
            let slot = future::Slot::new(self.shared.clone());
            return future::ResponseFuture::running(self.inner.call(req), slot);
        }
        future::ResponseFuture::without_slot(self.full(req))
    }
}

impl<S> Bulkhead<S> {
    /// No slot free: `None` to reject, or the call waiting for one (kept out of line so that
    /// the path taking a slot stays small enough to inline).
    #[cold]
    #[inline(never)]
    fn full<Req>(&mut self, req: Req) -> Option<future::Waiting<S::Response>>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        Req: Send + 'static,
    {
        if self.shared.max_wait.is_zero() {
            self.shared.rejected.increment(1);
            None
        } else {
            let clone = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, clone);
            Some(future::wait_for_slot(ready, req, self.shared.clone()))
        }
    }
}
