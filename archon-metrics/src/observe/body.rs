//! A response body that finishes a gRPC call when its trailers arrive.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Call, grpc_status};

pin_project! {
    /// The response body of [`ObserveServer`](crate::ObserveServer) and
    /// [`ObserveClient`](crate::ObserveClient): the inner body, unchanged. For gRPC it records the
    /// call when the `grpc-status` trailer passes (or as `CANCELLED` if dropped before).
    ///
    /// ```
    /// use http_body::Body as _;
    /// let body = archon_metrics::ObservedBody::new(String::from("hi"));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    #[derive(Debug)]
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B> ObservedBody<B> {
    /// Wraps a body with nothing to record.
    pub fn new(inner: B) -> Self {
        Self { inner, call: None }
    }

    pub(crate) fn with_call(inner: B, call: Call) -> Self {
        Self {
            inner,
            call: Some(call),
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The inner body (an unfinished gRPC call is recorded as `CANCELLED`).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.call.as_ref().and_then(Call::span).map(|s| s.enter());
        let polled = this.inner.poll_frame(cx);
        drop(_entered);
        if let Some(call) = this.call.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                        call.finish_grpc(code);
                        *this.call = None;
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    // The stream broke: for gRPC that is a transport failure.
                    call.finish_grpc(2);
                    *this.call = None;
                }
                Poll::Ready(None) => {
                    // Ended without a status trailer.
                    call.finish_grpc(2);
                    *this.call = None;
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
