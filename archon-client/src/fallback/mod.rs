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
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
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
