//! Which requests may be sent again.

use http::Method;

/// The header that makes any request safe to retry.
///
/// ```
/// use archon_client::retry::{IDEMPOTENCY_KEY, RetryRequest};
///
/// let post = http::Request::post("/orders").body(()).unwrap();
/// assert!(!post.is_idempotent());
/// let keyed = http::Request::post("/orders")
///     .header(IDEMPOTENCY_KEY, "order-42")
///     .body(())
///     .unwrap();
/// assert!(keyed.is_idempotent());
/// ```
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A request the retry policy (and hedging) may send more than once.
///
/// Implemented for `http::Request<B>` with a cloneable body (buffer streaming bodies first) and,
/// with the `http` feature, for `reqwest::Request` (whose streaming bodies cannot be cloned).
///
/// ```
/// use archon_client::retry::RetryRequest;
/// struct Query(String);
/// impl RetryRequest for Query {
///     fn is_idempotent(&self) -> bool { true }
///     fn try_clone(&self) -> Option<Self> { Some(Query(self.0.clone())) }
/// }
/// assert!(Query("x".into()).try_clone().is_some());
/// ```
pub trait RetryRequest: Sized {
    /// Whether sending the request twice is as good as sending it once.
    fn is_idempotent(&self) -> bool;

    /// A copy to send again, or `None` when the request (its body) cannot be replayed.
    fn try_clone(&self) -> Option<Self>;
}

/// HTTP: GET, HEAD, OPTIONS, PUT, DELETE and TRACE are idempotent, and so is any request with an
/// `Idempotency-Key` header. gRPC calls (`content-type: application/grpc...`) count as
/// idempotent here: for them the configured retryable status codes decide.
pub(crate) fn http_is_idempotent(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
        || headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<B: Clone> RetryRequest for http::Request<B> {
    fn is_idempotent(&self) -> bool {
        http_is_idempotent(self.method(), self.headers())
    }

    fn try_clone(&self) -> Option<Self> {
        let mut req = http::Request::new(self.body().clone());
        *req.method_mut() = self.method().clone();
        *req.uri_mut() = self.uri().clone();
        *req.version_mut() = self.version();
        *req.headers_mut() = self.headers().clone();
        *req.extensions_mut() = self.extensions().clone();
        Some(req)
    }
}

#[cfg(feature = "http")]
impl RetryRequest for reqwest::Request {
    fn is_idempotent(&self) -> bool {
        http_is_idempotent(self.method(), self.headers())
    }

    fn try_clone(&self) -> Option<Self> {
        reqwest::Request::try_clone(self)
    }
}
