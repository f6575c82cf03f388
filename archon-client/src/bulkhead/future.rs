//! The response future of [`Bulkhead`](super::Bulkhead).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use archon_core::BoxError;
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_service::Service;

use super::Shared;
use super::error::BulkheadFull;

/// A held slot; gives it back (and updates the gauge) when dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
}

impl Slot {
    /// Owns a slot already taken from `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Drop for Slot {
    #[inline]
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// A call waiting for a slot, then made.
pub(crate) type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Running { #[pin] future: F, slot: Slot },
        Waiting { future: Waiting<T> },
        Rejected,
        Done,
    }
}

pin_project! {
    /// Runs the call while holding a slot; resolves to [`BulkheadFull`] when none was free.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::bulkhead::{BulkheadConfig, BulkheadFull, BulkheadLayer, future::ResponseFuture};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cfg = BulkheadConfig { max_concurrent: 1, max_wait: Duration::ZERO };
    /// let layer = BulkheadLayer::new("db", cfg);
    /// let mut svc = layer.layer(service_fn(|n: u32| async move {
    ///     Ok::<_, archon_core::BoxError>(n * 2)
    /// }));
    /// let held: ResponseFuture<_, u32> = svc.ready().await.unwrap().call(1); // holds the only slot
    /// let rejected = svc.ready().await.unwrap().call(2);
    /// assert!(rejected.await.unwrap_err().is::<BulkheadFull>());
    /// assert_eq!(held.await.unwrap(), 2);
    /// assert_eq!(layer.available_permits(), 1); // given back on completion
    /// # }
    /// ```
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T> ResponseFuture<F, T> {
    #[inline]
    pub(crate) fn running(future: F, slot: Slot) -> Self {
        Self {
            state: State::Running { future, slot },
        }
    }

    /// No slot was free: wait in `waiting`, or (`None`) reject. Built here, not in the cold
    /// path that decides, so that both paths build the future in place.
    #[inline]
    pub(crate) fn without_slot(waiting: Option<Waiting<T>>) -> Self {
        Self {
            state: match waiting {
                Some(future) => State::Waiting { future },
                None => State::Rejected,
            },
        }
    }
}

/// Waits (up to the bulkhead's `max_wait`) for a slot, then calls `service`.
pub(crate) fn wait_for_slot<S, Req, T>(service: S, req: Req, shared: Arc<Shared>) -> Waiting<T>
where
    S: Service<Req, Response = T> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    Box::pin(async move {
        if !shared.acquire_within(shared.max_wait).await {
            shared.rejected.increment(1);
            return Err(BoxError::from(BulkheadFull::new()));
        }
        let _slot = Slot::new(shared);
        service.oneshot(req).await.map_err(Into::into)
    })
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let out = match this.state.as_mut().project() {
            StateProj::Running { future, .. } => ready!(future.poll(cx)).map_err(Into::into),
            StateProj::Waiting { future } => ready!(future.as_mut().poll(cx)),
            StateProj::Rejected => Err(BulkheadFull::new().into()),
            StateProj::Done => Err(BulkheadFull::new().into()),
        };
        // Gives the slot back as soon as the call is over.
        this.state.set(State::Done);
        Poll::Ready(out)
    }
}
