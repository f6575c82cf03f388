//! The layer that applies [`ObserveServer`].

use tower_layer::Layer;

use super::ObserveServer;

/// Applies [`ObserveServer`]: RED metrics and a server span for every request, on axum or tonic.
///
/// ```
/// use archon_metrics::ObserveServerLayer;
/// let app: axum::Router = axum::Router::new()
///     .route("/users/{id}", axum::routing::get(|| async { "ok" }))
///     .layer(ObserveServerLayer::new());
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ObserveServerLayer {
    pub(super) metrics: bool,
    pub(super) tracing: bool,
}

impl ObserveServerLayer {
    /// Metrics and spans on.
    pub fn new() -> Self {
        Self {
            metrics: true,
            tracing: true,
        }
    }

    /// Turns the duration histograms on or off (default on).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Turns the server spans (and incoming trace context) on or off (default on).
    #[must_use]
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }
}

impl Default for ObserveServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ObserveServerLayer {
    type Service = ObserveServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveServer {
            inner,
            config: *self,
        }
    }
}
