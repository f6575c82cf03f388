//! The layer that applies [`ObserveClient`].

use tower_layer::Layer;

use super::ObserveClient;
use crate::observe::Peer;

/// Applies [`ObserveClient`]: RED metrics, a client span and trace-context injection for every
/// outgoing request, over any `tower::Service<http::Request<B>>` (a tonic `Channel`, a reqwest
/// tower adapter, archon-client's stack).
///
/// ```
/// use archon_metrics::ObserveClientLayer;
/// let layer = ObserveClientLayer::new().with_server("orders.internal", 50051);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct ObserveClientLayer {
    pub(super) metrics: bool,
    pub(super) tracing: bool,
    pub(super) peer: Option<Peer>,
}

impl ObserveClientLayer {
    /// Metrics and spans on; `server.address`/`server.port` taken from each request's URI.
    pub fn new() -> Self {
        Self {
            metrics: true,
            tracing: true,
            peer: None,
        }
    }

    /// The peer every request goes to, when request URIs carry only a path (as tonic's do
    /// above its `Channel`). Set once, so recording costs no allocation for these labels.
    #[must_use]
    pub fn with_server(mut self, address: impl Into<String>, port: u16) -> Self {
        self.peer = Some(Peer {
            address: Some(crate::observe::shared(Into::<String>::into(address))),
            port: Some(crate::observe::shared(port.to_string())),
        });
        self
    }

    /// Turns the duration histograms on or off (default on).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Turns the client spans (and trace-context injection) on or off (default on).
    #[must_use]
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }
}

impl Default for ObserveClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ObserveClientLayer {
    type Service = ObserveClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveClient {
            inner,
            config: self.clone(),
        }
    }
}
