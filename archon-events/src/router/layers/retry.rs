//! In-process retry with backoff.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::ServiceExt as _;
use tower_service::Service;

use crate::router::{Backoff, EventContext, HandlerError, HandlerErrorKind};

/// Retries [`Transient`](HandlerErrorKind::Transient) and
/// [`Timeout`](HandlerErrorKind::Timeout) failures in process, up to `max_attempts` calls in
/// total, sleeping with a [`Backoff`] between them. Permanent, decode and panic failures are
/// passed on at once.
///
/// ```
/// use std::time::Duration;
/// use archon_events::router::{Backoff, RetryLayer};
/// let layer = RetryLayer::new(3, Backoff::fixed(Duration::from_millis(10)));
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RetryLayer {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryLayer {
    /// At most `max_attempts` calls (including the first), `backoff` between them.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            backoff,
        }
    }
}

impl Default for RetryLayer {
    /// 3 attempts, 500 ms x 1.5 with randomization 0.5 (Resilience4j's defaults).
    fn default() -> Self {
        Self::new(3, Backoff::default())
    }
}

impl<S> tower_layer::Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    max_attempts: u32,
    backoff: Backoff,
}

impl<S> Retry<S> {
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

impl<S> Service<EventContext> for Retry<S>
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
        let (max, backoff) = (self.max_attempts, self.backoff);
        Box::pin(async move {
            let mut attempt = 1;
            let mut result = inner.call(ctx.clone()).await;
            loop {
                match &result {
                    Err(e)
                        if attempt < max
                            && matches!(
                                e.kind(),
                                HandlerErrorKind::Transient | HandlerErrorKind::Timeout
                            ) =>
                    {
                        tracing::debug!(error = %e, attempt, "retrying handler");
                        tokio::time::sleep(backoff.delay(attempt)).await;
                        attempt += 1;
                        result = inner.ready().await?.call(ctx.clone()).await;
                    }
                    _ => return result,
                }
            }
        })
    }
}
