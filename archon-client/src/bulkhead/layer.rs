//! [`BulkheadLayer`].

use std::sync::Arc;

use tokio::sync::Semaphore;
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
        let max = config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Shared {
            semaphore: Arc::new(Semaphore::new(max)),
            max_wait: config.max_wait,
            gauge: metrics::gauge!("archon_client_bulkhead_available_permits", "bulkhead" => name.to_owned()),
        };
        shared.report();
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Slots free now.
    pub fn available_permits(&self) -> usize {
        self.shared.semaphore.available_permits()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::from_shared(inner, self.shared.clone())
    }
}
