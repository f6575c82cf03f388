//! Load balancing with power-of-two-choices (tower's p2c) over a static list of endpoints or
//! endpoints re-resolved from DNS, with outlier ejection: each endpoint has its own circuit
//! breaker, and an endpoint whose breaker would reject a call leaves the ready set: while it
//! is open, until its wait is over (then half-open probes decide), and while it is half-open
//! with every probe slot taken, until a probe finishes.
//!
//! From configuration, [`BalanceConfig`] builds a [`SharedBalancer`] (clonable, shared by every
//! clone); the HTTP upstreams (`http::UpstreamConfig::balance`) and gRPC configs
//! (`grpc::GrpcConfig::balance`) take one. By hand, [`balanced`] and [`balanced_discover`]
//! give tower's `Balance` directly.
//!
//! ```
//! use archon_client::balance::balanced;
//! use archon_client::circuit_breaker::CircuitBreakerConfig;
//! use tower::{Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let endpoint = |name: &'static str| service_fn(move |_: ()| async move {
//!     Ok::<_, std::io::Error>(http::Response::new(name))
//! });
//! let mut lb = balanced(
//!     [("a".to_owned(), endpoint("a")), ("b".to_owned(), endpoint("b"))],
//!     "inventory",
//!     &CircuitBreakerConfig::default(),
//! ).unwrap();
//! let resp = lb.ready().await.unwrap().call(()).await.unwrap();
//! assert!(["a", "b"].contains(resp.body()));
//! # }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use archon_core::BoxError;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Sleep;
use tower::balance::p2c::Balance;
use tower::discover::{Change, ServiceList};
use tower::load::{CompleteOnResponse, Load, PendingRequests};
use tower_service::Service;

use crate::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerHandle, CircuitOpen, CircuitState,
    InvalidConfig,
};
use crate::classify::{Classifier, DefaultClassifier};

/// Longest sleep before an ejected endpoint's breaker is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// One endpoint of a [`balanced`] set: its breaker, a pending-requests load, and ejection.
///
/// ```
/// use archon_client::balance::{Balanced, Endpoint};
/// use tower::balance::p2c::Balance;
/// use tower::discover::ServiceList;
///
/// // What a balancer built by `balanced` is made of.
/// fn same<S, Req>(lb: Balanced<S, Req>) -> Balance<ServiceList<Vec<Endpoint<S>>>, Req> {
///     lb
/// }
/// # let _ = same::<tower::util::BoxService<(), (), std::io::Error>, ()>;
/// ```
pub type Endpoint<S> = EjectOnOpen<PendingRequests<CircuitBreaker<S>>>;

/// `svc` as one endpoint of a balanced set: behind `handle`'s breaker, loaded by its pending
/// requests, ejected while the breaker is open.
fn endpoint_with<S>(svc: S, handle: CircuitBreakerHandle) -> Endpoint<S> {
    let guarded = CircuitBreaker::new(svc, handle.clone());
    EjectOnOpen::new(
        PendingRequests::new(guarded, CompleteOnResponse::default()),
        handle,
    )
}

/// A balancer over endpoints, as built by [`balanced`].
///
/// ```
/// use archon_client::balance::{Balanced, balanced};
/// use archon_client::circuit_breaker::CircuitBreakerConfig;
///
/// fn two_replicas<S: tower::Service<(), Response = http::Response<()>, Error = std::io::Error>>(
///     a: S,
///     b: S,
/// ) -> Balanced<S, ()> {
///     let endpoints = [("a".to_owned(), a), ("b".to_owned(), b)];
///     balanced(endpoints, "inventory", &CircuitBreakerConfig::default()).unwrap()
/// }
/// # let svc = || tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(http::Response::new(())) });
/// # let lb = two_replicas(svc(), svc());
/// # drop(lb);
/// ```
pub type Balanced<S, Req> = Balance<ServiceList<Vec<Endpoint<S>>>, Req>;

/// Balances calls over `endpoints` (name, service) with power-of-two-choices on pending
/// requests; each endpoint gets its own breaker named `<name>:<endpoint>` from `breaker`.
///
/// ```
/// use archon_client::balance::balanced;
/// use archon_client::circuit_breaker::CircuitBreakerConfig;
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let endpoint = |up: bool| service_fn(move |_: ()| async move {
///     if up { Ok(http::Response::new("up")) } else { Err(std::io::Error::other("down")) }
/// });
/// let breaker = CircuitBreakerConfig::default().count_window(4).minimum_calls(2);
/// let endpoints = [("a".to_owned(), endpoint(true)), ("b".to_owned(), endpoint(false))];
/// let mut lb = balanced(endpoints, "inventory", &breaker).unwrap();
/// for _ in 0..30 {
///     let _ = lb.ready().await.unwrap().call(()).await;
/// }
/// // `b` failed until its breaker opened: it is ejected, every call goes to `a`.
/// for _ in 0..10 {
///     assert_eq!(*lb.ready().await.unwrap().call(()).await.unwrap().body(), "up");
/// }
/// # }
/// ```
///
/// # Errors
/// [`InvalidConfig`] when the breaker settings are out of range.
pub fn balanced<S, Req>(
    endpoints: impl IntoIterator<Item = (String, S)>,
    name: &str,
    breaker: &CircuitBreakerConfig,
) -> Result<Balanced<S, Req>, InvalidConfig>
where
    S: Service<Req>,
    S::Error: Into<archon_core::BoxError>,
    DefaultClassifier: Classifier<S::Response, S::Error>,
{
    let mut list = Vec::new();
    for (endpoint, svc) in endpoints {
        let handle = CircuitBreakerHandle::new(format!("{name}:{endpoint}"), breaker.clone())?;
        list.push(endpoint_with(svc, handle));
    }
    Ok(Balance::new(ServiceList::new::<Req>(list)))
}

/// A stream of endpoint changes from re-resolving a name every `every`: the
/// [`Discover`](tower::discover::Discover) side of [`balanced_discover`].
///
/// ```
/// use std::time::Duration;
/// use archon_client::balance::{Discovery, dns};
///
/// // Every address `localhost` resolves to, on port 8080, checked every 30 s.
/// let changes: Discovery<std::net::SocketAddr> =
///     dns("localhost", 8080, Duration::from_secs(30), |addr| addr);
/// # drop(changes);
/// ```
pub type Discovery<S> = Pin<
    Box<dyn futures::Stream<Item = Result<Change<SocketAddr, S>, archon_core::BoxError>> + Send>,
>;

struct DiscoveryState<R, M> {
    resolve: R,
    make: M,
    every: Duration,
    known: HashSet<SocketAddr>,
    pending: VecDeque<(SocketAddr, bool)>,
    first: bool,
}

/// Endpoint changes from calling `resolve` now and then every `every`: addresses that appear
/// are inserted (built with `make`), addresses that disappear are removed. A failed
/// resolution keeps the current set (and is logged).
///
/// ```
/// use std::time::Duration;
/// use archon_client::balance::discover;
/// let changes = discover(
///     || async { Ok(vec!["127.0.0.1:8080".parse().unwrap()]) },
///     Duration::from_secs(30),
///     |addr| addr.port(),
/// );
/// # drop(changes);
/// ```
pub fn discover<R, Fut, M, S>(resolve: R, every: Duration, make: M) -> Discovery<S>
where
    R: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = std::io::Result<Vec<SocketAddr>>> + Send,
    M: FnMut(SocketAddr) -> S + Send + 'static,
    S: Send + 'static,
{
    let state = DiscoveryState {
        resolve,
        make,
        every,
        known: HashSet::new(),
        pending: VecDeque::new(),
        first: true,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some((addr, insert)) = st.pending.pop_front() {
                let change = if insert {
                    Change::Insert(addr, (st.make)(addr))
                } else {
                    Change::Remove(addr)
                };
                return Some((Ok(change), st));
            }
            if !st.first {
                tokio::time::sleep(st.every).await;
            }
            st.first = false;
            match (st.resolve)().await {
                Ok(addrs) => {
                    let now: HashSet<SocketAddr> = addrs.into_iter().collect();
                    let mut gone: Vec<_> = st.known.difference(&now).copied().collect();
                    let mut new: Vec<_> = now.difference(&st.known).copied().collect();
                    gone.sort();
                    new.sort();
                    st.pending.extend(gone.into_iter().map(|a| (a, false)));
                    st.pending.extend(new.into_iter().map(|a| (a, true)));
                    st.known = now;
                }
                Err(error) => {
                    tracing::warn!(%error, "endpoint resolution failed; keeping the current set");
                }
            }
        }
    }))
}

/// [`discover`] with DNS: resolves `host:port` every `every`.
///
/// ```
/// let changes = archon_client::balance::dns("localhost", 8080, std::time::Duration::from_secs(30), |addr| addr);
/// # drop(changes);
/// ```
pub fn dns<M, S>(host: &str, port: u16, every: Duration, make: M) -> Discovery<S>
where
    M: FnMut(SocketAddr) -> S + Send + 'static,
    S: Send + 'static,
{
    let host = host.to_owned();
    discover(
        move || {
            let host = host.clone();
            async move {
                Ok(tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect())
            }
        },
        every,
        make,
    )
}

/// Balances calls over endpoints that come and go as `discovery` says (see [`dns`] and
/// [`discover`]), each with its own breaker named `<name>:<address>` and outlier ejection.
///
/// ```
/// use std::time::Duration;
/// use archon_client::balance::{balanced_discover, discover};
/// use archon_client::circuit_breaker::CircuitBreakerConfig;
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let changes = discover(
///     || async { Ok(vec!["10.0.0.1:8080".parse().unwrap(), "10.0.0.2:8080".parse().unwrap()]) },
///     Duration::from_secs(30),
///     |addr| service_fn(move |_: ()| async move {
///         Ok::<_, std::io::Error>(http::Response::new(addr))
///     }),
/// );
/// let mut lb = balanced_discover(changes, "inventory", &CircuitBreakerConfig::default()).unwrap();
/// let resp = lb.ready().await.unwrap().call(()).await.unwrap();
/// assert_eq!(resp.body().port(), 8080);
/// # }
/// ```
pub fn balanced_discover<S, Req>(
    discovery: Discovery<S>,
    name: &str,
    breaker: &CircuitBreakerConfig,
) -> Result<Balance<Discovery<Endpoint<S>>, Req>, InvalidConfig>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<archon_core::BoxError>,
    DefaultClassifier: Classifier<S::Response, S::Error>,
{
    breaker.validate()?;
    let breaker = breaker.clone();
    let name = name.to_owned();
    let endpoints = discovery.map(move |change| {
        change.map(|c| match c {
            Change::Insert(addr, svc) => {
                let handle = CircuitBreakerHandle::from_valid(
                    format!("{name}:{addr}").into(),
                    breaker.clone(),
                );
                Change::Insert(addr, endpoint_with(svc, handle))
            }
            Change::Remove(addr) => Change::Remove(addr),
        })
    });
    let endpoints: Discovery<Endpoint<S>> = Box::pin(endpoints);
    Ok(Balance::new(endpoints))
}

/// Reports "not ready" while `breaker` would reject a call (open, forced open, or half-open
/// with every probe slot taken, see [`CircuitBreakerHandle::admits_now`]), so a balancer
/// routes around the endpoint (outlier ejection) instead of failing calls with
/// [`CircuitOpen`], and takes it back when the wait is over or a probe slot is free.
///
/// ```
/// use archon_client::balance::EjectOnOpen;
/// use archon_client::circuit_breaker::CircuitBreakerHandle;
/// let handle = CircuitBreakerHandle::new("ep", Default::default()).unwrap();
/// let svc = EjectOnOpen::new(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }), handle);
/// # drop(svc);
/// ```
pub struct EjectOnOpen<S> {
    inner: S,
    breaker: CircuitBreakerHandle,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for EjectOnOpen<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EjectOnOpen")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S> EjectOnOpen<S> {
    /// Wraps `inner`, watching `breaker`.
    ///
    /// ```
    /// use futures::FutureExt;
    /// use archon_client::balance::EjectOnOpen;
    /// use archon_client::circuit_breaker::CircuitBreakerHandle;
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let breaker = CircuitBreakerHandle::new("inventory:a", Default::default()).unwrap();
    /// let endpoint = service_fn(|_: ()| async { Ok::<_, std::io::Error>("a") });
    /// let mut svc = EjectOnOpen::new(endpoint, breaker.clone());
    /// breaker.force_open();
    /// assert!(svc.ready().now_or_never().is_none()); // not ready while the breaker is open
    /// breaker.reset();
    /// assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "a");
    /// # }
    /// ```
    pub fn new(inner: S, breaker: CircuitBreakerHandle) -> Self {
        Self {
            inner,
            breaker,
            sleep: None,
        }
    }

    /// The endpoint's breaker.
    ///
    /// ```
    /// use archon_client::balance::EjectOnOpen;
    /// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitState};
    /// let handle = CircuitBreakerHandle::new("inventory:a", Default::default()).unwrap();
    /// let endpoint = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
    /// let svc = EjectOnOpen::new(endpoint, handle.clone());
    /// assert!(svc.breaker().same_as(&handle));
    /// handle.force_open();
    /// assert_eq!(svc.breaker().state(), CircuitState::ForcedOpen);
    /// ```
    pub fn breaker(&self) -> &CircuitBreakerHandle {
        &self.breaker
    }

    /// The inner service.
    ///
    /// ```
    /// use archon_client::balance::EjectOnOpen;
    /// use archon_client::circuit_breaker::CircuitBreakerHandle;
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let handle = CircuitBreakerHandle::new("inventory:a", Default::default()).unwrap();
    /// let endpoint = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>("a") });
    /// let svc = EjectOnOpen::new(endpoint, handle.clone());
    /// handle.force_open();
    /// // The inner service alone knows nothing of the breaker.
    /// let inner = svc.get_ref().clone();
    /// assert_eq!(inner.oneshot(()).await.unwrap(), "a");
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for EjectOnOpen<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            let wait = match self.breaker.open_remaining() {
                Some(wait) => wait.min(RECHECK),
                None if self.breaker.admits_now() => {
                    self.sleep = None;
                    return self.inner.poll_ready(cx);
                }
                // Half-open with every probe slot taken: a call would be rejected. Wait for a
                // probe to finish (the breaker wakes this task), looking again at least every
                // RECHECK (a breaker stuck half-open moves on only when looked at).
                None => {
                    self.breaker.wake_on_change(cx.waker());
                    if self.breaker.admits_now() {
                        continue;
                    }
                    RECHECK
                }
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => self.sleep = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}

impl<S: Load> Load for EjectOnOpen<S> {
    type Metric = S::Metric;

    fn load(&self) -> Self::Metric {
        self.inner.load()
    }
}

/// Where a balanced upstream's endpoints come from, and when one is ejected: either a static
/// list of `host:port` endpoints or a DNS name re-resolved every `every`.
///
/// Each endpoint gets its own circuit breaker built from `ejection`; while it is open the
/// endpoint is out of the set (outlier ejection), and when its wait is over half-open probes
/// decide whether it comes back. The per-attempt timeout of the policy is applied to each
/// endpoint, so the endpoint's breaker sees a hanging endpoint's timeouts.
///
/// ```
/// use archon_client::balance::BalanceConfig;
/// let cfg: BalanceConfig = toml::from_str(r#"
///     endpoints = ["10.0.0.1:8080", "10.0.0.2:8080"]
///     [ejection]
///     window_size = 20
///     minimum_calls = 10
///     wait_in_open = "10s"
/// "#).unwrap();
/// assert!(cfg.validate().is_ok());
///
/// let dns: BalanceConfig = toml::from_str(r#"
///     dns = { host = "inventory.internal", port = 8080, every = "30s" }
/// "#).unwrap();
/// assert_eq!(dns.dns.unwrap().every.as_secs(), 30);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BalanceConfig {
    /// Static endpoints, each `host:port` (host a name, an IPv4 address or a bracketed IPv6
    /// address).
    pub endpoints: Vec<String>,
    /// A DNS name whose addresses are the endpoints, re-resolved now and then.
    pub dns: Option<DnsConfig>,
    /// The breaker of each endpoint: when it opens, the endpoint is ejected.
    pub ejection: CircuitBreakerConfig,
}

/// A DNS name re-resolved every `every` (default 30 s): addresses that appear join the set,
/// addresses that disappear leave it, a failed resolution keeps the set.
///
/// ```
/// let cfg = archon_client::balance::DnsConfig::new("inventory.internal", 8080);
/// assert_eq!(cfg.every, std::time::Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DnsConfig {
    /// The name to resolve.
    pub host: String,
    /// The port of every resolved address.
    pub port: u16,
    /// How often to resolve again.
    #[serde(with = "archon_core::config::duration", default = "default_every")]
    pub every: Duration,
}

fn default_every() -> Duration {
    Duration::from_secs(30)
}

impl DnsConfig {
    /// `host:port`, re-resolved every 30 s.
    ///
    /// ```
    /// use archon_client::balance::{BalanceConfig, DnsConfig};
    /// let dns = DnsConfig::new("inventory.internal", 8080);
    /// assert_eq!((dns.host.as_str(), dns.port, dns.every.as_secs()), ("inventory.internal", 8080, 30));
    /// assert!(BalanceConfig::dns(dns).validate().is_ok());
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            every: default_every(),
        }
    }

    /// Sets how often the name is resolved again.
    ///
    /// ```
    /// let cfg = archon_client::balance::DnsConfig::new("db", 5432).every(std::time::Duration::from_secs(5));
    /// assert_eq!(cfg.every.as_secs(), 5);
    /// ```
    #[must_use]
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }
}

/// A [`BalanceConfig`] that cannot work (no endpoints, both a list and DNS, a malformed
/// `host:port`, a zero re-resolution period, an invalid ejection breaker).
///
/// ```
/// let err = archon_client::balance::BalanceConfig::default().validate().unwrap_err();
/// assert!(err.to_string().contains("endpoints"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid balance configuration: {reason}")]
pub struct InvalidBalance {
    reason: String,
}

impl InvalidBalance {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// Splits `host:port` (host may be a bracketed IPv6 address).
pub(crate) fn split_authority(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let plain = !host.is_empty() && !host.contains([':', '/', '[', ']', '@', ' ']);
    (bracketed || plain).then_some((host, port))
}

impl BalanceConfig {
    /// Balances over a static list of `host:port` endpoints.
    ///
    /// ```
    /// let cfg = archon_client::balance::BalanceConfig::endpoints(["10.0.0.1:80", "10.0.0.2:80"]);
    /// assert_eq!(cfg.endpoints.len(), 2);
    /// ```
    pub fn endpoints<I, E>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Balances over the addresses of a DNS name.
    ///
    /// ```
    /// use archon_client::balance::{BalanceConfig, DnsConfig};
    /// let cfg = BalanceConfig::dns(DnsConfig::new("inventory.internal", 8080));
    /// assert!(cfg.validate().is_ok());
    /// ```
    pub fn dns(dns: DnsConfig) -> Self {
        Self {
            dns: Some(dns),
            ..Self::default()
        }
    }

    /// Sets the per-endpoint breaker that decides ejection.
    ///
    /// ```
    /// use archon_client::{balance::BalanceConfig, circuit_breaker::CircuitBreakerConfig};
    /// let cfg = BalanceConfig::endpoints(["a:1"]).ejection(CircuitBreakerConfig::default().count_window(10));
    /// assert_eq!(cfg.ejection.window_size, 10);
    /// ```
    #[must_use]
    pub fn ejection(mut self, ejection: CircuitBreakerConfig) -> Self {
        self.ejection = ejection;
        self
    }

    /// Checks the settings.
    ///
    /// ```
    /// use archon_client::balance::BalanceConfig;
    /// assert!(BalanceConfig::endpoints(["127.0.0.1:80", "[::1]:80", "svc-a:8080"]).validate().is_ok());
    /// assert!(BalanceConfig::endpoints(["no-port"]).validate().is_err());
    /// ```
    ///
    /// # Errors
    /// [`InvalidBalance`] saying what is wrong.
    pub fn validate(&self) -> Result<(), InvalidBalance> {
        match (&self.dns, self.endpoints.is_empty()) {
            (None, true) => {
                return Err(InvalidBalance::new(
                    "set either `endpoints` (a list of host:port) or `dns`",
                ));
            }
            (Some(_), false) => {
                return Err(InvalidBalance::new(
                    "set either `endpoints` or `dns`, not both",
                ));
            }
            (Some(dns), true) => {
                if dns.host.is_empty() {
                    return Err(InvalidBalance::new("`dns.host` is empty"));
                }
                if dns.every.is_zero() {
                    return Err(InvalidBalance::new("`dns.every` must be more than zero"));
                }
            }
            (None, false) => {
                if let Some(bad) = self.endpoints.iter().find(|e| split_authority(e).is_none()) {
                    return Err(InvalidBalance::new(format!(
                        "endpoint `{bad}` is not host:port"
                    )));
                }
            }
        }
        self.ejection
            .validate()
            .map_err(|e| InvalidBalance::new(format!("ejection: {e}")))
    }

    /// Builds the balancer named `name` (its endpoints' breakers are `<name>:<host:port>`),
    /// with `make` turning a `host:port` into the service that calls it. Static endpoints
    /// are made at once (an error from `make` fails the build); resolved ones as they
    /// appear (an error from `make` is logged and the address skipped).
    ///
    /// DNS resolution needs a tokio runtime; it starts on the first call.
    ///
    /// ```
    /// use archon_client::balance::BalanceConfig;
    /// use tower::{Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let lb = BalanceConfig::endpoints(["a:1", "b:2"])
    ///     .build("inventory", |endpoint: &str| {
    ///         let endpoint = endpoint.to_owned();
    ///         Ok(service_fn(move |_: ()| {
    ///             let endpoint = endpoint.clone();
    ///             async move { Ok::<_, std::io::Error>(http::Response::new(endpoint)) }
    ///         }))
    ///     })
    ///     .unwrap();
    /// let resp = lb.clone().oneshot(()).await.unwrap();
    /// assert!(["a:1", "b:2"].contains(&resp.body().as_str()));
    /// assert_eq!(lb.endpoint_breakers().len(), 2);
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`InvalidBalance`] when the settings are invalid or `make` fails for a static endpoint.
    pub fn build<S, Req, M>(
        &self,
        name: &str,
        mut make: M,
    ) -> Result<SharedBalancer<S, Req>, InvalidBalance>
    where
        M: FnMut(&str) -> Result<S, BoxError> + Send + 'static,
        S: Service<Req> + Send + 'static,
        S::Error: Into<BoxError>,
        Req: Send + 'static,
        DefaultClassifier: Classifier<S::Response, S::Error>,
    {
        self.validate()?;
        let set = Arc::new(EndpointSet {
            breakers: std::sync::Mutex::new(HashMap::new()),
            resolved: AtomicBool::new(false),
        });
        let guard = {
            let breaker = self.ejection.clone();
            let name = name.to_owned();
            let set = set.clone();
            move |key: &str, svc: S| {
                let handle = CircuitBreakerHandle::from_valid(
                    format!("{name}:{key}").into(),
                    breaker.clone(),
                );
                set.insert(key, handle.clone());
                endpoint_with(svc, handle)
            }
        };
        let endpoints: Changes<Endpoint<S>> = match &self.dns {
            None => {
                let mut inserts = Vec::new();
                for endpoint in &self.endpoints {
                    let svc = make(endpoint)
                        .map_err(|e| InvalidBalance::new(format!("endpoint `{endpoint}`: {e}")))?;
                    inserts.push(Ok(Change::Insert(endpoint.clone(), guard(endpoint, svc))));
                }
                set.resolved.store(true, Ordering::Release);
                Box::pin(futures::stream::iter(inserts).chain(futures::stream::pending()))
            }
            Some(dns) => {
                let host = dns.host.clone();
                let port = dns.port;
                let resolved = set.clone();
                let resolve = move || {
                    let host = host.clone();
                    let resolved = resolved.clone();
                    async move {
                        let addrs = tokio::net::lookup_host((host.as_str(), port))
                            .await
                            .map(Iterator::collect);
                        // After the first attempt, an empty set fails calls at once.
                        resolved.resolved.store(true, Ordering::Release);
                        addrs
                    }
                };
                let tracked = set.clone();
                let addrs = discover(resolve, dns.every, |addr| addr);
                Box::pin(addrs.filter_map(move |change| {
                    let change = match change {
                        Ok(Change::Insert(addr, _)) => {
                            let key = addr.to_string();
                            match make(&key) {
                                Ok(svc) => {
                                    let endpoint = guard(&key, svc);
                                    Some(Ok(Change::Insert(key, endpoint)))
                                }
                                Err(error) => {
                                    tracing::warn!(%error, endpoint = %key, "cannot make a service for a resolved endpoint; skipped");
                                    None
                                }
                            }
                        }
                        Ok(Change::Remove(addr)) => {
                            let key = addr.to_string();
                            tracked.remove(&key);
                            Some(Ok(Change::Remove(key)))
                        }
                        Err(e) => Some(Err(e)),
                    };
                    std::future::ready(change)
                }))
            }
        };
        Ok(SharedBalancer {
            balance: Arc::new(tokio::sync::Mutex::new(Balance::new(endpoints))),
            set,
        })
    }
}

type Changes<S> = Pin<Box<dyn futures::Stream<Item = Result<Change<String, S>, BoxError>> + Send>>;

/// The endpoints a [`SharedBalancer`] knows, with their breakers.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    breakers: std::sync::Mutex<HashMap<String, CircuitBreakerHandle>>,
    /// Whether the set is known (static lists at once, DNS after its first resolution).
    resolved: AtomicBool,
}

impl EndpointSet {
    fn insert(&self, key: &str, handle: CircuitBreakerHandle) {
        if let Ok(mut map) = self.breakers.lock() {
            map.insert(key.to_owned(), handle);
        }
    }

    fn remove(&self, key: &str) {
        if let Ok(mut map) = self.breakers.lock() {
            map.remove(key);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, CircuitBreakerHandle)> {
        let mut list: Vec<_> = self
            .breakers
            .lock()
            .map(|map| map.iter().map(|(k, h)| (k.clone(), h.clone())).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Why no call can be made now, if that is known: no endpoint at all, or no endpoint
    /// whose breaker admits a call (every one open, or half-open with its probe slots
    /// taken). When every one is open: the shortest remaining wait; when one is half-open,
    /// no known wait (a probe may finish at any time).
    fn unavailable(&self) -> Option<BoxError> {
        if !self.resolved.load(Ordering::Acquire) {
            return None;
        }
        let map = self.breakers.lock().ok()?;
        if map.is_empty() {
            return Some(Box::new(NoEndpoints(())));
        }
        let mut shortest = Duration::MAX;
        let mut probing = false;
        for handle in map.values() {
            if handle.admits_now() {
                return None;
            }
            match handle.open_remaining() {
                Some(wait) => shortest = shortest.min(wait),
                None => probing = true,
            }
        }
        let open = if probing {
            CircuitOpen::new(CircuitState::HalfOpen, None)
        } else {
            let remaining = (shortest != Duration::MAX).then_some(shortest);
            CircuitOpen::new(CircuitState::Open, remaining)
        };
        Some(Box::new(open))
    }
}

/// The balancer has no endpoint: the static list is empty or the DNS name resolved to no
/// address (or could not be resolved at all yet).
///
/// ```
/// fn no_endpoints(err: &archon_core::BoxError) -> bool {
///     err.is::<archon_client::balance::NoEndpoints>()
/// }
/// # let _ = no_endpoints;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no endpoint to balance over")]
pub struct NoEndpoints(());

/// A balancer built by [`BalanceConfig::build`]: power-of-two-choices over the endpoints, each
/// behind its own breaker; every clone shares the same balancer (calls queue briefly on a lock
/// while an endpoint is picked, as with tower's `Buffer`, but without a worker task).
///
/// An endpoint is out of the ready set while its breaker would reject a call: open, or
/// half-open with every probe slot taken (the other endpoints take the calls meanwhile). When
/// no endpoint admits a call, a call fails at once with [`CircuitOpen`] (when every endpoint
/// is open, with the shortest remaining wait; when one is half-open, without a wait); when
/// there is no endpoint, with [`NoEndpoints`].
///
/// ```
/// use archon_client::balance::{BalanceConfig, SharedBalancer};
/// let lb: SharedBalancer<_, ()> = BalanceConfig::endpoints(["a:1"])
///     .build("x", |_: &str| Ok(tower::service_fn(|_: ()| async {
///         Ok::<_, std::io::Error>(http::Response::new(()))
///     })))
///     .unwrap();
/// assert_eq!(lb.endpoint_breakers()[0].0, "a:1");
/// ```
pub struct SharedBalancer<S, Req>
where
    S: Service<Req>,
{
    balance: Arc<tokio::sync::Mutex<Balance<Changes<Endpoint<S>>, Req>>>,
    set: Arc<EndpointSet>,
}

impl<S: Service<Req>, Req> Clone for SharedBalancer<S, Req> {
    fn clone(&self) -> Self {
        Self {
            balance: self.balance.clone(),
            set: self.set.clone(),
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for SharedBalancer<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBalancer")
            .field("endpoints", &self.set.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req> SharedBalancer<S, Req> {
    /// The endpoints known now (`host:port`, sorted) and their breakers.
    ///
    /// ```
    /// use archon_client::balance::{BalanceConfig, SharedBalancer};
    /// use archon_client::circuit_breaker::CircuitState;
    /// let lb: SharedBalancer<_, ()> = BalanceConfig::endpoints(["b:2", "a:1"])
    ///     .build("inventory", |_: &str| Ok(tower::service_fn(|_: ()| async {
    ///         Ok::<_, std::io::Error>(http::Response::new(()))
    ///     })))
    ///     .unwrap();
    /// let endpoints = lb.endpoint_breakers();
    /// assert_eq!(endpoints[0].0, "a:1");
    /// assert_eq!(endpoints[0].1.name(), "inventory:a:1");
    /// assert_eq!(endpoints[1].1.state(), CircuitState::Closed);
    /// ```
    pub fn endpoint_breakers(&self) -> Vec<(String, CircuitBreakerHandle)> {
        self.set.snapshot()
    }

    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn set(&self) -> Arc<EndpointSet> {
        self.set.clone()
    }
}

impl<S, Req> Service<Req> for SharedBalancer<S, Req>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: Send + 'static,
    DefaultClassifier: Classifier<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // An endpoint is picked (and waited for) in the call, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let balance = self.balance.clone();
        let set = self.set.clone();
        Box::pin(async move {
            let mut lb = balance.lock().await;
            std::future::poll_fn(|cx| match lb.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => set
                    .unavailable()
                    .map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
            })
            .await?;
            let call = lb.call(req);
            drop(lb);
            call.await
        })
    }
}
