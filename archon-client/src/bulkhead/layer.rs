//! [`BulkheadLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use super::{Bulkhead, BulkheadConfig, Shared};

/// Wraps services in a [`Bulkhead`]. All services built by one layer share its slots.
///
/// ```
/// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
/// let layer = BulkheadLayer::new("inventory", BulkheadConfig::default());
/// assert_eq!(layer.available_permits(), 25);
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl BulkheadLayer {
    /// A bulkhead named `name` (metrics label).
    pub fn new(name: &str, config: BulkheadConfig) -> Self {
        let max = config.max_concurrent.clamp(1, usize::MAX / 2);
        use crate::metric_names as n;
        let shared = Shared::new(
            max,
            config.max_wait,
            metrics::gauge!(n::BULKHEAD_PERMITS_IN_USE, n::POLICY_NAME => name.to_owned()),
            metrics::counter!(n::BULKHEAD_REJECTED_CALLS, n::POLICY_NAME => name.to_owned()),
        );
        metrics::gauge!(n::BULKHEAD_PERMITS_LIMIT, n::POLICY_NAME => name.to_owned())
            .set(max as f64);
        shared.report();
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Slots free now.
    pub fn available_permits(&self) -> usize {
        self.shared.available()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::from_shared(inner, self.shared.clone())
    }
}
