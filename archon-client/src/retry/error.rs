//! Errors of the retry policy.

use std::fmt;

use archon_core::BoxError;

/// A retry was wanted but the retry budget was empty, so the last attempt's result stands.
///
/// On an error result it wraps the last error (its [`source`](std::error::Error::source));
/// on an HTTP response it is put in the response's extensions.
///
/// ```
/// use archon_client::retry::BudgetExhausted;
/// let resp = http::Response::new(());
/// assert!(resp.extensions().get::<BudgetExhausted>().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct BudgetExhausted {
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl BudgetExhausted {
    pub(crate) fn new(cause: Option<BoxError>) -> Self {
        Self {
            cause: cause.map(std::sync::Arc::from),
        }
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "retry budget exhausted; last attempt failed: {cause}"),
            None => f.write_str("retry budget exhausted"),
        }
    }
}

impl std::error::Error for BudgetExhausted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
