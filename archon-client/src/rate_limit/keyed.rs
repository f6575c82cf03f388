//! A rate limit per key, with a bounded number of keys.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use archon_core::BoxError;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::{InvalidRateLimit, RateLimitConfig, ResponseFuture, admit};

/// Keys kept at most by default; beyond that, new keys share one overflow quota.
const DEFAULT_MAX_KEYS: usize = 10_000;

/// What a request is limited by, in a [`KeyedRateLimitConfig`].
///
/// ```
/// use archon_client::rate_limit::RateLimitKey;
/// let key: RateLimitKey = toml::from_str::<toml::Table>("key = { header = 'x-tenant' }")
///     .unwrap()["key"].clone().try_into().unwrap();
/// assert_eq!(key, RateLimitKey::Header("x-tenant".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RateLimitKey {
    /// The request URI's host (with the port, when there is one): one quota per host when one
    /// stack serves several hosts. (For a balanced upstream this is the base URL's host: the
    /// endpoint is picked below the limiter.)
    #[default]
    Host,
    /// The request path (for gRPC, `/package.Service/Method`).
    Path,
    /// The value of this header (e.g. a tenant id); requests without it share one quota.
    Header(String),
}

impl RateLimitKey {
    /// The key of `req`.
    ///
    /// ```
    /// use archon_client::rate_limit::RateLimitKey;
    /// let req = http::Request::get("http://a:8080/x?y=1").header("x-tenant", "acme").body(()).unwrap();
    /// assert_eq!(RateLimitKey::Host.of(&req), "a:8080");
    /// assert_eq!(RateLimitKey::Path.of(&req), "/x");
    /// assert_eq!(RateLimitKey::Header("x-tenant".into()).of(&req), "acme");
    /// ```
    pub fn of<R: KeyedRequest + ?Sized>(&self, req: &R) -> String {
        let part = match self {
            Self::Host => req.authority(),
            Self::Path => req.path(),
            Self::Header(name) => req.header(name),
        };
        part.unwrap_or_default().to_owned()
    }

    /// The key of a request of any type, as [`ResiliencePolicy`](crate::ResiliencePolicy)
    /// stacks see it: `reqwest::Request` and `http::Request<B>` for the bodies the crate's
    /// clients send (and `()`, `String`, `Vec<u8>`, `Bytes`); any other type gives the empty
    /// key (one shared quota). Use [`KeyedRateLimitLayer`] with your own key function for
    /// other request types.
    pub(crate) fn of_any<R: 'static>(&self, req: &R) -> String {
        let req: &dyn Any = req;
        if let Some(parts) = as_keyed(req) {
            return self.of(parts);
        }
        String::new()
    }
}

fn as_keyed(req: &dyn Any) -> Option<&dyn KeyedRequest> {
    #[cfg(feature = "http")]
    if let Some(r) = req.downcast_ref::<reqwest::Request>() {
        return Some(r);
    }
    #[cfg(feature = "grpc")]
    {
        if let Some(r) = req.downcast_ref::<http::Request<crate::grpc::ReplayBody>>() {
            return Some(r);
        }
        if let Some(r) = req.downcast_ref::<http::Request<tonic::body::Body>>() {
            return Some(r);
        }
    }
    if let Some(r) = req.downcast_ref::<http::Request<()>>() {
        return Some(r);
    }
    if let Some(r) = req.downcast_ref::<http::Request<bytes::Bytes>>() {
        return Some(r);
    }
    if let Some(r) = req.downcast_ref::<http::Request<String>>() {
        return Some(r);
    }
    req.downcast_ref::<http::Request<Vec<u8>>>()
        .map(|r| r as &dyn KeyedRequest)
}

/// A request whose host, path and headers a [`RateLimitKey`] can read. Every method has a
/// default (`None`), so a request type of your own needs only `impl KeyedRequest for T {}`
/// (and then shares one quota whatever the key).
///
/// ```
/// use archon_client::rate_limit::KeyedRequest;
/// struct Query { tenant: String }
/// impl KeyedRequest for Query {
///     fn header(&self, name: &str) -> Option<&str> {
///         (name == "x-tenant").then_some(self.tenant.as_str())
///     }
/// }
/// assert_eq!(Query { tenant: "acme".into() }.header("x-tenant"), Some("acme"));
/// ```
pub trait KeyedRequest {
    /// `host[:port]` of the request URI.
    fn authority(&self) -> Option<&str> {
        None
    }
    /// The request path.
    fn path(&self) -> Option<&str> {
        None
    }
    /// A header's value, when it is text.
    fn header(&self, _name: &str) -> Option<&str> {
        None
    }
}

impl<B> KeyedRequest for http::Request<B> {
    fn authority(&self) -> Option<&str> {
        self.uri().authority().map(http::uri::Authority::as_str)
    }

    fn path(&self) -> Option<&str> {
        Some(self.uri().path())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

#[cfg(feature = "http")]
impl KeyedRequest for reqwest::Request {
    fn authority(&self) -> Option<&str> {
        let url = self.url().as_str();
        let rest = &url[url.find("://")? + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        Some(authority.rsplit_once('@').map_or(authority, |(_, a)| a))
    }

    fn path(&self) -> Option<&str> {
        Some(self.url().path())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

impl KeyedRequest for () {}

/// A keyed rate limit in a [`ResiliencePolicy`](crate::ResiliencePolicy): each key (host,
/// path or a header such as a tenant id) has its own quota, at most `max_keys` keys are kept.
///
/// The policy reads the key from `reqwest::Request` and `http::Request<B>` (for the bodies
/// the HTTP and gRPC clients send, and `()`, `String`, `Vec<u8>`, `Bytes`); with any other
/// request type every request has the same (empty) key. For those, build a
/// [`KeyedRateLimitLayer`] with your own key function.
///
/// ```
/// use archon_client::rate_limit::{KeyedRateLimitConfig, RateLimitKey};
/// let cfg: KeyedRateLimitConfig = toml::from_str(r#"
///     per_second = 10
///     key = { header = "x-tenant" }
///     max_keys = 1000
/// "#).unwrap();
/// assert_eq!(cfg.key, RateLimitKey::Header("x-tenant".into()));
/// assert_eq!(cfg.limit().per_second, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyedRateLimitConfig {
    /// Sustained calls per second per key (at least 1).
    pub per_second: u32,
    /// Calls allowed at once per key after a quiet period; 0 means `per_second`.
    pub burst: u32,
    /// How long a call may wait for its turn; zero rejects at once.
    #[serde(with = "archon_core::config::duration")]
    pub max_wait: Duration,
    /// What a request is limited by.
    pub key: RateLimitKey,
    /// Keys kept at most (0 is taken as 1). When full, keys whose quota is back to full are
    /// forgotten; if none is, new keys share one overflow quota until room is made.
    pub max_keys: usize,
}

impl Default for KeyedRateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 0,
            max_wait: Duration::ZERO,
            key: RateLimitKey::default(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

impl KeyedRateLimitConfig {
    /// `per_second` calls per second for each key of `key`.
    ///
    /// ```
    /// use archon_client::rate_limit::{KeyedRateLimitConfig, RateLimitKey};
    /// let cfg = KeyedRateLimitConfig::new(50, RateLimitKey::Path);
    /// assert_eq!(cfg.max_keys, 10_000);
    /// ```
    pub fn new(per_second: u32, key: RateLimitKey) -> Self {
        Self {
            per_second,
            key,
            ..Self::default()
        }
    }

    /// The quota of one key.
    ///
    /// ```
    /// let cfg = archon_client::rate_limit::KeyedRateLimitConfig::default();
    /// assert_eq!(cfg.limit().per_second, 100);
    /// ```
    pub fn limit(&self) -> RateLimitConfig {
        RateLimitConfig {
            per_second: self.per_second,
            burst: self.burst,
            max_wait: self.max_wait,
        }
    }
}

/// GCRA per key: the theoretical arrival time of each key's next call, in nanoseconds since
/// `epoch`; a key whose time is in the past has its full burst again and can be forgotten.
#[derive(Debug)]
struct Limiter<K> {
    config: RateLimitConfig,
    state: Mutex<Keys<K>>,
    epoch: Instant,
    /// Nanoseconds per call.
    period: u64,
    /// How far ahead of now a key's arrival time may run (burst - 1 periods).
    tolerance: u64,
    max_keys: usize,
}

#[derive(Debug)]
struct Keys<K> {
    tat: HashMap<K, u64>,
    /// The quota shared by keys that found no room.
    overflow: u64,
}

impl<K: Hash + Eq> Limiter<K> {
    fn new(config: RateLimitConfig, max_keys: usize) -> Result<Self, InvalidRateLimit> {
        if config.per_second == 0 {
            return Err(InvalidRateLimit(()));
        }
        let max_keys = max_keys.max(1);
        let burst = if config.burst == 0 {
            config.per_second
        } else {
            config.burst
        };
        let period = 1_000_000_000 / u64::from(config.per_second);
        Ok(Self {
            config,
            state: Mutex::new(Keys {
                tat: HashMap::new(),
                overflow: 0,
            }),
            epoch: Instant::now(),
            period,
            tolerance: period.saturating_mul(u64::from(burst - 1)),
            max_keys,
        })
    }

    /// `Ok` when `key` may call now (and the call is counted), else how long until it may.
    fn check(&self, key: &K) -> Result<(), Duration>
    where
        K: Clone,
    {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut keys = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Keys { tat, overflow } = &mut *keys;
        if !tat.contains_key(key) && tat.len() >= self.max_keys {
            // Full: forget keys back at full quota (O(n), once per `max_keys` new keys at
            // most when they all stay busy).
            tat.retain(|_, t| *t > now);
        }
        let slot = if let Some(t) = tat.get_mut(key) {
            t
        } else if tat.len() < self.max_keys {
            tat.entry(key.clone()).or_insert(now)
        } else {
            overflow
        };
        let at = (*slot).max(now);
        if at - now > self.tolerance {
            return Err(Duration::from_nanos(at - now - self.tolerance));
        }
        *slot = at + self.period;
        Ok(())
    }

    fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tat
            .len()
    }
}

/// A rate limit per key (tenant, endpoint, user...): each key has its own GCRA quota, at most
/// `max_keys` keys are kept (10,000 by default; then idle keys are forgotten, and new keys
/// share an overflow quota while every kept key is busy). Clones share the limiter.
///
/// ```
/// use std::time::Duration;
/// use archon_client::rate_limit::{KeyedRateLimitLayer, RateLimitConfig, RateLimited};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cfg = RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO };
/// let mut svc = ServiceBuilder::new()
///     .layer(KeyedRateLimitLayer::new(cfg, |tenant: &&str| tenant.to_string()).unwrap())
///     .service(service_fn(|_: &str| async { Ok::<_, archon_core::BoxError>(()) }));
/// svc.ready().await.unwrap().call("acme").await.unwrap();
/// svc.ready().await.unwrap().call("globex").await.unwrap(); // another key, its own quota
/// assert!(svc.ready().await.unwrap().call("acme").await.unwrap_err().is::<RateLimited>());
/// # }
/// ```
pub struct KeyedRateLimitLayer<K, F> {
    limiter: Arc<Limiter<K>>,
    max_wait: Duration,
    key: F,
}

impl<K, F: Clone> Clone for KeyedRateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            max_wait: self.max_wait,
            key: self.key.clone(),
        }
    }
}

impl<K, F> fmt::Debug for KeyedRateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("max_wait", &self.max_wait)
            .field("max_keys", &self.limiter.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, F> KeyedRateLimitLayer<K, F> {
    /// A limiter giving each `key(&request)` the quota of `config`, keeping at most 10,000
    /// keys (see [`max_keys`](Self::max_keys)).
    ///
    /// ```
    /// use archon_client::rate_limit::{KeyedRateLimitLayer, RateLimitConfig};
    /// let layer: KeyedRateLimitLayer<String, _> = KeyedRateLimitLayer::new(
    ///     RateLimitConfig { per_second: 5, ..Default::default() },
    ///     |req: &http::Request<()>| req.uri().path().to_owned(),
    /// ).unwrap();
    /// # let _ = layer;
    /// ```
    ///
    /// # Errors
    /// [`InvalidRateLimit`] when `per_second` is 0.
    pub fn new(config: RateLimitConfig, key: F) -> Result<Self, InvalidRateLimit> {
        Ok(Self {
            limiter: Arc::new(Limiter::new(config, DEFAULT_MAX_KEYS)?),
            max_wait: config.max_wait,
            key,
        })
    }

    /// A limiter from a policy's [`KeyedRateLimitConfig`] (the key function is yours; the
    /// policy uses [`RateLimitKey::of`]).
    ///
    /// ```
    /// use archon_client::rate_limit::{KeyedRateLimitConfig, KeyedRateLimitLayer, RateLimitKey};
    /// let cfg = KeyedRateLimitConfig::new(10, RateLimitKey::Path);
    /// let key = cfg.key.clone();
    /// let layer: KeyedRateLimitLayer<String, _> =
    ///     KeyedRateLimitLayer::from_config(&cfg, move |r: &http::Request<()>| key.of(r)).unwrap();
    /// # let _ = layer;
    /// ```
    ///
    /// # Errors
    /// [`InvalidRateLimit`] when `per_second` is 0.
    pub fn from_config(config: &KeyedRateLimitConfig, key: F) -> Result<Self, InvalidRateLimit> {
        Ok(Self {
            limiter: Arc::new(Limiter::new(config.limit(), config.max_keys)?),
            max_wait: config.max_wait,
            key,
        })
    }

    /// Keeps at most `max_keys` keys (0 is taken as 1). This makes a fresh limiter: call it
    /// before sharing the layer.
    ///
    /// ```
    /// use archon_client::rate_limit::KeyedRateLimitLayer;
    /// let layer: KeyedRateLimitLayer<u32, _> =
    ///     KeyedRateLimitLayer::new(Default::default(), |r: &u32| *r).unwrap().max_keys(2);
    /// assert_eq!(layer.keys(), 0);
    /// ```
    #[must_use]
    pub fn max_keys(self, max_keys: usize) -> Self {
        let limiter = match Limiter::new(self.limiter.config, max_keys) {
            Ok(limiter) => Arc::new(limiter),
            // Cannot happen: the config was accepted before.
            Err(_) => self.limiter.clone(),
        };
        Self { limiter, ..self }
    }

    /// Keys kept now (never more than the bound).
    ///
    /// ```
    /// use archon_client::rate_limit::KeyedRateLimitLayer;
    /// let layer: KeyedRateLimitLayer<u32, _> = KeyedRateLimitLayer::new(Default::default(), |r: &u32| *r).unwrap();
    /// assert_eq!(layer.keys(), 0);
    /// ```
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

impl<S, K, F: Clone> Layer<S> for KeyedRateLimitLayer<K, F> {
    type Service = KeyedRateLimit<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose calls pass a rate limit per key. Built by [`KeyedRateLimitLayer`].
///
/// ```
/// use tower::Layer;
/// use archon_client::rate_limit::KeyedRateLimitLayer;
/// let layer: KeyedRateLimitLayer<u32, _> = KeyedRateLimitLayer::new(Default::default(), |r: &u32| *r).unwrap();
/// let svc = layer.layer(tower::service_fn(|_: u32| async { Ok::<_, archon_core::BoxError>(()) }));
/// # drop(svc);
/// ```
pub struct KeyedRateLimit<S, K, F> {
    inner: S,
    layer: KeyedRateLimitLayer<K, F>,
}

impl<S, K, F> KeyedRateLimit<S, K, F> {
    /// The inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{KeyedRateLimitLayer, RateLimitConfig};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cfg = RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO };
    /// let svc = KeyedRateLimitLayer::new(cfg, |tenant: &&str| tenant.to_string())
    ///     .unwrap()
    ///     .layer(service_fn(|_: &str| async { Ok::<_, archon_core::BoxError>("ok") }));
    /// svc.clone().oneshot("acme").await.unwrap();
    /// assert!(svc.clone().oneshot("acme").await.is_err()); // acme's quota is spent...
    /// assert_eq!(svc.get_ref().clone().oneshot("acme").await.unwrap(), "ok"); // ...not the inner service's
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{KeyedRateLimitLayer, RateLimitConfig};
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cfg = RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO };
    /// let mut svc = KeyedRateLimitLayer::new(cfg, |tenant: &&str| tenant.to_string())
    ///     .unwrap()
    ///     .layer(service_fn(|_: &str| async { Ok::<_, archon_core::BoxError>("ok") }));
    /// svc.ready().await.unwrap().call("acme").await.unwrap();
    /// assert!(svc.ready().await.unwrap().call("acme").await.is_err());
    /// // Calling the inner service directly bypasses the limiter.
    /// assert_eq!(svc.get_mut().ready().await.unwrap().call("acme").await.unwrap(), "ok");
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::rate_limit::{KeyedRateLimitLayer, RateLimitConfig};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cfg = RateLimitConfig { per_second: 1, burst: 1, max_wait: Duration::ZERO };
    /// let svc = KeyedRateLimitLayer::new(cfg, |tenant: &&str| tenant.to_string())
    ///     .unwrap()
    ///     .layer(service_fn(|_: &str| async { Ok::<_, archon_core::BoxError>("ok") }));
    /// svc.clone().oneshot("acme").await.unwrap();
    /// let unlimited = svc.into_inner();
    /// assert_eq!(unlimited.oneshot("acme").await.unwrap(), "ok");
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, F: Clone> Clone for KeyedRateLimit<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for KeyedRateLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Req> Service<Req> for KeyedRateLimit<S, K, F>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: Fn(&Req) -> K + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.layer.key)(&req);
        let limiter = self.layer.limiter.clone();
        admit(&mut self.inner, req, self.layer.max_wait, move || {
            limiter.check(&key)
        })
    }
}

impl<K> KeyedRateLimitLayer<K, RateLimitKey> {
    /// The same limiter with a key function for a concrete request type.
    pub(crate) fn with_key_fn<G>(&self, key: G) -> KeyedRateLimitLayer<K, G> {
        KeyedRateLimitLayer {
            limiter: self.limiter.clone(),
            max_wait: self.max_wait,
            key,
        }
    }

    /// What the policy limits by.
    pub(crate) fn key(&self) -> &RateLimitKey {
        &self.key
    }
}
