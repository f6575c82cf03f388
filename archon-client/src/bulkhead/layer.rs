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
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
    /// let cfg = BulkheadConfig { max_concurrent: 8, max_wait: Duration::ZERO };
    /// assert_eq!(BulkheadLayer::new("db", cfg).available_permits(), 8);
    /// // At least one slot:
    /// let cfg = BulkheadConfig { max_concurrent: 0, ..cfg };
    /// assert_eq!(BulkheadLayer::new("db", cfg).available_permits(), 1);
    /// ```
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
    ///
    /// ```
    /// use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = BulkheadLayer::new("db", BulkheadConfig { max_concurrent: 3, ..Default::default() });
    /// let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, archon_core::BoxError>(()) }));
    /// let call = svc.ready().await.unwrap().call(()); // takes a slot
    /// assert_eq!(layer.available_permits(), 2);
    /// call.await.unwrap();
    /// assert_eq!(layer.available_permits(), 3);
    /// # }
    /// ```
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
