//! The response future of [`ObserveServer`](super::ObserveServer) and
//! [`ObserveClient`](crate::ObserveClient).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::observe::{Call, ObservedBody, grpc_status};

pin_project! {
    /// Completes with the inner response (its body wrapped in [`ObservedBody`]) and records the
    /// call: HTTP when the response head arrives, gRPC when its status is known.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, call: Call) -> Self {
        Self {
            inner,
            call: Some(call),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: std::fmt::Display,
{
    type Output = Result<http::Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this.call.as_ref().and_then(Call::span).map(|s| s.enter());
        let polled = this.inner.poll(cx);
        drop(entered);
        let result = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        let Some(mut call) = this.call.take() else {
            return Poll::Ready(result.map(|r| r.map(ObservedBody::new)));
        };
        Poll::Ready(match result {
            Ok(response) => {
                if call.is_grpc() {
                    if let Some(code) = grpc_status(response.headers()) {
                        // Trailers-only response: the status is in the headers.
                        call.finish_grpc(code);
                        Ok(response.map(ObservedBody::new))
                    } else if response.status() != http::StatusCode::OK {
                        // Not a gRPC answer (a proxy error page): map as the gRPC spec does.
                        call.finish_grpc(http_to_grpc(response.status()));
                        Ok(response.map(ObservedBody::new))
                    } else {
                        Ok(response.map(|body| ObservedBody::with_call(body, call)))
                    }
                } else {
                    call.finish_http(response.status().as_u16());
                    Ok(response.map(ObservedBody::new))
                }
            }
            Err(error) => {
                call.finish_error(&error);
                Err(error)
            }
        })
    }
}

/// The gRPC code for a non-200 HTTP status, per gRPC's "HTTP to gRPC status code mapping".
fn http_to_grpc(status: http::StatusCode) -> i32 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}
