//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::{CircuitBreakerError, CircuitOpen};
use super::state::Permit;
use crate::classify::Classifier;

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] inner: F, permit: Option<Permit> },
        Rejected { open: Option<CircuitOpen> },
    }
}

pin_project! {
    /// Waits for the inner call and records its outcome; resolves at once when the breaker
    /// rejected the call. Dropping it before completion counts as a cancelled call (neither
    /// success nor failure).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(inner: F, permit: Permit, classifier: C) -> Self {
        Self {
            state: State::Called {
                inner,
                permit: Some(permit),
            },
            classifier,
        }
    }

    #[inline]
    pub(crate) fn rejected(open: CircuitOpen, classifier: C) -> Self {
        Self {
            state: State::Rejected { open: Some(open) },
            classifier,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
{
    type Output = Result<T, CircuitBreakerError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { inner, permit } => {
                let result = ready!(inner.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(this.classifier.classify(&result));
                }
                Poll::Ready(result.map_err(CircuitBreakerError::Inner))
            }
            StateProj::Rejected { open } => Poll::Ready(Err(CircuitBreakerError::Open(
                open.take()
                    .unwrap_or_else(|| CircuitOpen::new(super::CircuitState::Open, None)),
            ))),
        }
    }
}
