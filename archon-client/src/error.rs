//! The one public error of the high-level clients.

use std::fmt;
use std::sync::Arc;

use archon_core::BoxError;

use crate::balance::NoEndpoints;
use crate::bulkhead::BulkheadFull;
use crate::circuit_breaker::CircuitOpen;
use crate::rate_limit::RateLimited;
use crate::retry::BudgetExhausted;
use crate::timeout::DeadlineExceeded;

/// `Result` with [`Error`] as the default error type.
///
/// ```
/// fn parse_port(s: &str) -> archon_client::Result<u16> {
///     s.parse().map_err(|e: std::num::ParseIntError| {
///         archon_client::Error::from_boxed(e.into())
///     })
/// }
/// assert_eq!(parse_port("8080").unwrap(), 8080);
/// assert!(parse_port("http").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for matching. New kinds may be added.
///
/// ```
/// use archon_client::ErrorKind;
/// assert!(ErrorKind::Status(503).is_server_error());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A per-attempt timeout or the overall deadline passed.
    Timeout,
    /// The circuit breaker is open: the call was not made.
    CircuitOpen,
    /// The bulkhead was full: the call was not made.
    BulkheadFull,
    /// The client-side rate limit refused the call.
    RateLimited,
    /// A retry was wanted but the retry budget was empty.
    BudgetExhausted,
    /// The server answered with this non-success HTTP status.
    Status(u16),
    /// Connecting, sending or receiving failed.
    Transport,
    /// The response body could not be decoded.
    Decode,
    /// The request could not be built (bad URL, header or body).
    InvalidRequest,
    /// No upstream has this name.
    UnknownUpstream,
    /// The client configuration is invalid.
    Config,
    /// A balanced upstream has no endpoint (an empty DNS answer or a failed resolution).
    NoEndpoints,
}

impl ErrorKind {
    /// Whether this is `Status(5xx)`.
    ///
    /// ```
    /// use archon_client::ErrorKind;
    /// assert!(ErrorKind::Status(503).is_server_error());
    /// assert!(!ErrorKind::Status(404).is_server_error());
    /// assert!(!ErrorKind::Timeout.is_server_error());
    /// ```
    pub fn is_server_error(self) -> bool {
        matches!(self, Self::Status(s) if (500..600).contains(&s))
    }
}

/// The error of the HTTP client (`http::HttpClient`) and the gRPC helpers:
/// opaque, with a [`kind`](Self::kind) to match on and the cause as its `source()`.
///
/// ```
/// use archon_client::{Error, ErrorKind};
/// let err = Error::from_boxed(Box::new(archon_client::bulkhead::BulkheadFull::new()));
/// assert_eq!(err.kind(), ErrorKind::BulkheadFull);
/// assert!(!err.is_retryable());
/// ```
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    context: Option<Arc<str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            context: None,
            source: None,
        }
    }

    #[cfg_attr(not(any(feature = "http", feature = "grpc")), allow(dead_code))]
    pub(crate) fn with_context(mut self, context: impl Into<Arc<str>>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub(crate) fn with_source(mut self, source: BoxError) -> Self {
        self.source = Some(Arc::from(source));
        self
    }

    /// Classifies an error from a tower stack: the layers' markers (open circuit, full
    /// bulkhead, rate limit, budget, deadline), tower's timeout, reqwest's errors.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{Error, ErrorKind, rate_limit::RateLimited};
    ///
    /// let err = Error::from_boxed(Box::new(RateLimited::new(Duration::from_millis(50))));
    /// assert_eq!(err.kind(), ErrorKind::RateLimited);
    /// let err = Error::from_boxed(Box::new(tower::timeout::error::Elapsed::new()));
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// // A cause it does not recognise counts as a transport failure.
    /// let err = Error::from_boxed(std::io::Error::other("connection reset").into());
    /// assert_eq!(err.kind(), ErrorKind::Transport);
    /// ```
    pub fn from_boxed(err: BoxError) -> Self {
        let kind = kind_of(&*err);
        Self::new(kind).with_source(err)
    }

    /// What went wrong.
    ///
    /// ```
    /// use archon_client::{Error, ErrorKind, timeout::DeadlineExceeded};
    /// let err = Error::from_boxed(Box::new(DeadlineExceeded::new()));
    /// match err.kind() {
    ///     ErrorKind::Timeout => {} // the overall deadline passed
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed: timeouts, transport failures, rate limits, and
    /// HTTP 408, 429 and 5xx except 501. An open circuit, a full bulkhead and an exhausted
    /// budget are not: they say to back off.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{Error, bulkhead::BulkheadFull, rate_limit::RateLimited};
    /// let limited = Error::from_boxed(Box::new(RateLimited::new(Duration::from_millis(10))));
    /// assert!(limited.is_retryable());
    /// let full = Error::from_boxed(Box::new(BulkheadFull::new()));
    /// assert!(!full.is_retryable()); // back off instead
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Timeout
            | ErrorKind::Transport
            | ErrorKind::RateLimited
            | ErrorKind::NoEndpoints => true,
            ErrorKind::Status(s) => s == 408 || s == 429 || (s >= 500 && s != 501 && s < 600),
            _ => false,
        }
    }

    /// Whether the call was refused by a client-side guard (breaker, bulkhead, rate limit,
    /// budget) rather than failed at the server.
    ///
    /// ```
    /// use archon_client::{Error, bulkhead::BulkheadFull};
    /// assert!(Error::from_boxed(Box::new(BulkheadFull::new())).is_rejected());
    /// let failed = Error::from_boxed(std::io::Error::other("connection reset").into());
    /// assert!(!failed.is_rejected());
    /// ```
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::CircuitOpen | ErrorKind::BulkheadFull | ErrorKind::RateLimited
        )
    }

    /// The HTTP status, for `Status` errors.
    ///
    /// ```
    /// use archon_client::{Error, bulkhead::BulkheadFull};
    /// # #[cfg(feature = "http")] {
    /// let resp = reqwest::Response::from(http::Response::builder().status(503).body("").unwrap());
    /// let err = Error::from_boxed(resp.error_for_status().unwrap_err().into());
    /// assert_eq!(err.status(), Some(503));
    /// # }
    /// assert_eq!(Error::from_boxed(Box::new(BulkheadFull::new())).status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The circuit breaker's rejection, with its remaining wait, when the circuit was open.
    ///
    /// ```
    /// use archon_client::{Error, ErrorKind, circuit_breaker::CircuitBreakerHandle};
    /// let breaker = CircuitBreakerHandle::new("inventory", Default::default()).unwrap();
    /// breaker.force_open();
    /// let err = Error::from_boxed(Box::new(breaker.try_acquire().unwrap_err()));
    /// assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    /// assert_eq!(err.circuit_open().unwrap().remaining_wait(), None); // forced open: no known wait
    /// ```
    pub fn circuit_open(&self) -> Option<&CircuitOpen> {
        self.source.as_deref().and_then(|e| e.downcast_ref())
    }
}

fn kind_of(err: &(dyn std::error::Error + 'static)) -> ErrorKind {
    if err.is::<CircuitOpen>() {
        return ErrorKind::CircuitOpen;
    }
    if err.is::<BulkheadFull>() {
        return ErrorKind::BulkheadFull;
    }
    if err.is::<RateLimited>() {
        return ErrorKind::RateLimited;
    }
    if err.is::<BudgetExhausted>() {
        return ErrorKind::BudgetExhausted;
    }
    if err.is::<NoEndpoints>() {
        return ErrorKind::NoEndpoints;
    }
    if err.is::<DeadlineExceeded>() || err.is::<tower::timeout::error::Elapsed>() {
        return ErrorKind::Timeout;
    }
    #[cfg(feature = "http")]
    if let Some(e) = err.downcast_ref::<reqwest::Error>() {
        if e.is_timeout() {
            return ErrorKind::Timeout;
        }
        if e.is_decode() {
            return ErrorKind::Decode;
        }
        if e.is_builder() {
            return ErrorKind::InvalidRequest;
        }
        if let Some(status) = e.status() {
            return ErrorKind::Status(status.as_u16());
        }
        return ErrorKind::Transport;
    }
    #[cfg(feature = "grpc")]
    if let Some(e) = err.downcast_ref::<tonic::transport::Error>() {
        let _ = e;
        return ErrorKind::Transport;
    }
    match err.source() {
        Some(inner) => kind_of(inner),
        None => ErrorKind::Transport,
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Timeout => f.write_str("timed out")?,
            ErrorKind::CircuitOpen => f.write_str("circuit open")?,
            ErrorKind::BulkheadFull => f.write_str("bulkhead full")?,
            ErrorKind::RateLimited => f.write_str("rate limited")?,
            ErrorKind::BudgetExhausted => f.write_str("retry budget exhausted")?,
            ErrorKind::Status(s) => write!(f, "HTTP status {s}")?,
            ErrorKind::Transport => f.write_str("transport error")?,
            ErrorKind::Decode => f.write_str("cannot decode the response")?,
            ErrorKind::InvalidRequest => f.write_str("invalid request")?,
            ErrorKind::UnknownUpstream => f.write_str("unknown upstream")?,
            ErrorKind::Config => f.write_str("invalid client configuration")?,
            ErrorKind::NoEndpoints => f.write_str("no endpoint available")?,
        }
        if let Some(context) = &self.context {
            write!(f, " ({context})")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
