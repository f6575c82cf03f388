//! The one public error of the crate.

use std::time::Duration;

use archon_core::BoxError;

use crate::codec::CodecError;
use crate::envelope::EnvelopeError;

/// What went wrong, by meaning. Every backend maps its own failures onto these variants, so
/// callers match on meaning and never on the backend.
///
/// ```
/// use archon_events::Error;
/// let err = Error::TooLarge { size: 2 << 20, limit: 1 << 20 };
/// assert!(matches!(err, Error::TooLarge { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The topic, group or subscription does not exist (where the backend cannot create it).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The bus, publisher or subscription was closed.
    #[error("the event bus is closed")]
    Closed,
    /// An operation did not finish in time (for example a publish held back by a full buffer).
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out (`"publish"`, `"ack"`, ...).
        operation: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The backend does not offer this feature (see its [`Features`](crate::Features)).
    #[error("not supported by this backend: {feature}")]
    NotSupported {
        /// The missing feature.
        feature: &'static str,
    },
    /// The event could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The envelope is not a valid CloudEvent or carries invalid headers.
    #[error(transparent)]
    InvalidEvent(#[from] EnvelopeError),
    /// The event is larger than the configured limit (1 MiB by default).
    #[error("event of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size of the event.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The delivery was already acknowledged, rejected or dead-lettered.
    #[error("the delivery was already settled")]
    AlreadySettled,
    /// A broker-specific failure.
    #[error("{backend} backend: {source}")]
    Backend {
        /// Which backend (`"nats"`, `"redis"`, ...).
        backend: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A backend failure.
    ///
    /// ```
    /// let err = archon_events::Error::backend("nats", std::io::Error::other("reset"));
    /// assert!(err.to_string().contains("nats"));
    /// ```
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Whether retrying the same call later may succeed (timeouts and backend failures).
    ///
    /// ```
    /// assert!(!archon_events::Error::Closed.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Backend { .. })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
