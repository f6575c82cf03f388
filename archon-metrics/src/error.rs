//! The crate's error type.

/// What can go wrong setting up metrics or tracing.
///
/// ```
/// let error = archon_metrics::Error::AlreadyInstalled { what: "metrics recorder" };
/// assert!(error.to_string().contains("already installed"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A global recorder, tracer provider or subscriber was already set for this process.
    #[error("a global {what} is already installed")]
    AlreadyInstalled {
        /// What was already installed.
        what: &'static str,
    },
    /// A configuration value is invalid (for example empty or unsorted histogram buckets).
    #[error("invalid observability setting `{key}`: {reason}")]
    Config {
        /// The setting (or environment variable) at fault.
        key: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The span exporter could not be built (a bad `OTEL_EXPORTER_OTLP_*` value, no runtime...).
    #[error("cannot build the span exporter: {0}")]
    Exporter(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Flushing or shutting down the tracer provider failed; spans may have been lost.
    #[error("tracer shutdown failed: {0}")]
    Shutdown(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
