//! Deciding whether a result is worth another attempt.

use std::time::{Duration, SystemTime};

use archon_core::BoxError;
use http::{HeaderMap, StatusCode};

use super::error::BudgetExhausted;
use crate::circuit_breaker::{CircuitBreakerError, CircuitOpen};

/// What to do after one attempt.
///
/// ```
/// use archon_client::retry::RetryAction;
/// assert_ne!(RetryAction::Success, RetryAction::Retry);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Done, and it went well (earns retry budget on a first attempt).
    Success,
    /// Done: a failure that another attempt would not fix (a 4xx, an open circuit).
    Fail,
    /// Worth another attempt after the usual backoff.
    Retry,
    /// Worth another attempt, not before this delay (the server said so).
    RetryAfter(Duration),
}

/// An error type the default retry classifier understands.
///
/// ```
/// use archon_client::retry::RetryableError;
/// let e: archon_core::BoxError = "connection reset".into();
/// assert!(e.is_retryable());
/// ```
pub trait RetryableError {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;

    /// Marks the error as the last one of a call whose retry the budget refused. The
    /// default leaves it alone; `BoxError` wraps it in [`BudgetExhausted`].
    fn mark_budget_exhausted(&mut self) {}
}

impl RetryableError for BoxError {
    fn is_retryable(&self) -> bool {
        !(self.is::<CircuitOpen>()
            || self.is::<crate::bulkhead::BulkheadFull>()
            || self.is::<crate::rate_limit::RateLimited>()
            || self.is::<crate::timeout::DeadlineExceeded>()
            || self.is::<BudgetExhausted>())
    }

    fn mark_budget_exhausted(&mut self) {
        let cause = std::mem::replace(self, Box::new(BudgetExhausted::new(None)));
        *self = Box::new(BudgetExhausted::new(Some(cause)));
    }
}

impl<E: RetryableError> RetryableError for CircuitBreakerError<E> {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Open(_) => false,
            Self::Inner(e) => e.is_retryable(),
        }
    }

    fn mark_budget_exhausted(&mut self) {
        if let Self::Inner(e) = self {
            e.mark_budget_exhausted();
        }
    }
}

impl RetryableError for std::convert::Infallible {
    fn is_retryable(&self) -> bool {
        false
    }
}

impl RetryableError for std::io::Error {
    fn is_retryable(&self) -> bool {
        true
    }
}

#[cfg(feature = "http")]
impl RetryableError for reqwest::Error {
    fn is_retryable(&self) -> bool {
        self.is_connect() || self.is_timeout() || self.is_request()
    }
}

/// Decides, from one attempt's result, whether to retry.
///
/// Any `Fn(&Result<Res, E>) -> RetryAction` closure is a classifier:
///
/// ```
/// use archon_client::retry::{RetryAction, RetryClassifier};
/// let c = |r: &Result<u16, ()>| match r {
///     Ok(503) | Err(_) => RetryAction::Retry,
///     Ok(_) => RetryAction::Success,
/// };
/// assert_eq!(c.classify(&Ok(503)), RetryAction::Retry);
/// ```
pub trait RetryClassifier<Res, E>: Clone {
    /// What to do after this result.
    fn classify(&self, result: &Result<Res, E>) -> RetryAction;

    /// Called when a retry was wanted but the budget refused it, to mark the result. The
    /// default does nothing.
    fn on_budget_exhausted(&self, result: &mut Result<Res, E>) {
        let _ = result;
    }
}

impl<F, Res, E> RetryClassifier<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> RetryAction + Clone,
{
    fn classify(&self, result: &Result<Res, E>) -> RetryAction {
        self(result)
    }
}

/// The default: retry retryable errors (transport, per-attempt timeout; not an open circuit, a
/// full bulkhead, a rate limit or the overall deadline), HTTP 408, 429 and 5xx except 501,
/// and gRPC responses whose status is one of the configured codes (default `UNAVAILABLE`).
/// Honours `Retry-After` (seconds or HTTP-date) and `grpc-retry-pushback-ms` (a negative or
/// malformed pushback means do not retry).
///
/// ```
/// use std::time::Duration;
/// use archon_client::retry::{DefaultRetryClassifier, RetryAction, RetryClassifier};
/// let resp = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let r: Result<_, archon_core::BoxError> = Ok(resp);
/// assert_eq!(DefaultRetryClassifier::default().classify(&r), RetryAction::RetryAfter(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRetryClassifier {
    /// Bit `n` set = gRPC code `n` is retryable.
    grpc_codes: u32,
}

impl Default for DefaultRetryClassifier {
    fn default() -> Self {
        Self {
            grpc_codes: 1 << 14,
        }
    }
}

impl DefaultRetryClassifier {
    /// Retries gRPC responses with these status codes (numbers 0-16; others are ignored).
    ///
    /// ```
    /// use archon_client::retry::{DefaultRetryClassifier, RetryAction, RetryClassifier};
    /// let grpc = |code: &str| -> Result<_, archon_core::BoxError> {
    ///     Ok(http::Response::builder().header("grpc-status", code).body(()).unwrap())
    /// };
    /// let classifier = DefaultRetryClassifier::with_grpc_codes([14, 8]); // UNAVAILABLE, RESOURCE_EXHAUSTED
    /// assert_eq!(classifier.classify(&grpc("8")), RetryAction::Retry);
    /// assert_eq!(classifier.classify(&grpc("13")), RetryAction::Fail); // INTERNAL
    /// ```
    pub fn with_grpc_codes(codes: impl IntoIterator<Item = i32>) -> Self {
        Self {
            grpc_codes: codes
                .into_iter()
                .filter(|c| (0..=16).contains(c))
                .fold(0, |acc, c| acc | (1 << c)),
        }
    }

    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> RetryAction {
        if let Some(code) = crate::classify::grpc_status(headers) {
            if code == 0 {
                return RetryAction::Success;
            }
            if !(0..=16).contains(&code) || self.grpc_codes & (1 << code) == 0 {
                return RetryAction::Fail;
            }
            return match headers.get("grpc-retry-pushback-ms") {
                None => RetryAction::Retry,
                Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                    Some(ms) => RetryAction::RetryAfter(Duration::from_millis(ms)),
                    None => RetryAction::Fail,
                },
            };
        }
        let retryable = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
        if !retryable {
            return if status.is_success() || status.is_redirection() || status.is_informational() {
                RetryAction::Success
            } else {
                RetryAction::Fail
            };
        }
        match headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
        {
            Some(value) => match parse_retry_after(value, SystemTime::now()) {
                Some(delay) => RetryAction::RetryAfter(delay),
                None => RetryAction::Retry,
            },
            None => RetryAction::Retry,
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (a date in the past means now); `None`
/// when it is neither.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// let parse = archon_client::retry::parse_retry_after;
/// assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
/// assert_eq!(parse("Sun, 06 Nov 1994 08:40:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(parse("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl<B, E: RetryableError> RetryClassifier<http::Response<B>, E> for DefaultRetryClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> RetryAction {
        match result {
            Ok(resp) => self.classify_response(resp.status(), resp.headers()),
            Err(e) if e.is_retryable() => RetryAction::Retry,
            Err(_) => RetryAction::Fail,
        }
    }

    fn on_budget_exhausted(&self, result: &mut Result<http::Response<B>, E>) {
        match result {
            Ok(resp) => {
                resp.extensions_mut().insert(BudgetExhausted::new(None));
            }
            Err(e) => e.mark_budget_exhausted(),
        }
    }
}

#[cfg(feature = "http")]
impl<E: RetryableError> RetryClassifier<reqwest::Response, E> for DefaultRetryClassifier {
    fn classify(&self, result: &Result<reqwest::Response, E>) -> RetryAction {
        match result {
            Ok(resp) => self.classify_response(resp.status(), resp.headers()),
            Err(e) if e.is_retryable() => RetryAction::Retry,
            Err(_) => RetryAction::Fail,
        }
    }

    fn on_budget_exhausted(&self, result: &mut Result<reqwest::Response, E>) {
        match result {
            Ok(resp) => {
                resp.extensions_mut().insert(BudgetExhausted::new(None));
            }
            Err(e) => e.mark_budget_exhausted(),
        }
    }
}
