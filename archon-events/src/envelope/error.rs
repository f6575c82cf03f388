//! Why an envelope is not a valid CloudEvent.

/// Why an envelope or a wire message is not a valid CloudEvent. Decoding never panics: every
/// malformed input ends here.
///
/// ```
/// use archon_events::envelope::{Binding, Envelope, EnvelopeError, WireMessage};
/// let err = Envelope::from_wire(Binding::Http, WireMessage::default()).unwrap_err();
/// assert!(matches!(err, EnvelopeError::MissingAttribute("specversion")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A required context attribute is absent or empty.
    #[error("required attribute `{0}` is missing")]
    MissingAttribute(&'static str),
    /// `specversion` is not `1.0`.
    #[error("unsupported specversion `{0}` (only 1.0 is supported)")]
    UnsupportedSpecVersion(String),
    /// An attribute or extension has a bad name or value.
    #[error("invalid attribute `{name}`: {reason}")]
    InvalidAttribute {
        /// The attribute.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A free-form header has a bad name or value.
    #[error("invalid header `{name}`: {reason}")]
    InvalidHeader {
        /// The header.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A structured-mode body is not a CloudEvents JSON object.
    #[error("malformed structured event: {0}")]
    Malformed(String),
}

impl EnvelopeError {
    pub(crate) fn invalid_attribute(name: &str, reason: &'static str) -> Self {
        Self::InvalidAttribute {
            name: truncate(name),
            reason,
        }
    }
    pub(crate) fn invalid_header(name: &str, reason: &'static str) -> Self {
        Self::InvalidHeader {
            name: truncate(name),
            reason,
        }
    }
}

fn truncate(name: &str) -> String {
    name.chars().take(64).collect()
}
