//! Hedging for idempotent reads: when the first attempt has not answered after a delay, send
//! a second one; the first good answer wins and the other is dropped (cancelled).
//!
//! The delay is fixed, or the observed p-th percentile latency of recent calls
//! ([`LatencyPercentile`]: e.g. hedge the slowest 5 %, whatever the upstream's latency is today).
//!
//! Hedges draw from a [`RetryBudget`] (share the retry policy's, so hedges and retries
//! together stay within the extra load it allows). Requests that are not idempotent or cannot
//! be cloned are never hedged.
//!
//! ```
//! use std::time::Duration;
//! use archon_client::hedge::{HedgeConfig, HedgeLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! let mut svc = ServiceBuilder::new()
//!     .layer(HedgeLayer::new(HedgeConfig::fixed(Duration::from_millis(10)), None))
//!     .service(service_fn(move |_: http::Request<()>| {
//!         let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
//!         async move {
//!             // The first attempt is stuck; the hedge answers.
//!             if first { tokio::time::sleep(Duration::from_secs(60)).await; }
//!             Ok::<_, archon_core::BoxError>("hedge")
//!         }
//!     }));
//! let answer = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(answer, "hedge");
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, select};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::retry::{RetryBudget, RetryRequest};

mod percentile;

use self::percentile::Estimator;
pub use self::percentile::LatencyPercentile;

/// Hedging settings.
///
/// ```
/// let cfg: archon_client::hedge::HedgeConfig = toml::from_str("delay = '50ms'").unwrap();
/// assert_eq!(cfg.delay.as_millis(), 50);
/// assert!(cfg.percentile.is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// How long the first attempt may take before a hedge is sent (pick about the p95 latency).
    /// With `percentile`, used until enough calls are seen.
    #[serde(with = "archon_core::config::duration")]
    pub delay: Duration,
    /// Hedge after the observed latency percentile of recent calls instead.
    pub percentile: Option<LatencyPercentile>,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(100),
            percentile: None,
        }
    }
}

impl HedgeConfig {
    /// Hedge after a fixed `delay`.
    ///
    /// ```
    /// let cfg = archon_client::hedge::HedgeConfig::fixed(std::time::Duration::from_millis(20));
    /// assert!(cfg.percentile.is_none());
    /// ```
    pub fn fixed(delay: Duration) -> Self {
        Self {
            delay,
            percentile: None,
        }
    }

    /// Hedge after the observed `percentile` latency, and after `delay` until enough calls
    /// are seen.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::hedge::{HedgeConfig, LatencyPercentile};
    /// let cfg = HedgeConfig::percentile(LatencyPercentile::new(95.0), Duration::from_millis(50));
    /// assert_eq!(cfg.percentile.unwrap().percentile, 95.0);
    /// ```
    pub fn percentile(percentile: LatencyPercentile, delay: Duration) -> Self {
        Self {
            delay,
            percentile: Some(percentile),
        }
    }

    /// Why the settings cannot work, if they cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        self.percentile
            .as_ref()
            .and_then(LatencyPercentile::problem)
    }
}

/// Wraps services in a [`Hedge`].
///
/// ```
/// let layer = archon_client::hedge::HedgeLayer::new(Default::default(), None);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    config: HedgeConfig,
    budget: Option<RetryBudget>,
    estimator: Option<Arc<Estimator>>,
}

impl HedgeLayer {
    /// Hedges after `config.delay` (or the observed percentile, with `config.percentile`:
    /// every service of this layer and its clones share the latency estimate), each hedge
    /// withdrawing from `budget` (none = unlimited). Out-of-range percentile settings are
    /// clamped (a percentile into 1..=100, a window of at least one call, `max_delay` at
    /// least `min_delay`); a [`ResiliencePolicy`](crate::ResiliencePolicy) rejects them instead.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    /// use archon_client::hedge::{HedgeConfig, HedgeLayer};
    /// use archon_client::retry::{RetryBudget, RetryBudgetConfig};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// static CALLS: AtomicU32 = AtomicU32::new(0);
    /// let empty = RetryBudget::new(RetryBudgetConfig { ratio: 0.0, min_per_second: 0, ..Default::default() });
    /// let svc = HedgeLayer::new(HedgeConfig::fixed(Duration::from_millis(10)), Some(empty))
    ///     .layer(service_fn(|_: http::Request<()>| async {
    ///         CALLS.fetch_add(1, Ordering::SeqCst);
    ///         tokio::time::sleep(Duration::from_millis(50)).await;
    ///         Ok::<_, archon_core::BoxError>("slow")
    ///     }));
    /// assert_eq!(svc.oneshot(http::Request::new(())).await.unwrap(), "slow");
    /// assert_eq!(CALLS.load(Ordering::SeqCst), 1); // slow, but the empty budget allowed no hedge
    /// # }
    /// ```
    pub fn new(config: HedgeConfig, budget: Option<RetryBudget>) -> Self {
        let estimator = config.percentile.map(|mut p| {
            p.percentile = if p.percentile.is_nan() {
                95.0
            } else {
                p.percentile.clamp(1.0, 100.0)
            };
            p.window = p.window.max(1);
            p.max_delay = p.max_delay.max(p.min_delay);
            Arc::new(Estimator::new(p))
        });
        Self {
            config,
            budget,
            estimator,
        }
    }

    /// The delay a call would wait now before its hedge: the observed percentile when enough
    /// calls were seen, else the fixed delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::hedge::{HedgeConfig, HedgeLayer, LatencyPercentile};
    /// let layer = HedgeLayer::new(HedgeConfig::percentile(LatencyPercentile::new(95.0), Duration::from_millis(40)), None);
    /// assert_eq!(layer.current_delay(), Duration::from_millis(40));
    /// ```
    pub fn current_delay(&self) -> Duration {
        current_delay(&self.config, self.estimator.as_deref())
    }
}

fn current_delay(config: &HedgeConfig, estimator: Option<&Estimator>) -> Duration {
    estimator.and_then(Estimator::delay).unwrap_or(config.delay)
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            config: self.config,
            budget: self.budget.clone(),
            estimator: self.estimator.clone(),
        }
    }
}

/// A service that sends a second attempt when the first is slow. Built by [`HedgeLayer`].
///
/// ```
/// use tower::Layer;
/// let svc = archon_client::hedge::HedgeLayer::new(Default::default(), None)
///     .layer(tower::service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>(()) }));
/// # drop(svc);
/// ```
#[derive(Debug, Clone)]
pub struct Hedge<S> {
    inner: S,
    config: HedgeConfig,
    budget: Option<RetryBudget>,
    estimator: Option<Arc<Estimator>>,
}

impl<S> Hedge<S> {
    /// The delay a call would wait now before its hedge (see [`HedgeLayer::current_delay`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::hedge::{HedgeConfig, HedgeLayer};
    /// use tower::Layer;
    /// let svc = HedgeLayer::new(HedgeConfig::fixed(Duration::from_millis(30)), None)
    ///     .layer(tower::service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>(()) }));
    /// assert_eq!(svc.current_delay(), Duration::from_millis(30));
    /// ```
    pub fn current_delay(&self) -> Duration {
        current_delay(&self.config, self.estimator.as_deref())
    }

    /// The inner service.
    ///
    /// ```
    /// use archon_client::hedge::HedgeLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = HedgeLayer::new(Default::default(), None)
    ///     .layer(service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>("inner") }));
    /// let inner = svc.get_ref().clone(); // sends one attempt, never a hedge
    /// assert_eq!(inner.oneshot(http::Request::new(())).await.unwrap(), "inner");
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use archon_client::hedge::HedgeLayer;
    /// use tower::{Layer, Service, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut svc = HedgeLayer::new(Default::default(), None)
    ///     .layer(service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>("inner") }));
    /// let inner = svc.get_mut().ready().await.unwrap();
    /// assert_eq!(inner.call(http::Request::new(())).await.unwrap(), "inner");
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// use archon_client::hedge::HedgeLayer;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let svc = HedgeLayer::new(Default::default(), None)
    ///     .layer(service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>("inner") }));
    /// let inner = svc.into_inner();
    /// assert_eq!(inner.oneshot(http::Request::new(())).await.unwrap(), "inner");
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The response future of [`Hedge`].
///
/// ```
/// use std::time::Duration;
/// use archon_client::hedge::{HedgeConfig, HedgeLayer, ResponseFuture};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut svc = HedgeLayer::new(HedgeConfig::fixed(Duration::from_millis(50)), None)
///     .layer(service_fn(|_: http::Request<()>| async { Ok::<_, archon_core::BoxError>("fast") }));
/// let fut: ResponseFuture<&str, _> = svc.ready().await.unwrap().call(http::Request::new(()));
/// assert_eq!(fut.await.unwrap(), "fast"); // answered before the hedge delay: one attempt
/// # }
/// ```
pub struct ResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, Req> Service<Req> for Hedge<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: RetryRequest + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let copy = if req.is_idempotent() {
            req.try_clone()
        } else {
            None
        };
        let primary = self.inner.call(req);
        let estimator = self.estimator.clone();
        let Some(copy) = copy else {
            let Some(estimator) = estimator else {
                return ResponseFuture {
                    inner: Box::pin(primary),
                };
            };
            return ResponseFuture {
                inner: Box::pin(async move {
                    let started = tokio::time::Instant::now();
                    let out = primary.await;
                    estimator.record(started.elapsed());
                    out
                }),
            };
        };
        let service = self.inner.clone();
        let delay = current_delay(&self.config, estimator.as_deref());
        let budget = self.budget.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let started = tokio::time::Instant::now();
                // The primary's latency (a lower bound when the hedge answered first).
                let record = |estimator: &Option<Arc<Estimator>>| {
                    if let Some(e) = estimator {
                        e.record(started.elapsed());
                    }
                };
                let primary = std::pin::pin!(primary);
                let timer = std::pin::pin!(tokio::time::sleep(delay));
                let primary = match select(primary, timer).await {
                    Either::Left((out, _)) => {
                        record(&estimator);
                        return out;
                    }
                    Either::Right(((), primary)) => primary,
                };
                if let Some(budget) = &budget
                    && !budget.withdraw()
                {
                    let out = primary.await;
                    record(&estimator);
                    return out;
                }
                metrics::counter!(crate::metric_names::HEDGE_ATTEMPTS).increment(1);
                let hedge = std::pin::pin!(service.oneshot(copy));
                let out = match select(primary, hedge).await {
                    // The first good answer wins; after a failure, wait for the other.
                    Either::Left((Ok(v), _)) | Either::Right((Ok(v), _)) => Ok(v),
                    Either::Left((Err(_), other)) => {
                        record(&estimator);
                        return other.await;
                    }
                    Either::Right((Err(_), other)) => other.await,
                };
                record(&estimator);
                out
            }),
        }
    }
}
