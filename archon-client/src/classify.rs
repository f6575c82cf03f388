//! Deciding whether a call succeeded, for the circuit breaker.

use http::StatusCode;

/// What one call means for a circuit breaker.
///
/// ```
/// use archon_client::Outcome;
/// assert_ne!(Outcome::Success, Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Counts towards the success side of the rates.
    Success,
    /// Counts towards the failure rate.
    Failure,
    /// Counts as neither (a cancelled call, or an error the caller chose to ignore).
    Ignored,
}

/// Decides whether a call's result is a success, a failure or ignored.
///
/// Any `Fn(&Result<Res, E>) -> Outcome` closure is a classifier:
///
/// ```
/// use archon_client::{Classifier, Outcome};
/// let only_timeouts = |r: &Result<u32, std::io::Error>| match r {
///     Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::Failure,
///     Err(_) => Outcome::Ignored,
///     Ok(_) => Outcome::Success,
/// };
/// assert_eq!(only_timeouts.classify(&Ok(1)), Outcome::Success);
/// ```
pub trait Classifier<Res, E>: Clone + Send + Sync + 'static {
    /// The meaning of `result`.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<F, Res, E> Classifier<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome + Clone + Send + Sync + 'static,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// Every error is a failure, every response a success: for services that are not HTTP or
/// gRPC.
///
/// ```
/// use archon_client::{Classifier, ErrorIsFailure, Outcome};
/// assert_eq!(ErrorIsFailure.classify(&Err::<(), _>("down")), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorIsFailure;

impl<Res, E> Classifier<Res, E> for ErrorIsFailure {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// The default for HTTP and gRPC: errors (transport, timeout) are failures; HTTP 5xx except
/// 501 and 429 are failures; other 4xx are successes (the server is healthy, the request was
/// wrong); a `grpc-status` of `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
/// `INTERNAL`, `UNKNOWN` or `DATA_LOSS` is a failure.
///
/// ```
/// use archon_client::{Classifier, DefaultClassifier, Outcome};
/// let resp = http::Response::builder().status(503).body(()).unwrap();
/// assert_eq!(DefaultClassifier.classify(&Ok::<_, std::io::Error>(resp)), Outcome::Failure);
/// let resp = http::Response::builder().status(404).body(()).unwrap();
/// assert_eq!(DefaultClassifier.classify(&Ok::<_, std::io::Error>(resp)), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

/// An HTTP status that the breaker counts as a failure.
pub(crate) fn status_is_failure(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// gRPC codes that mean the server (not the request) is in trouble.
pub(crate) fn grpc_code_is_failure(code: i32) -> bool {
    // UNKNOWN 2, DEADLINE_EXCEEDED 4, RESOURCE_EXHAUSTED 8, INTERNAL 13, UNAVAILABLE 14,
    // DATA_LOSS 15.
    matches!(code, 2 | 4 | 8 | 13 | 14 | 15)
}

#[inline]
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    if headers.is_empty() {
        // Spares parsing the header name (and a call) on the hot path.
        return None;
    }
    grpc_status_header(headers)
}

fn grpc_status_header(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn classify_http(status: StatusCode, headers: &http::HeaderMap) -> Outcome {
    if status_is_failure(status) {
        return Outcome::Failure;
    }
    match grpc_status(headers) {
        Some(code) if grpc_code_is_failure(code) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

impl<B, E> Classifier<http::Response<B>, E> for DefaultClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(resp) => classify_http(resp.status(), resp.headers()),
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(feature = "http")]
impl<E> Classifier<reqwest::Response, E> for DefaultClassifier {
    fn classify(&self, result: &Result<reqwest::Response, E>) -> Outcome {
        match result {
            Ok(resp) => classify_http(resp.status(), resp.headers()),
            Err(_) => Outcome::Failure,
        }
    }
}
