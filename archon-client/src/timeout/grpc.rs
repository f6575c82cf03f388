//! [`GrpcTimeout`]: sends the time left as `grpc-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use archon_core::BoxError;
use http::HeaderValue;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::{DeadlineExceeded, DeadlineRequest};

/// Formats a duration as a `grpc-timeout` value (at most 8 digits and a unit), rounding down
/// to the finest unit that fits.
///
/// ```
/// use std::time::Duration;
/// use archon_client::timeout::format_grpc_timeout;
/// assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600)), "3600000m");
/// ```
pub fn format_grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let units: [(u128, char); 6] = [
        (d.as_nanos(), 'n'),
        (d.as_micros(), 'u'),
        (d.as_millis(), 'm'),
        (u128::from(d.as_secs()), 'S'),
        (u128::from(d.as_secs() / 60), 'M'),
        (u128::from(d.as_secs() / 3600), 'H'),
    ];
    for (value, unit) in units {
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Wraps services in a [`GrpcTimeout`].
///
/// ```
/// let layer = archon_client::timeout::GrpcTimeoutLayer::new(Some(std::time::Duration::from_secs(1)));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GrpcTimeoutLayer {
    per_attempt: Option<Duration>,
}

impl GrpcTimeoutLayer {
    /// Sends the smaller of the time left before the request's deadline and `per_attempt`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::GrpcTimeoutLayer;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = GrpcTimeoutLayer::new(Some(Duration::from_millis(250))).layer(service_fn(
    ///     |req: http::Request<()>| async move {
    ///         Ok::<_, archon_core::BoxError>(req.headers().get("grpc-timeout").cloned())
    ///     },
    /// ));
    /// // No deadline in the request: the per-attempt timeout is sent.
    /// let sent = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    /// assert_eq!(sent.unwrap(), "250000u");
    /// # }
    /// ```
    pub fn new(per_attempt: Option<Duration>) -> Self {
        Self { per_attempt }
    }
}

impl<S> Layer<S> for GrpcTimeoutLayer {
    type Service = GrpcTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTimeout {
            inner,
            per_attempt: self.per_attempt,
        }
    }
}

/// Sets `grpc-timeout` on each attempt from the request's [deadline](DeadlineRequest) (and
/// the per-attempt timeout); fails with [`DeadlineExceeded`] without calling the inner
/// service when the deadline has passed.
///
/// ```
/// use tower::Layer;
/// let svc = archon_client::timeout::GrpcTimeoutLayer::new(None)
///     .layer(tower::service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>(()) }));
/// # drop(svc);
/// ```
#[derive(Debug, Clone)]
pub struct GrpcTimeout<S> {
    inner: S,
    per_attempt: Option<Duration>,
}

impl<S> GrpcTimeout<S> {
    /// The inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::GrpcTimeoutLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = GrpcTimeoutLayer::new(Some(Duration::from_secs(1))).layer(service_fn(
    ///     |req: http::Request<()>| async move {
    ///         Ok::<_, archon_core::BoxError>(req.headers().contains_key("grpc-timeout"))
    ///     },
    /// ));
    /// // A clone of the inner service sends no `grpc-timeout`.
    /// let sent = svc.get_ref().clone().oneshot(http::Request::new(())).await.unwrap();
    /// assert!(!sent);
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::GrpcTimeoutLayer;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = GrpcTimeoutLayer::new(Some(Duration::from_secs(1))).layer(service_fn(
    ///     |req: http::Request<()>| async move {
    ///         Ok::<_, archon_core::BoxError>(req.headers().contains_key("grpc-timeout"))
    ///     },
    /// ));
    /// let inner = svc.get_mut().ready().await.unwrap();
    /// assert!(!inner.call(http::Request::new(())).await.unwrap()); // no header set
    /// assert!(svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap());
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::timeout::GrpcTimeoutLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = GrpcTimeoutLayer::new(Some(Duration::from_secs(1))).layer(service_fn(
    ///     |req: http::Request<()>| async move {
    ///         Ok::<_, archon_core::BoxError>(req.headers().contains_key("grpc-timeout"))
    ///     },
    /// ));
    /// let inner = svc.into_inner(); // no `grpc-timeout` any more
    /// assert!(!inner.oneshot(http::Request::new(())).await.unwrap());
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for GrpcTimeout<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GrpcTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let left = req
            .deadline()
            .map(|at| at.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return GrpcTimeoutFuture { inner: None };
        }
        let timeout = match (left, self.per_attempt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(timeout) = timeout
            && let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(timeout))
        {
            req.headers_mut().insert("grpc-timeout", value);
        }
        GrpcTimeoutFuture {
            inner: Some(self.inner.call(req)),
        }
    }
}

pin_project! {
    /// The call, or [`DeadlineExceeded`] when no time was left.
    ///
    /// ```
    /// use archon_client::timeout::{DeadlineExceeded, DeadlineRequest, GrpcTimeoutFuture, GrpcTimeoutLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = GrpcTimeoutLayer::new(None).layer(service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, archon_core::BoxError>(())
    /// }));
    /// let mut req = http::Request::new(());
    /// req.set_deadline(tokio::time::Instant::now()); // no time left
    /// let fut: GrpcTimeoutFuture<_> = svc.ready().await.unwrap().call(req);
    /// assert!(fut.await.unwrap_err().is::<DeadlineExceeded>());
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct GrpcTimeoutFuture<F> {
        #[pin]
        inner: Option<F>,
    }
}

impl<F, T, E> Future for GrpcTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.as_pin_mut() {
            Some(f) => f.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(DeadlineExceeded::new().into())),
        }
    }
}
