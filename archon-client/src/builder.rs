//! [`ResiliencePolicy`]: the whole stack from configuration, assembled in a fixed order.

use std::time::Duration;

use archon_core::BoxError;
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower::layer::util::Stack;
use tower::util::{BoxCloneSyncService, MapErrLayer};
use tower_service::Service;

use crate::bulkhead::{BulkheadConfig, BulkheadLayer};
use crate::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerError, CircuitBreakerHandle, CircuitBreakerLayer,
};
use crate::classify::{Classifier, DefaultClassifier};
use crate::hedge::{HedgeConfig, HedgeLayer};
use crate::rate_limit::{
    KeyedRateLimitConfig, KeyedRateLimitLayer, RateLimitConfig, RateLimitKey, RateLimitLayer,
};
use crate::retry::{
    DefaultRetryClassifier, RetryClassifier, RetryConfig, RetryPolicy, RetryRequest,
};
use crate::timeout::{DeadlineLayer, DeadlineRequest};

/// Every resilience setting of one upstream or route; a part left out is not in the stack at
/// all (it costs nothing).
///
/// ```
/// use archon_client::ResiliencePolicy;
/// let policy: ResiliencePolicy = toml::from_str(r#"
///     timeout = "2s"
///     deadline = "5s"
///     [retry]
///     max_attempts = 3
///     [circuit_breaker]
///     failure_rate_threshold = 50.0
///     window_size = 50
///     minimum_calls = 20
///     wait_in_open = "30s"
///     [bulkhead]
///     max_concurrent = 32
/// "#).unwrap();
/// assert!(policy.hedge.is_none());
/// let layer = policy.build("inventory").unwrap();
/// assert!(layer.circuit_breaker().is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ResiliencePolicy {
    /// Time limit of one attempt (tower's `Timeout`).
    #[serde(with = "archon_core::config::option_duration")]
    pub timeout: Option<Duration>,
    /// Time limit of the whole call, retries included; propagated as `grpc-timeout`.
    #[serde(with = "archon_core::config::option_duration")]
    pub deadline: Option<Duration>,
    /// Retries with backoff and budget.
    pub retry: Option<RetryConfig>,
    /// Hedged second attempts for slow idempotent calls (drawing on the retry budget).
    pub hedge: Option<HedgeConfig>,
    /// Circuit breaker.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Concurrency limit.
    pub bulkhead: Option<BulkheadConfig>,
    /// Client-side rate limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// Client-side rate limit per key (upstream host, path, or a header such as a tenant
    /// id), with a bounded number of keys; after the shared `rate_limit` when both are set.
    pub keyed_rate_limit: Option<KeyedRateLimitConfig>,
}

/// A [`ResiliencePolicy`] that cannot be built.
///
/// ```
/// use archon_client::{ResiliencePolicy, rate_limit::RateLimitConfig};
/// let mut policy = ResiliencePolicy::default();
/// policy.rate_limit = Some(RateLimitConfig { per_second: 0, ..Default::default() });
/// assert!(policy.build("x").is_err());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("invalid resilience policy `{name}`: {reason}")]
pub struct InvalidPolicy {
    name: String,
    reason: String,
}

impl ResiliencePolicy {
    /// Sets the per-attempt timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{Error, ErrorKind, ResiliencePolicy};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let layer = ResiliencePolicy::default().timeout(Duration::from_millis(100)).build("slow").unwrap();
    /// let svc = layer.wrap(tower::service_fn(|_: http::Request<()>| async {
    ///     tokio::time::sleep(Duration::from_secs(5)).await;
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }));
    /// let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    /// assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Timeout);
    /// # }
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the overall deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, retry::RetryConfig, timeout::DeadlineExceeded};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// // Each attempt takes 2 s: three attempts would not fit in the 3 s deadline.
    /// let layer = ResiliencePolicy::default()
    ///     .deadline(Duration::from_secs(3))
    ///     .retry(RetryConfig::default())
    ///     .build("slow")
    ///     .unwrap();
    /// let svc = layer.wrap(tower::service_fn(|_: http::Request<()>| async {
    ///     tokio::time::sleep(Duration::from_secs(2)).await;
    ///     Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
    /// }));
    /// let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    /// assert!(err.is::<DeadlineExceeded>());
    /// # }
    /// ```
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Enables retries.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use archon_client::{ResiliencePolicy, retry::RetryConfig};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// static CALLS: AtomicU32 = AtomicU32::new(0);
    /// let policy = ResiliencePolicy::default().retry(RetryConfig::default().max_attempts(3));
    /// let layer = policy.build("flaky").unwrap();
    /// let svc = layer.wrap(tower::service_fn(|_: http::Request<()>| async {
    ///     let status = if CALLS.fetch_add(1, Ordering::SeqCst) == 0 { 503 } else { 200 };
    ///     Ok::<_, std::io::Error>(http::Response::builder().status(status).body(()).unwrap())
    /// }));
    /// let resp = svc.oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!((resp.status().as_u16(), CALLS.load(Ordering::SeqCst)), (200, 2));
    /// # }
    /// ```
    #[must_use]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Enables hedging.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, hedge::HedgeConfig};
    /// let policy = ResiliencePolicy::default().hedge(HedgeConfig::fixed(Duration::from_millis(50)));
    /// assert_eq!(policy.hedge.unwrap().delay, Duration::from_millis(50));
    /// assert!(policy.build("inventory").is_ok());
    /// ```
    #[must_use]
    pub fn hedge(mut self, hedge: HedgeConfig) -> Self {
        self.hedge = Some(hedge);
        self
    }

    /// Enables the circuit breaker.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, circuit_breaker::{CircuitBreakerConfig, CircuitState}};
    /// let layer = ResiliencePolicy::default()
    ///     .circuit_breaker(CircuitBreakerConfig::default().minimum_calls(20))
    ///     .build("inventory")
    ///     .unwrap();
    /// let breaker = layer.circuit_breaker().unwrap();
    /// assert_eq!((breaker.name(), breaker.state()), ("inventory", CircuitState::Closed));
    /// ```
    #[must_use]
    pub fn circuit_breaker(mut self, breaker: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Enables the bulkhead.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, bulkhead::BulkheadConfig};
    /// let layer = ResiliencePolicy::default()
    ///     .bulkhead(BulkheadConfig { max_concurrent: 8, ..Default::default() })
    ///     .build("inventory")
    ///     .unwrap();
    /// assert_eq!(layer.bulkhead().unwrap().available_permits(), 8);
    /// ```
    #[must_use]
    pub fn bulkhead(mut self, bulkhead: BulkheadConfig) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Enables the rate limiter.
    ///
    /// ```
    /// use archon_client::{Error, ErrorKind, ResiliencePolicy, rate_limit::RateLimitConfig};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = ResiliencePolicy::default()
    ///     .rate_limit(RateLimitConfig { per_second: 1, burst: 1, ..Default::default() })
    ///     .build("inventory")
    ///     .unwrap();
    /// let svc = layer.wrap(tower::service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }));
    /// svc.clone().oneshot(http::Request::new(())).await.unwrap();
    /// let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    /// assert_eq!(Error::from_boxed(err).kind(), ErrorKind::RateLimited);
    /// # }
    /// ```
    #[must_use]
    pub fn rate_limit(mut self, rate_limit: RateLimitConfig) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// Enables the keyed rate limiter.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, rate_limit::{KeyedRateLimitConfig, RateLimitKey}};
    /// let policy = ResiliencePolicy::default()
    ///     .keyed_rate_limit(KeyedRateLimitConfig::new(10, RateLimitKey::Header("x-tenant".into())));
    /// assert!(policy.build("x").is_ok());
    /// ```
    #[must_use]
    pub fn keyed_rate_limit(mut self, keyed: KeyedRateLimitConfig) -> Self {
        self.keyed_rate_limit = Some(keyed);
        self
    }

    /// Builds the shared parts (breaker, bulkhead slots, limiter, budget) under `name`
    /// (used in metrics and logs).
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, retry::RetryConfig};
    /// let mut retry = RetryConfig::default();
    /// retry.grpc_retryable_codes = vec!["unavailable".into(), "sometimes".into()];
    /// let err = ResiliencePolicy::default().retry(retry).build("inventory").unwrap_err();
    /// assert!(err.to_string().contains("inventory"));
    /// assert!(err.to_string().contains("sometimes"));
    /// ```
    ///
    /// # Errors
    /// [`InvalidPolicy`] naming the part that is out of range.
    pub fn build(&self, name: &str) -> Result<ResilienceLayer, InvalidPolicy> {
        let invalid = |reason: String| InvalidPolicy {
            name: name.to_owned(),
            reason,
        };
        let breaker = self
            .circuit_breaker
            .clone()
            .map(|cfg| CircuitBreakerHandle::new(name, cfg))
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let rate_limit = self
            .rate_limit
            .map(RateLimitLayer::new)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let keyed_rate_limit = self
            .keyed_rate_limit
            .as_ref()
            .map(|cfg| KeyedRateLimitLayer::from_config(cfg, cfg.key.clone()))
            .transpose()
            .map_err(|e| invalid(format!("keyed_rate_limit: {e}")))?;
        if let Some(retry) = &self.retry {
            retry
                .grpc_codes()
                .map_err(|n| invalid(format!("unknown gRPC code `{n}` in retry")))?;
        }
        if let Some(problem) = self.hedge.as_ref().and_then(HedgeConfig::problem) {
            return Err(invalid(problem.to_owned()));
        }
        let retry = self.retry.as_ref().map(RetryPolicy::new);
        let budget = retry.as_ref().and_then(|r| r.budget().cloned());
        Ok(ResilienceLayer {
            timeout: self.timeout,
            deadline: self.deadline,
            hedge: self.hedge.map(|cfg| HedgeLayer::new(cfg, budget)),
            retry,
            breaker,
            bulkhead: self.bulkhead.map(|cfg| BulkheadLayer::new(name, cfg)),
            rate_limit,
            keyed_rate_limit,
        })
    }
}

/// The built stack of a [`ResiliencePolicy`]. Every service it wraps shares its breaker,
/// bulkhead, rate limiter and budget.
///
/// From the outside in, a call meets:
///
/// 1. **deadline**: one limit for the call, retries and backoff included, so retrying can
///    never make the caller wait longer than it agreed to;
/// 2. **retry** (with its budget): outside the breaker, so every attempt is seen (and can be
///    refused) by the breaker, and a rejection by an open circuit is *not* retried;
/// 3. **hedge**: inside retry, so a hedged pair counts as one attempt, and both legs pass the
///    breaker and bulkhead;
/// 4. **circuit breaker**: outside the bulkhead and limiter, so calls it rejects take no slot,
///    and slots being full does not count as the upstream failing;
/// 5. **bulkhead**, then 6. **rate limiter** (the shared one, then the keyed one): a call
///    holds a concurrency slot while it waits for its rate-limit turn, never the other way
///    round;
/// 7. **per-attempt timeout**: innermost, so it limits the network call alone and its expiry
///    is seen by the breaker as a failure and by retry as retryable.
///
/// A fallback, if any, goes outside all of this
/// ([`FallbackLayer`](crate::fallback::FallbackLayer) around [`wrap`](Self::wrap)'s service),
/// so it sees the final outcome.
///
/// ```
/// use std::time::Duration;
/// use archon_client::{ResiliencePolicy, circuit_breaker::CircuitBreakerConfig, retry::RetryConfig};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = ResiliencePolicy::default()
///     .timeout(Duration::from_secs(1))
///     .retry(RetryConfig::default())
///     .circuit_breaker(CircuitBreakerConfig::default())
///     .build("echo")
///     .unwrap();
/// let mut svc = layer.wrap(tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// }));
/// let resp = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// assert_eq!(resp.status(), 200);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ResilienceLayer {
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    retry: Option<RetryPolicy>,
    hedge: Option<HedgeLayer>,
    breaker: Option<CircuitBreakerHandle>,
    bulkhead: Option<BulkheadLayer>,
    rate_limit: Option<RateLimitLayer>,
    keyed_rate_limit: Option<KeyedRateLimitLayer<String, RateLimitKey>>,
}

type BreakerStack =
    Stack<CircuitBreakerLayer, MapErrLayer<fn(CircuitBreakerError<BoxError>) -> BoxError>>;

fn breaker_error(e: CircuitBreakerError<BoxError>) -> BoxError {
    e.into()
}

impl ResilienceLayer {
    /// The circuit breaker, when the policy has one.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, circuit_breaker::CircuitOpen};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = ResiliencePolicy::default().circuit_breaker(Default::default()).build("inventory").unwrap();
    /// let svc = layer.wrap(tower::service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, std::io::Error>(http::Response::new(()))
    /// }));
    /// // Every service the layer wraps shares its breaker.
    /// layer.circuit_breaker().unwrap().force_open();
    /// let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    /// assert!(err.is::<CircuitOpen>());
    /// # }
    /// ```
    pub fn circuit_breaker(&self) -> Option<&CircuitBreakerHandle> {
        self.breaker.as_ref()
    }

    /// The retry policy, when the policy has one.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, retry::RetryConfig};
    /// let layer = ResiliencePolicy::default().retry(RetryConfig::default()).build("inventory").unwrap();
    /// let budget = layer.retry_policy().unwrap().budget().unwrap();
    /// assert_eq!(budget.available(), 100); // 10 retries per second, over 10 s
    /// assert!(ResiliencePolicy::default().build("x").unwrap().retry_policy().is_none());
    /// ```
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The bulkhead, when the policy has one.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, bulkhead::BulkheadConfig};
    /// let layer = ResiliencePolicy::default()
    ///     .bulkhead(BulkheadConfig { max_concurrent: 2, ..Default::default() })
    ///     .build("inventory")
    ///     .unwrap();
    /// assert_eq!(layer.bulkhead().unwrap().available_permits(), 2);
    /// assert!(ResiliencePolicy::default().build("x").unwrap().bulkhead().is_none());
    /// ```
    pub fn bulkhead(&self) -> Option<&BulkheadLayer> {
        self.bulkhead.as_ref()
    }

    /// Wraps `inner` in the stack. The result is boxed (three boxed futures per call) so that
    /// every policy gives the same type; compose the layers yourself with `ServiceBuilder` for
    /// an unboxed stack (as the benchmarks do).
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, retry::RetryConfig};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let echo = tower::service_fn(|req: http::Request<String>| async move {
    ///     Ok::<_, std::io::Error>(http::Response::new(req.into_body()))
    /// });
    /// let plain = ResiliencePolicy::default().build("plain").unwrap();
    /// let guarded = ResiliencePolicy::default()
    ///     .timeout(Duration::from_secs(1))
    ///     .retry(RetryConfig::default())
    ///     .build("guarded")
    ///     .unwrap();
    /// // Whatever the policy, the wrapped service has the same type.
    /// for svc in [plain.wrap(echo), guarded.wrap(echo)] {
    ///     let resp = svc.oneshot(http::Request::new("ping".to_owned())).await.unwrap();
    ///     assert_eq!(resp.body(), "ping");
    /// }
    /// # }
    /// ```
    pub fn wrap<S, Req>(&self, inner: S) -> BoxCloneSyncService<Req, S::Response, BoxError>
    where
        S: Service<Req> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Response: Send + 'static,
        Req: RetryRequest + DeadlineRequest + Send + 'static,
        DefaultClassifier: Classifier<S::Response, BoxError>,
        DefaultRetryClassifier: RetryClassifier<S::Response, BoxError>,
    {
        // Boxed in three groups: nesting seven `option_layer`s doubles the type at every level
        // (`Either<L<S>, S>`), which makes compile times explode; three boxes per call cost
        // little next to a network call.
        let breaker: Option<BreakerStack> = self.breaker.clone().map(|h| {
            Stack::new(
                CircuitBreakerLayer::from_handle(h),
                MapErrLayer::new(breaker_error as fn(_) -> _),
            )
        });
        let inner: BoxCloneSyncService<Req, S::Response, BoxError> = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .option_layer(self.bulkhead.clone())
                .option_layer(self.rate_limit.clone())
                .option_layer(self.keyed_rate_limit.as_ref().map(|layer| {
                    let key = layer.key().clone();
                    layer.with_key_fn(move |req: &Req| key.of_any(req))
                }))
                .option_layer(self.timeout.map(tower::timeout::TimeoutLayer::new))
                .layer(MapErrLayer::new(Into::<BoxError>::into))
                .service(inner),
        );
        let middle: BoxCloneSyncService<Req, S::Response, BoxError> = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .option_layer(self.hedge.clone())
                .option_layer(breaker)
                .service(inner),
        );
        let svc = ServiceBuilder::new()
            .option_layer(self.deadline.map(DeadlineLayer::new))
            .option_layer(self.retry.clone().map(tower::retry::RetryLayer::new))
            .service(middle);
        BoxCloneSyncService::new(svc)
    }
}
