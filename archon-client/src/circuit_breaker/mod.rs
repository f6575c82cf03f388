//! A circuit breaker with Resilience4j semantics, as a tower layer.
//!
//! - **Windows**: a true ring of the last N calls ([`WindowType::Count`]) or per-second buckets
//!   over the last N seconds ([`WindowType::Time`]). Both cost O(1) per call, allocate nothing
//!   per call and use atomics only: the closed path takes no lock.
//! - **Threads**: each thread gathers its successes in its own cache line (a stripe) and
//!   moves them into the shared window 64 at a time; failures and slow calls move at once.
//!   With one thread recording the window is exactly the last N calls; with several at once
//!   every failure counts immediately, and a thread's batch of successes may land in the ring
//!   after newer calls of other threads (at most 63 places per other thread).
//!   [`CircuitBreakerHandle::metrics`] counts every batch.
//! - **Slow calls**: a call taking at least `slow_call_duration` is slow; a zero duration
//!   turns slow-call detection off, and then calls are not timed (a count window reads no
//!   clock on the closed path). Durations of 10 s or more (the default is 60 s) are timed
//!   with the coarse monotonic clock where there is one (Linux `CLOCK_MONOTONIC_COARSE`:
//!   about a third of the cost of a precise reading, resolution one timer tick of 1-10 ms,
//!   used only when that is at most 0.1 % of the duration); it does not follow tokio's paused
//!   test clock, so test slow calls under a paused clock with a duration below 10 s. Shorter
//!   durations use tokio's clock.
//! - **Opening**: when the failure rate or the slow-call rate reaches its threshold, once at
//!   least `minimum_calls` calls are in the window.
//! - **Open**: rejects with [`CircuitOpen`] (no allocation, with the remaining wait) for
//!   `wait_in_open`, optionally growing on consecutive openings.
//! - **Half-open**: admits exactly `permitted_calls_in_half_open` probes; when all have
//!   finished, their rates decide closed or open. `max_wait_in_half_open` stops it sticking.
//! - **Generations**: every transition bumps a generation; results of calls admitted in an
//!   earlier generation are dropped. A call cancelled (its future dropped) counts as neither
//!   success nor failure and frees its probe slot.
//! - **Manual states**: [`force_open`](CircuitBreakerHandle::force_open),
//!   [`disable`](CircuitBreakerHandle::disable),
//!   [`metrics_only`](CircuitBreakerHandle::metrics_only), [`reset`](CircuitBreakerHandle::reset).
//! - **Events**: a callback ([`CircuitBreakerHandle::on_transition`]), a `tracing` info event per
//!   transition, and `metrics` under the names of `archon_metrics::names`:
//!   `archon.circuit_breaker.state` (one gauge per state, 1 for the current one),
//!   `archon.circuit_breaker.transitions` (`from_state`, `to_state`),
//!   `archon.circuit_breaker.calls` (by outcome) and `archon.circuit_breaker.rejected.calls`,
//!   all labelled `archon.policy.name`. Handles are registered when the breaker is built:
//!   install the metrics recorder first.
//! - **Keyed**: [`CircuitBreakerRegistry`] gives one breaker per key (host, endpoint, tenant),
//!   bounded in size.
//!
//! ```
//! use std::time::Duration;
//! use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cfg = CircuitBreakerConfig::default()
//!     .count_window(10)
//!     .minimum_calls(5)
//!     .wait_in_open(Duration::from_secs(30));
//! let layer = CircuitBreakerLayer::new("flaky", cfg).unwrap();
//! let mut svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_: ()| async {
//!     Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
//! }));
//! for _ in 0..5 {
//!     let _ = svc.ready().await.unwrap().call(()).await;
//! }
//! assert_eq!(layer.handle().state(), CircuitState::Open);
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(err.as_open().unwrap().remaining_wait().is_some());
//! # }
//! ```

mod clock;
mod config;
mod error;
pub mod future;
mod layer;
mod registry;
mod state;
mod window;

use std::task::{Context, Poll};

use tower_service::Service;

pub use self::config::{CircuitBreakerConfig, InvalidConfig, WindowType};
pub use self::error::{CircuitBreakerError, CircuitOpen};
pub use self::layer::CircuitBreakerLayer;
pub use self::registry::{CircuitBreakerRegistry, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use self::state::{CircuitBreakerHandle, CircuitState, Permit, StateTransition, WindowMetrics};
use crate::classify::{Classifier, DefaultClassifier};

/// A service guarded by a circuit breaker. Built by [`CircuitBreakerLayer`].
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
/// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
/// let svc = CircuitBreaker::new(tower::service_fn(|_: ()| async {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// }), handle);
/// assert_eq!(svc.handle().name(), "svc");
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    handle: CircuitBreakerHandle,
    classifier: C,
}

impl<S> CircuitBreaker<S> {
    /// Guards `inner` with `handle`'s breaker and the default classifier.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let mut svc = CircuitBreaker::new(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
    /// }), handle.clone());
    /// let resp = svc.ready().await.unwrap().call(()).await.unwrap();
    /// assert_eq!(resp.status(), 503);
    /// assert_eq!(handle.metrics().failures, 1); // a 503 is a failure to the default classifier
    /// # }
    /// ```
    pub fn new(inner: S, handle: CircuitBreakerHandle) -> Self {
        Self::with_classifier(inner, handle, DefaultClassifier)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Guards `inner` with `handle`'s breaker, classifying results with `classifier`.
    ///
    /// ```
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let not_found_is_failure = |r: &Result<http::Response<()>, std::io::Error>| match r {
    ///     Ok(resp) if resp.status() != 404 => Outcome::Success,
    ///     _ => Outcome::Failure,
    /// };
    /// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let mut svc = CircuitBreaker::with_classifier(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::builder().status(404).body(()).unwrap())
    /// }), handle.clone(), not_found_is_failure);
    /// svc.ready().await.unwrap().call(()).await.unwrap();
    /// assert_eq!(handle.metrics().failures, 1);
    /// # }
    /// ```
    pub fn with_classifier(inner: S, handle: CircuitBreakerHandle, classifier: C) -> Self {
        Self {
            inner,
            handle,
            classifier,
        }
    }

    /// The shared breaker.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle, CircuitState};
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let mut svc = CircuitBreaker::new(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }), handle);
    /// svc.handle().force_open();
    /// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    /// assert_eq!(err.as_open().unwrap().state(), CircuitState::ForcedOpen);
    /// # }
    /// ```
    pub fn handle(&self) -> &CircuitBreakerHandle {
        &self.handle
    }

    /// The inner service.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let svc = CircuitBreaker::new(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }), handle.clone());
    /// // A clone of the inner service answers without the breaker.
    /// svc.get_ref().clone().oneshot(()).await.unwrap();
    /// assert_eq!(handle.metrics().calls, 0);
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let mut svc = CircuitBreaker::new(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }), handle.clone());
    /// handle.force_open();
    /// // The inner service itself is not guarded.
    /// svc.get_mut().ready().await.unwrap().call(()).await.unwrap();
    /// assert!(svc.ready().await.unwrap().call(()).await.is_err());
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let handle = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let svc = CircuitBreaker::new(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }), handle.clone());
    /// handle.force_open();
    /// let inner = svc.into_inner(); // no breaker any more
    /// inner.oneshot(()).await.unwrap();
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    C: Classifier<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = CircuitBreakerError<S::Error>;
    type Future = future::ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(CircuitBreakerError::Inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.handle.try_acquire() {
            Ok(permit) => future::ResponseFuture::called(
                self.inner.call(req),
                permit,
                self.classifier.clone(),
            ),
            Err(open) => future::ResponseFuture::rejected(open, self.classifier.clone()),
        }
    }
}
