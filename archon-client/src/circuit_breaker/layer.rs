//! [`CircuitBreakerLayer`].

use tower_layer::Layer;

use super::CircuitBreaker;
use super::config::{CircuitBreakerConfig, InvalidConfig};
use super::state::CircuitBreakerHandle;
use crate::classify::DefaultClassifier;

/// Wraps services in a [`CircuitBreaker`]. Every service built by one layer shares one
/// breaker (see [`handle`](Self::handle)).
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
/// use tower::{ServiceBuilder, service_fn};
///
/// let layer = CircuitBreakerLayer::new("inventory", CircuitBreakerConfig::default())?;
/// let svc = ServiceBuilder::new()
///     .layer(layer.clone())
///     .service(service_fn(|_: ()| async {
///         Ok::<_, std::io::Error>(http::Response::new(()))
///     }));
/// # drop(svc);
/// println!("{}", layer.handle().state());
/// # Ok::<(), archon_client::circuit_breaker::InvalidConfig>(())
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    handle: CircuitBreakerHandle,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker named `name` and the default classifier.
    ///
    /// # Errors
    /// [`InvalidConfig`] when a setting is out of range.
    pub fn new(name: &str, config: CircuitBreakerConfig) -> Result<Self, InvalidConfig> {
        Ok(Self::from_handle(CircuitBreakerHandle::new(name, config)?))
    }

    /// A layer around an existing breaker (e.g. one from a
    /// [`CircuitBreakerRegistry`](super::CircuitBreakerRegistry)).
    pub fn from_handle(handle: CircuitBreakerHandle) -> Self {
        Self {
            handle,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Uses `classifier` to decide failure, success or ignored.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            handle: self.handle,
            classifier,
        }
    }

    /// The shared breaker.
    pub fn handle(&self) -> &CircuitBreakerHandle {
        &self.handle
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.handle.clone(), self.classifier.clone())
    }
}
