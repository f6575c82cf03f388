//! A deadline per handler call.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower_service::Service;

use crate::router::{EventContext, HandlerError, HandlerErrorKind};

/// The marker error of a handler that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("handler timed out after {0:?}")]
pub struct Elapsed(pub(super) Duration);

/// Fails a handler call that takes longer than `timeout` with a
/// [`Timeout`](HandlerErrorKind::Timeout) error (transient: retried and redelivered).
///
/// ```
/// use std::time::Duration;
/// let layer = archon_events::router::TimeoutLayer::new(Duration::from_secs(30));
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A deadline of `timeout` per call.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower_layer::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
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

impl<S> Service<EventContext> for Timeout<S>
where
    S: Service<EventContext, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ctx: EventContext) -> Self::Future {
        let timeout = self.timeout;
        let fut = self.inner.call(ctx);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => Err(HandlerError::new(
                    HandlerErrorKind::Timeout,
                    Elapsed(timeout),
                )),
            }
        })
    }
}
