//! A fallback: selected errors become a fallback response.
//!
//! ```
//! use archon_client::fallback::FallbackLayer;
//! use archon_client::circuit_breaker::CircuitOpen;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(|err: &archon_core::BoxError| {
//!         err.is::<std::io::Error>().then(|| "cached".to_owned())
//!     }))
//!     .service(service_fn(|_: ()| async {
//!         Err::<String, archon_core::BoxError>(std::io::Error::other("down").into())
//!     }));
//! assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "cached");
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Wraps services in a [`Fallback`] using `f`: `Some(response)` replaces the error,
/// `None` keeps it.
///
/// ```
/// let layer = archon_client::fallback::FallbackLayer::new(|_: &std::io::Error| Some(0u8));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct FallbackLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer").finish_non_exhaustive()
    }
}

impl<F> FallbackLayer<F> {
    /// A layer with the fallback function `f`.
    ///
    /// ```
    /// use archon_client::{bulkhead::BulkheadFull, fallback::FallbackLayer};
    /// use archon_core::BoxError;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // A full bulkhead answers with an empty list; other errors stay errors.
    /// let layer = FallbackLayer::new(|err: &BoxError| err.is::<BulkheadFull>().then(Vec::new));
    /// let full = layer.layer(service_fn(|_: ()| async {
    ///     Err::<Vec<u32>, BoxError>(BulkheadFull::new().into())
    /// }));
    /// assert_eq!(full.oneshot(()).await.unwrap(), Vec::<u32>::new());
    /// let down = layer.layer(service_fn(|_: ()| async { Err::<Vec<u32>, BoxError>("down".into()) }));
    /// assert!(down.oneshot(()).await.is_err());
    /// # }
    /// ```
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<S, F: Clone> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            f: self.f.clone(),
        }
    }
}

/// A service whose selected errors are replaced by a fallback response.
///
/// ```
/// use tower::Layer;
/// let svc = archon_client::fallback::FallbackLayer::new(|_: &std::io::Error| Some(()))
///     .layer(tower::service_fn(|_: ()| async { Ok::<(), std::io::Error>(()) }));
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct Fallback<S, F> {
    inner: S,
    f: F,
}

impl<S: fmt::Debug, F> fmt::Debug for Fallback<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F> Fallback<S, F> {
    /// The inner service.
    ///
    /// ```
    /// use archon_client::fallback::FallbackLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = FallbackLayer::new(|_: &std::io::Error| Some("cached"))
    ///     .layer(service_fn(|_: ()| async { Err::<&str, _>(std::io::Error::other("down")) }));
    /// // The inner service alone has no fallback.
    /// assert!(svc.get_ref().clone().oneshot(()).await.is_err());
    /// assert_eq!(svc.oneshot(()).await.unwrap(), "cached");
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use archon_client::fallback::FallbackLayer;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = FallbackLayer::new(|_: &std::io::Error| Some("cached"))
    ///     .layer(service_fn(|_: ()| async { Err::<&str, _>(std::io::Error::other("down")) }));
    /// assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "cached");
    /// assert!(svc.get_mut().ready().await.unwrap().call(()).await.is_err());
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use archon_client::fallback::FallbackLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = FallbackLayer::new(|_: &std::io::Error| Some("cached"))
    ///     .layer(service_fn(|_: ()| async { Err::<&str, _>(std::io::Error::other("down")) }));
    /// let inner = svc.into_inner();
    /// assert_eq!(inner.oneshot(()).await.unwrap_err().to_string(), "down");
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, F, Req> Service<Req> for Fallback<S, F>
where
    S: Service<Req>,
    F: Fn(&S::Error) -> Option<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            f: self.f.clone(),
        }
    }
}

pin_project! {
    /// The call, with its error maybe replaced by the fallback.
    ///
    /// ```
    /// use archon_client::fallback::{FallbackLayer, ResponseFuture};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = FallbackLayer::new(|_: &std::io::Error| Some(0u32))
    ///     .layer(service_fn(|n: u32| async move {
    ///         if n > 0 { Ok(n * 2) } else { Err(std::io::Error::other("no stock")) }
    ///     }));
    /// let found: ResponseFuture<_, _> = svc.ready().await.unwrap().call(21);
    /// let fallback: ResponseFuture<_, _> = svc.ready().await.unwrap().call(0);
    /// assert_eq!((found.await.unwrap(), fallback.await.unwrap()), (42, 0));
    /// # }
    /// ```
    pub struct ResponseFuture<Fut, F> {
        #[pin]
        inner: Fut,
        f: F,
    }
}

impl<Fut, F> fmt::Debug for ResponseFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, T, E> Future for ResponseFuture<Fut, F>
where
    Fut: Future<Output = Result<T, E>>,
    F: Fn(&E) -> Option<T>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(v) => Ok(v),
            Err(e) => match (this.f)(&e) {
                Some(v) => {
                    tracing::debug!("call failed; answered with the fallback");
                    Ok(v)
                }
                None => Err(e),
            },
        })
    }
}
