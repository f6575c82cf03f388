//! [`BulkheadFull`].

use std::fmt;

/// Every slot of the bulkhead was taken (and stayed taken for `max_wait`).
///
/// ```
/// let err: archon_core::BoxError = archon_client::bulkhead::BulkheadFull::new().into();
/// assert!(err.is::<archon_client::bulkhead::BulkheadFull>());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkheadFull(());

impl BulkheadFull {
    /// The marker (for tests and custom services that reject the same way).
    ///
    /// ```
    /// use archon_client::bulkhead::BulkheadFull;
    /// let err: archon_core::BoxError = BulkheadFull::new().into();
    /// assert_eq!(err.to_string(), "bulkhead full: too many concurrent calls");
    /// assert_eq!(err.downcast_ref::<BulkheadFull>(), Some(&BulkheadFull::new()));
    /// ```
    pub fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bulkhead full: too many concurrent calls")
    }
}

impl std::error::Error for BulkheadFull {}
