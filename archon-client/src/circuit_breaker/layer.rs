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
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// let layer = CircuitBreakerLayer::new("inventory", CircuitBreakerConfig::default()).unwrap();
    /// assert_eq!(layer.handle().name(), "inventory");
    /// let err = CircuitBreakerLayer::new("inventory", CircuitBreakerConfig::default().minimum_calls(0));
    /// assert_eq!(err.unwrap_err().field(), "minimum_calls");
    /// ```
    ///
    /// # Errors
    /// [`InvalidConfig`] when a setting is out of range.
    pub fn new(name: &str, config: CircuitBreakerConfig) -> Result<Self, InvalidConfig> {
        Ok(Self::from_handle(CircuitBreakerHandle::new(name, config)?))
    }

    /// A layer around an existing breaker (e.g. one from a
    /// [`CircuitBreakerRegistry`](super::CircuitBreakerRegistry)).
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerLayer, CircuitBreakerRegistry};
    /// let registry = CircuitBreakerRegistry::<String>::new("hosts", Default::default(), 10).unwrap();
    /// let breaker = registry.get(&"a.example".to_owned());
    /// let layer = CircuitBreakerLayer::from_handle(breaker.clone());
    /// assert!(layer.handle().same_as(&breaker));
    /// assert_eq!(layer.handle().name(), "hosts:a.example");
    /// ```
    pub fn from_handle(handle: CircuitBreakerHandle) -> Self {
        Self {
            handle,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Uses `classifier` to decide failure, success or ignored.
    ///
    /// ```
    /// use archon_client::ErrorIsFailure;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cfg = CircuitBreakerConfig::default().count_window(2).minimum_calls(2);
    /// // Not an HTTP service: every error is a failure.
    /// let layer = CircuitBreakerLayer::new("db", cfg).unwrap().classifier(ErrorIsFailure);
    /// let mut svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_: ()| async {
    ///     Err::<u32, _>(std::io::Error::other("down"))
    /// }));
    /// for _ in 0..2 {
    ///     let _ = svc.ready().await.unwrap().call(()).await;
    /// }
    /// assert_eq!(layer.handle().state(), CircuitState::Open);
    /// # }
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            handle: self.handle,
            classifier,
        }
    }

    /// The shared breaker.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = CircuitBreakerLayer::new("svc", CircuitBreakerConfig::default()).unwrap();
    /// let mut svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_: ()| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }));
    /// layer.handle().force_open(); // every service built by the layer shares the breaker
    /// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    /// assert!(err.as_open().is_some());
    /// # }
    /// ```
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
