//! Load balancing over a static list of endpoints (tower's power-of-two-choices balancer)
//! with outlier ejection: each endpoint has its own circuit breaker, and an endpoint whose
//! breaker is open leaves the ready set until its wait is over (then half-open probes decide).
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

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Sleep;
use tower::balance::p2c::Balance;
use tower::discover::{Change, ServiceList};
use tower::load::{CompleteOnResponse, Load, PendingRequests};
use tower_service::Service;

use crate::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerHandle, InvalidConfig,
};
use crate::classify::{Classifier, DefaultClassifier};

/// Longest sleep before an ejected endpoint's breaker is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// One endpoint of a [`balanced`] set: its breaker, a pending-requests load, and ejection.
pub type Endpoint<S> = EjectOnOpen<PendingRequests<CircuitBreaker<S>>>;

/// A balancer over endpoints, as built by [`balanced`].
pub type Balanced<S, Req> = Balance<ServiceList<Vec<Endpoint<S>>>, Req>;

/// Balances calls over `endpoints` (name, service) with power-of-two-choices on pending
/// requests; each endpoint gets its own breaker named `<name>:<endpoint>` from `breaker`.
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
        let guarded = CircuitBreaker::new(svc, handle.clone());
        list.push(EjectOnOpen::new(
            PendingRequests::new(guarded, CompleteOnResponse::default()),
            handle,
        ));
    }
    Ok(Balance::new(ServiceList::new::<Req>(list)))
}

/// A stream of endpoint changes from re-resolving a name every `every`: the
/// [`Discover`](tower::discover::Discover) side of [`balanced_discover`].
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
                let guarded = CircuitBreaker::new(svc, handle.clone());
                Change::Insert(
                    addr,
                    EjectOnOpen::new(
                        PendingRequests::new(guarded, CompleteOnResponse::default()),
                        handle,
                    ),
                )
            }
            Change::Remove(addr) => Change::Remove(addr),
        })
    });
    let endpoints: Discovery<Endpoint<S>> = Box::pin(endpoints);
    Ok(Balance::new(endpoints))
}

/// Reports "not ready" while `breaker` is open, so a balancer routes around the endpoint
/// (outlier ejection) and takes it back when the wait is over.
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
    pub fn new(inner: S, breaker: CircuitBreakerHandle) -> Self {
        Self {
            inner,
            breaker,
            sleep: None,
        }
    }

    /// The endpoint's breaker.
    pub fn breaker(&self) -> &CircuitBreakerHandle {
        &self.breaker
    }

    /// The inner service.
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
            let Some(wait) = self.breaker.open_remaining() else {
                self.sleep = None;
                return self.inner.poll_ready(cx);
            };
            let wait = wait.min(RECHECK);
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
