//! A client-side rate limiter (GCRA, from the `governor` crate): wait for a slot up to
//! `max_wait`, or reject with [`RateLimited`]. One limiter is shared by every clone of the
//! layer and its services.
//!
//! ```
//! use std::time::Duration;
//! use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimited};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cfg = RateLimitConfig { per_second: 1, burst: 2, max_wait: Duration::ZERO };
//! let mut svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(cfg).unwrap())
//!     .service(service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>(()) }));
//! svc.ready().await.unwrap().call(()).await.unwrap();
//! svc.ready().await.unwrap().call(()).await.unwrap();
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(err.downcast_ref::<RateLimited>().unwrap().retry_after() > Duration::ZERO);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use archon_core::BoxError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

mod keyed;

pub use self::keyed::{
    KeyedRateLimit, KeyedRateLimitConfig, KeyedRateLimitLayer, KeyedRequest, RateLimitKey,
};

/// Rate limit settings.
///
/// ```
/// let cfg: archon_client::rate_limit::RateLimitConfig = toml::from_str("per_second = 100").unwrap();
/// assert_eq!(cfg.burst, 0); // 0 = same as per_second
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained calls per second (at least 1).
    pub per_second: u32,
    /// Calls allowed at once after a quiet period; 0 means `per_second`.
    pub burst: u32,
    /// How long a call may wait for its turn; zero rejects at once.
    #[serde(with = "archon_core::config::duration")]
    pub max_wait: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 0,
            max_wait: Duration::ZERO,
        }
    }
}

/// Called too often: the limiter would admit this call only after [`retry_after`](Self::retry_after).
///
/// ```
/// let e = archon_client::rate_limit::RateLimited::new(std::time::Duration::from_millis(5));
/// assert_eq!(e.retry_after().as_millis(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    /// A rejection that could be retried after `retry_after`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{Error, ErrorKind, rate_limit::RateLimited};
    /// let limited = RateLimited::new(Duration::from_millis(250));
    /// assert_eq!(limited.to_string(), "rate limited; next slot in 250ms");
    /// assert_eq!(Error::from_boxed(Box::new(limited)).kind(), ErrorKind::RateLimited);
    /// ```
    pub fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// When the limiter would admit the call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimited};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = RateLimitLayer::new(RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO })
    ///     .unwrap()
    ///     .layer(service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>(()) }));
    /// svc.clone().oneshot(()).await.unwrap();
    /// let err = svc.oneshot(()).await.unwrap_err();
    /// let wait = err.downcast_ref::<RateLimited>().unwrap().retry_after();
    /// assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1)); // one slot a second
    /// # }
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited; next slot in {:?}", self.retry_after)
    }
}

impl std::error::Error for RateLimited {}

/// The setting that cannot work.
///
/// ```
/// let cfg = archon_client::rate_limit::RateLimitConfig { per_second: 0, ..Default::default() };
/// assert!(archon_client::rate_limit::RateLimitLayer::new(cfg).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit: per_second must be at least 1")]
pub struct InvalidRateLimit(());

#[derive(Debug)]
struct Shared {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    max_wait: Duration,
}

impl Shared {
    /// `Ok` when admitted now, else how long until the next slot.
    fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Wraps services in a [`RateLimit`] sharing one limiter.
///
/// ```
/// let layer = archon_client::rate_limit::RateLimitLayer::new(Default::default()).unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// A limiter with `config`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimited};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = RateLimitLayer::new(RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO }).unwrap();
    /// let ok = service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>(()) });
    /// // Two services of one layer share its limiter.
    /// let (a, b) = (layer.layer(ok), layer.layer(ok));
    /// a.oneshot(()).await.unwrap();
    /// assert!(b.oneshot(()).await.unwrap_err().is::<RateLimited>());
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`InvalidRateLimit`] when `per_second` is 0.
    pub fn new(config: RateLimitConfig) -> Result<Self, InvalidRateLimit> {
        let per_second = NonZeroU32::new(config.per_second).ok_or(InvalidRateLimit(()))?;
        let burst = NonZeroU32::new(config.burst).unwrap_or(per_second);
        Ok(Self {
            shared: Arc::new(Shared {
                limiter: governor::RateLimiter::direct(
                    Quota::per_second(per_second).allow_burst(burst),
                ),
                clock: DefaultClock::default(),
                max_wait: config.max_wait,
            }),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A service whose calls pass a shared rate limiter. Built by [`RateLimitLayer`].
///
/// ```
/// use tower::Layer;
/// let svc = archon_client::rate_limit::RateLimitLayer::new(Default::default()).unwrap()
///     .layer(tower::service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>(()) }));
/// # drop(svc);
/// ```
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    /// The inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = RateLimitLayer::new(RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO })
    ///     .unwrap()
    ///     .layer(service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>("ok") }));
    /// svc.clone().oneshot(()).await.unwrap();
    /// assert!(svc.clone().oneshot(()).await.is_err()); // the limit is spent...
    /// assert_eq!(svc.get_ref().clone().oneshot(()).await.unwrap(), "ok"); // ...not by the inner service
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = RateLimitLayer::new(RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO })
    ///     .unwrap()
    ///     .layer(service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>("ok") }));
    /// svc.ready().await.unwrap().call(()).await.unwrap();
    /// assert!(svc.ready().await.unwrap().call(()).await.is_err());
    /// // Calling the inner service directly bypasses the limiter.
    /// assert_eq!(svc.get_mut().ready().await.unwrap().call(()).await.unwrap(), "ok");
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = RateLimitLayer::new(RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO })
    ///     .unwrap()
    ///     .layer(service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>("ok") }));
    /// svc.clone().oneshot(()).await.unwrap();
    /// let unlimited = svc.into_inner();
    /// assert_eq!(unlimited.clone().oneshot(()).await.unwrap(), "ok");
    /// assert_eq!(unlimited.oneshot(()).await.unwrap(), "ok");
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = self.shared.clone();
        admit(&mut self.inner, req, self.shared.max_wait, move || {
            shared.check()
        })
    }
}

/// Pass `req` to `inner` through a limiter's `check` (`Ok` = admitted and counted, `Err` = the
/// wait until the next slot): at once, rejected with [`RateLimited`] when the wait is longer
/// than `max_wait`, or after waiting (checking again at each slot) up to `max_wait`.
fn admit<S, Req>(
    inner: &mut S,
    req: Req,
    max_wait: Duration,
    check: impl Fn() -> Result<(), Duration> + Send + 'static,
) -> ResponseFuture<S::Future, S::Response>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    match check() {
        Ok(()) => ResponseFuture::new(State::Running {
            future: inner.call(req),
        }),
        Err(wait) if wait > max_wait => ResponseFuture::new(State::Rejected { wait }),
        Err(_) => {
            let clone = inner.clone();
            let service = std::mem::replace(inner, clone);
            let future: Waiting<S::Response> = Box::pin(async move {
                let give_up = tokio::time::Instant::now() + max_wait;
                loop {
                    match check() {
                        Ok(()) => break,
                        Err(wait) if tokio::time::Instant::now() + wait > give_up => {
                            return Err(RateLimited::new(wait).into());
                        }
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                }
                service.oneshot(req).await.map_err(Into::into)
            });
            ResponseFuture::new(State::Waiting { future })
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Running { #[pin] future: F },
        Waiting { future: Waiting<T> },
        Rejected { wait: Duration },
    }
}

pin_project! {
    /// The call once the limiter let it through, or [`RateLimited`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimited, ResponseFuture};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = RateLimitLayer::new(RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO })
    ///     .unwrap()
    ///     .layer(service_fn(|n: u32| async move { Ok::<_, archon_core::BoxError>(n * 2) }));
    /// let first: ResponseFuture<_, u32> = svc.ready().await.unwrap().call(21);
    /// let second: ResponseFuture<_, u32> = svc.ready().await.unwrap().call(1);
    /// assert_eq!(first.await.unwrap(), 42);
    /// assert!(second.await.unwrap_err().is::<RateLimited>());
    /// # }
    /// ```
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

impl<F, T> ResponseFuture<F, T> {
    fn new(state: State<F, T>) -> Self {
        Self { state }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Into::into))
            }
            StateProj::Waiting { future } => future.as_mut().poll(cx),
            StateProj::Rejected { wait } => Poll::Ready(Err(RateLimited::new(*wait).into())),
        }
    }
}
