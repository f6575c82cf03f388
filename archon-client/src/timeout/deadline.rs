//! [`Deadline`]: one time limit for a whole call, retries included.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use archon_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use super::DeadlineExceeded;

/// A request that can carry its deadline to the layers below.
///
/// ```
/// use archon_client::timeout::DeadlineRequest;
/// let mut req = http::Request::new(());
/// let at = tokio::time::Instant::now();
/// req.set_deadline(at);
/// assert_eq!(req.deadline(), Some(at));
/// ```
pub trait DeadlineRequest {
    /// Stores the deadline (the earlier one wins if there is one already).
    fn set_deadline(&mut self, at: Instant);
    /// The stored deadline.
    fn deadline(&self) -> Option<Instant>;
}

#[derive(Debug, Clone, Copy)]
struct DeadlineAt(Instant);

impl<B> DeadlineRequest for http::Request<B> {
    fn set_deadline(&mut self, at: Instant) {
        let at = self.deadline().map_or(at, |old| old.min(at));
        self.extensions_mut().insert(DeadlineAt(at));
    }

    fn deadline(&self) -> Option<Instant> {
        self.extensions().get::<DeadlineAt>().map(|d| d.0)
    }
}

#[cfg(feature = "http")]
impl DeadlineRequest for reqwest::Request {
    /// reqwest requests carry no extensions: the deadline becomes the request's own timeout.
    fn set_deadline(&mut self, at: Instant) {
        let left = at.saturating_duration_since(Instant::now());
        let timeout = self.timeout().map_or(left, |t| (*t).min(left));
        *self.timeout_mut() = Some(timeout);
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// Wraps services in a [`Deadline`].
///
/// ```
/// let layer = archon_client::timeout::DeadlineLayer::new(std::time::Duration::from_secs(2));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Every call must finish within `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::{DeadlineLayer, DeadlineRequest};
    /// use tokio::time::Instant;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut svc = DeadlineLayer::new(Duration::from_secs(2)).layer(service_fn(
    ///     |req: http::Request<()>| async move {
    ///         Ok::<_, archon_core::BoxError>(req.deadline().unwrap() - Instant::now())
    ///     },
    /// ));
    /// let left = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    /// assert_eq!(left, Duration::from_secs(2)); // the deadline travels in the request
    /// # }
    /// ```
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails a call with [`DeadlineExceeded`] when it is not done within the timeout, however many
/// attempts the layers below make; the deadline travels in the request.
///
/// ```
/// use tower::Layer;
/// let svc = archon_client::timeout::DeadlineLayer::new(std::time::Duration::from_secs(1))
///     .layer(tower::service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>(()) }));
/// # drop(svc);
/// ```
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Deadline<S> {
    /// The inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::{DeadlineLayer, DeadlineRequest};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = DeadlineLayer::new(Duration::from_secs(1)).layer(service_fn(
    ///     |req: http::Request<()>| async move { Ok::<_, archon_core::BoxError>(req.deadline()) },
    /// ));
    /// // A clone of the inner service sets no deadline.
    /// let deadline = svc.get_ref().clone().oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!(deadline, None);
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::{DeadlineLayer, DeadlineRequest};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = DeadlineLayer::new(Duration::from_secs(1)).layer(service_fn(
    ///     |req: http::Request<()>| async move { Ok::<_, archon_core::BoxError>(req.deadline()) },
    /// ));
    /// let inner = svc.get_mut().ready().await.unwrap();
    /// assert_eq!(inner.call(http::Request::new(())).await.unwrap(), None); // no deadline set
    /// let outer = svc.ready().await.unwrap();
    /// assert!(outer.call(http::Request::new(())).await.unwrap().is_some());
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::{DeadlineLayer, DeadlineRequest};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = DeadlineLayer::new(Duration::from_secs(1)).layer(service_fn(
    ///     |req: http::Request<()>| async move { Ok::<_, archon_core::BoxError>(req.deadline()) },
    /// ));
    /// let inner = svc.into_inner(); // no deadline any more
    /// assert_eq!(inner.oneshot(http::Request::new(())).await.unwrap(), None);
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Deadline<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: DeadlineRequest,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let at = Instant::now() + self.timeout;
        req.set_deadline(at);
        let at = req.deadline().unwrap_or(at);
        ResponseFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep_until(at),
        }
    }
}

pin_project! {
    /// The call, raced against its deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::{DeadlineExceeded, DeadlineLayer, ResponseFuture};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut svc = DeadlineLayer::new(Duration::from_millis(100)).layer(service_fn(
    ///     |req: http::Request<Duration>| async move {
    ///         tokio::time::sleep(*req.body()).await;
    ///         Ok::<_, archon_core::BoxError>("done")
    ///     },
    /// ));
    /// let req = http::Request::new(Duration::from_millis(10));
    /// let fast: ResponseFuture<_> = svc.ready().await.unwrap().call(req);
    /// assert_eq!(fast.await.unwrap(), "done");
    /// let slow = svc.ready().await.unwrap().call(http::Request::new(Duration::from_secs(1)));
    /// assert!(slow.await.unwrap_err().is::<DeadlineExceeded>());
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(DeadlineExceeded::new().into())),
            Poll::Pending => Poll::Pending,
        }
    }
}
