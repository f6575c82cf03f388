//! How a handler fails, and what the router does about it.

use std::fmt;
use std::time::Duration;

use archon_core::BoxError;

/// What kind of failure a [`HandlerError`] is; it decides what the router does.
///
/// ```
/// use archon_events::router::{HandlerError, HandlerErrorKind};
/// assert_eq!(HandlerError::permanent("bad price").kind(), HandlerErrorKind::Permanent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerErrorKind {
    /// May work later: retried in process, then redelivered with a delay, then dead-lettered
    /// after the route's `max_deliveries`.
    Transient,
    /// Will never work: dead-lettered at once with the reason.
    Permanent,
    /// The payload could not be decoded or has an unexpected type: dead-lettered at once.
    Decode,
    /// The handler did not finish in time (timeout layer): treated as transient.
    Timeout,
    /// The handler panicked: nacked (redelivered), logged, never retried in process.
    Panic,
}

impl HandlerErrorKind {
    /// `error.type` value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Decode => "decode",
            Self::Timeout => "timeout",
            Self::Panic => "panic",
        }
    }

    /// Whether the event goes to the dead-letter topic at once.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Permanent | Self::Decode)
    }
}

/// A handler's failure: a kind and a cause. Any `std::error::Error` converts into a transient
/// one with `?`.
///
/// ```
/// use archon_events::router::HandlerError;
/// fn parse(raw: &str) -> Result<u32, HandlerError> {
///     Ok(raw.parse::<u32>()?) // a ParseIntError becomes a transient HandlerError
/// }
/// assert!(parse("x").is_err());
/// let permanent = HandlerError::permanent("order does not exist");
/// assert!(permanent.kind().is_permanent());
/// ```
pub struct HandlerError {
    kind: HandlerErrorKind,
    source: BoxError,
    retry_after: Option<Duration>,
}

impl HandlerError {
    /// A failure of `kind`.
    pub fn new(kind: HandlerErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: source.into(),
            retry_after: None,
        }
    }
    /// A failure that may go away (retried, redelivered, then dead-lettered).
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self::new(HandlerErrorKind::Transient, source)
    }
    /// A failure that never goes away (dead-lettered at once).
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self::new(HandlerErrorKind::Permanent, source)
    }
    /// Asks for redelivery after `delay` instead of the route's backoff.
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
    /// The kind.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }
    /// The delay asked for with [`with_retry_after`](Self::with_retry_after).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    /// The cause.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
    /// The cause, owned.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.source)
    }
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::transient(error)
    }
}
