//! One breaker per key, bounded in size.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::config::{CircuitBreakerConfig, InvalidConfig};
use super::error::CircuitBreakerError;
use super::future::ResponseFuture;
use super::state::{CircuitBreakerHandle, StateTransition};
use crate::classify::{Classifier, DefaultClassifier};

type Callback = Arc<dyn Fn(&StateTransition) + Send + Sync>;

struct Entries<K> {
    map: HashMap<K, (CircuitBreakerHandle, u64)>,
    tick: u64,
}

/// Breakers by key (host, endpoint, tenant...), created on first use with one configuration
/// and named `<prefix>:<key>`. Holds at most `capacity` breakers: when full, the least recently
/// used one is dropped (a later call for its key starts a fresh, closed breaker).
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerRegistry};
/// let registry: CircuitBreakerRegistry<String> =
///     CircuitBreakerRegistry::new("upstream", CircuitBreakerConfig::default(), 2).unwrap();
/// let a = registry.get(&"a".to_owned());
/// assert!(a.same_as(&registry.get(&"a".to_owned())));
/// assert_eq!(a.name(), "upstream:a");
/// registry.get(&"b".to_owned());
/// registry.get(&"c".to_owned()); // evicts "a", the least recently used
/// assert_eq!(registry.len(), 2);
/// assert!(!a.same_as(&registry.get(&"a".to_owned())));
/// ```
#[derive(Clone)]
pub struct CircuitBreakerRegistry<K = String> {
    prefix: Arc<str>,
    config: CircuitBreakerConfig,
    capacity: usize,
    entries: Arc<Mutex<Entries<K>>>,
    callback: Option<Callback>,
}

impl<K> fmt::Debug for CircuitBreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerRegistry")
            .field("prefix", &self.prefix)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> CircuitBreakerRegistry<K> {
    /// A registry of at most `capacity` (at least 1) breakers.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerRegistry};
    /// let registry =
    ///     CircuitBreakerRegistry::<String>::new("hosts", CircuitBreakerConfig::default(), 0).unwrap();
    /// registry.get(&"a".to_owned());
    /// registry.get(&"b".to_owned());
    /// assert_eq!(registry.len(), 1); // a capacity of 0 holds one breaker
    /// let bad = CircuitBreakerConfig::default().count_window(0);
    /// assert!(CircuitBreakerRegistry::<String>::new("hosts", bad, 10).is_err());
    /// ```
    ///
    /// # Errors
    /// [`InvalidConfig`] when a setting is out of range.
    pub fn new(
        prefix: &str,
        config: CircuitBreakerConfig,
        capacity: usize,
    ) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            prefix: prefix.into(),
            config,
            capacity: capacity.max(1),
            entries: Arc::new(Mutex::new(Entries {
                map: HashMap::new(),
                tick: 0,
            })),
            callback: None,
        })
    }

    /// Calls `callback` on every transition of every breaker created from now on.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use archon_client::circuit_breaker::CircuitBreakerRegistry;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let registry = CircuitBreakerRegistry::<String>::new("hosts", Default::default(), 10)
    ///     .unwrap()
    ///     .on_transition(move |t| log.lock().unwrap().push(t.name.to_string()));
    /// registry.get(&"a.example".to_owned()).force_open();
    /// assert_eq!(*seen.lock().unwrap(), ["hosts:a.example"]);
    /// ```
    #[must_use]
    pub fn on_transition(
        mut self,
        callback: impl Fn(&StateTransition) + Send + Sync + 'static,
    ) -> Self {
        self.callback = Some(Arc::new(callback));
        self
    }

    /// The breaker for `key`, created if needed.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerRegistry, CircuitState};
    /// let registry = CircuitBreakerRegistry::<String>::new("tenants", Default::default(), 10).unwrap();
    /// registry.get(&"acme".to_owned()).force_open();
    /// let acme = registry.get(&"acme".to_owned()); // the same breaker as before
    /// assert_eq!((acme.name(), acme.state()), ("tenants:acme", CircuitState::ForcedOpen));
    /// assert_eq!(registry.get(&"globex".to_owned()).state(), CircuitState::Closed);
    /// ```
    pub fn get(&self, key: &K) -> CircuitBreakerHandle {
        let mut entries = match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.tick += 1;
        let tick = entries.tick;
        if let Some((handle, used)) = entries.map.get_mut(key) {
            *used = tick;
            return handle.clone();
        }
        if entries.map.len() >= self.capacity
            && let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            entries.map.remove(&oldest);
        }
        let name = format!("{}:{key}", self.prefix);
        let handle = CircuitBreakerHandle::from_valid(name.into(), self.config.clone());
        let handle = match &self.callback {
            Some(cb) => {
                let cb = cb.clone();
                handle.on_transition(move |t| cb(t))
            }
            None => handle,
        };
        entries.map.insert(key.clone(), (handle.clone(), tick));
        handle
    }

    /// Number of breakers held.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerRegistry;
    /// let registry = CircuitBreakerRegistry::<u16>::new("ports", Default::default(), 10).unwrap();
    /// registry.get(&80);
    /// registry.get(&80);
    /// registry.get(&443);
    /// assert_eq!(registry.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    /// Whether no breaker is held.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerRegistry;
    /// let registry = CircuitBreakerRegistry::<String>::new("hosts", Default::default(), 10).unwrap();
    /// assert!(registry.is_empty()); // breakers are created on first use
    /// registry.get(&"a.example".to_owned());
    /// assert!(!registry.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A layer choosing the breaker per request with `key`.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerRegistry;
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = CircuitBreakerRegistry::<String>::new("hosts", Default::default(), 100).unwrap();
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(registry.layer(|req: &http::Request<()>| req.uri().host().unwrap_or("").to_owned()))
    ///     .service(service_fn(|_: http::Request<()>| async {
    ///         Ok::<_, std::io::Error>(http::Response::new(()))
    ///     }));
    /// let req = http::Request::get("http://a.example/items").body(()).unwrap();
    /// svc.ready().await.unwrap().call(req).await.unwrap();
    /// assert_eq!(registry.get(&"a.example".to_owned()).metrics().calls, 1);
    /// # }
    /// ```
    pub fn layer<F>(&self, key: F) -> KeyedCircuitBreakerLayer<K, F> {
        KeyedCircuitBreakerLayer {
            registry: self.clone(),
            key,
            classifier: DefaultClassifier,
        }
    }
}

/// Wraps services in a [`KeyedCircuitBreaker`].
///
/// ```
/// use archon_client::circuit_breaker::CircuitBreakerRegistry;
/// let registry = CircuitBreakerRegistry::<String>::new("hosts", Default::default(), 100).unwrap();
/// let layer = registry.layer(|req: &http::Request<()>| {
///     req.uri().host().unwrap_or("").to_owned()
/// });
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct KeyedCircuitBreakerLayer<K, F, C = DefaultClassifier> {
    registry: CircuitBreakerRegistry<K>,
    key: F,
    classifier: C,
}

impl<K, F, C> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// Uses `classifier` to decide failure, success or ignored.
    ///
    /// ```
    /// use archon_client::ErrorIsFailure;
    /// use archon_client::circuit_breaker::CircuitBreakerRegistry;
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = CircuitBreakerRegistry::<String>::new("tenants", Default::default(), 10).unwrap();
    /// let layer = registry.layer(|tenant: &String| tenant.clone()).classifier(ErrorIsFailure);
    /// let mut svc = ServiceBuilder::new().layer(layer).service(service_fn(|_: String| async {
    ///     Err::<u32, _>(std::io::Error::other("down"))
    /// }));
    /// let _ = svc.ready().await.unwrap().call("acme".to_owned()).await;
    /// assert_eq!(registry.get(&"acme".to_owned()).metrics().failures, 1);
    /// # }
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, F, C2> {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            key: self.key,
            classifier,
        }
    }
}

impl<S, K: Clone, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service guarded by one breaker per request key, from a [`CircuitBreakerRegistry`].
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreakerRegistry, KeyedCircuitBreaker};
/// let registry = CircuitBreakerRegistry::<String>::new("t", Default::default(), 10).unwrap();
/// let svc = KeyedCircuitBreaker::new(
///     tower::service_fn(|_: String| async { Ok::<_, std::io::Error>(http::Response::new(())) }),
///     registry,
///     |tenant: &String| tenant.clone(),
/// );
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct KeyedCircuitBreaker<S, K, F, C = DefaultClassifier> {
    inner: S,
    registry: CircuitBreakerRegistry<K>,
    key: F,
    classifier: C,
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S, K, F> KeyedCircuitBreaker<S, K, F> {
    /// Guards `inner` with the breaker `registry` holds for `key(&request)`.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerRegistry, KeyedCircuitBreaker};
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = CircuitBreakerRegistry::<String>::new("tenants", Default::default(), 10).unwrap();
    /// let mut svc = KeyedCircuitBreaker::new(
    ///     service_fn(|_: String| async { Ok::<_, std::io::Error>(http::Response::new(())) }),
    ///     registry.clone(),
    ///     |tenant: &String| tenant.clone(),
    /// );
    /// registry.get(&"acme".to_owned()).force_open();
    /// assert!(svc.ready().await.unwrap().call("acme".to_owned()).await.is_err());
    /// assert!(svc.ready().await.unwrap().call("globex".to_owned()).await.is_ok());
    /// # }
    /// ```
    pub fn new(inner: S, registry: CircuitBreakerRegistry<K>, key: F) -> Self {
        Self {
            inner,
            registry,
            key,
            classifier: DefaultClassifier,
        }
    }
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// The inner service.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerRegistry, KeyedCircuitBreaker};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = CircuitBreakerRegistry::<String>::new("tenants", Default::default(), 10).unwrap();
    /// let svc = KeyedCircuitBreaker::new(
    ///     service_fn(|_: String| async { Ok::<_, std::io::Error>(http::Response::new(())) }),
    ///     registry.clone(),
    ///     |tenant: &String| tenant.clone(),
    /// );
    /// // A clone of the inner service answers without any breaker.
    /// svc.get_ref().clone().oneshot("acme".to_owned()).await.unwrap();
    /// assert!(registry.is_empty());
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerRegistry, KeyedCircuitBreaker};
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = CircuitBreakerRegistry::<String>::new("tenants", Default::default(), 10).unwrap();
    /// let mut svc = KeyedCircuitBreaker::new(
    ///     service_fn(|_: String| async { Ok::<_, std::io::Error>(http::Response::new(())) }),
    ///     registry.clone(),
    ///     |tenant: &String| tenant.clone(),
    /// );
    /// // The inner service itself is not guarded: no breaker is looked up.
    /// svc.get_mut().ready().await.unwrap().call("acme".to_owned()).await.unwrap();
    /// assert!(registry.is_empty());
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerRegistry, KeyedCircuitBreaker};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registry = CircuitBreakerRegistry::<String>::new("tenants", Default::default(), 10).unwrap();
    /// let svc = KeyedCircuitBreaker::new(
    ///     service_fn(|_: String| async { Ok::<_, std::io::Error>(http::Response::new(())) }),
    ///     registry.clone(),
    ///     |tenant: &String| tenant.clone(),
    /// );
    /// let inner = svc.into_inner(); // no breakers any more
    /// inner.oneshot("acme".to_owned()).await.unwrap();
    /// assert!(registry.is_empty());
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
    C: Classifier<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = CircuitBreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(CircuitBreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let handle = self.registry.get(&(self.key)(&req));
        match handle.try_acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Err(open) => ResponseFuture::rejected(open, self.classifier.clone()),
        }
    }
}
