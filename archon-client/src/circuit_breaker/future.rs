//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::{CircuitBreakerError, CircuitOpen};
use super::state::Permit;
use crate::classify::Classifier;

/// What the breaker said when the call was made.
#[derive(Debug)]
enum Admission {
    /// Admitted: the outcome is recorded with this permit.
    Permit(Permit),
    /// Rejected.
    Open(CircuitOpen),
    /// The outcome is recorded.
    Recorded,
}

pin_project! {
    /// Waits for the inner call and records its outcome; resolves at once when the breaker
    /// rejected the call. Dropping it before completion counts as a cancelled call (neither
    /// success nor failure).
    ///
    /// ```
    /// use archon_client::DefaultClassifier;
    /// use archon_client::circuit_breaker::future::ResponseFuture;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = CircuitBreakerLayer::new("svc", CircuitBreakerConfig::default()).unwrap();
    /// let mut svc = layer.layer(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }));
    /// let fut: ResponseFuture<_, DefaultClassifier> = svc.ready().await.unwrap().call(());
    /// drop(fut); // cancelled: neither a success nor a failure
    /// assert_eq!(layer.handle().metrics().calls, 0);
    /// svc.ready().await.unwrap().call(()).await.unwrap();
    /// assert_eq!(layer.handle().metrics().calls, 1);
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        // `None` when the breaker rejected the call. A flat struct rather than an enum of
        // states: building it moves the inner future once (an enum around it costs a copy of
        // the whole inner future on every call).
        #[pin]
        inner: Option<F>,
        admission: Admission,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(inner: F, permit: Permit, classifier: C) -> Self {
        Self {
            inner: Some(inner),
            admission: Admission::Permit(permit),
            classifier,
        }
    }

    #[inline]
    pub(crate) fn rejected(open: CircuitOpen, classifier: C) -> Self {
        Self {
            inner: None,
            admission: Admission::Open(open),
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
        let Some(inner) = this.inner.as_pin_mut() else {
            let open = match this.admission {
                Admission::Open(open) => *open,
                _ => CircuitOpen::new(super::CircuitState::Open, None),
            };
            return Poll::Ready(Err(CircuitBreakerError::Open(open)));
        };
        let result = ready!(inner.poll(cx));
        if let Admission::Permit(permit) = std::mem::replace(this.admission, Admission::Recorded) {
            permit.record(this.classifier.classify(&result));
        }
        Poll::Ready(result.map_err(CircuitBreakerError::Inner))
    }
}
