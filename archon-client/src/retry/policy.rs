//! [`RetryPolicy`]: a `tower::retry::Policy` with backoff, deadline, budget and server hints.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::backoff::ExponentialBackoff;
use super::budget::{RetryBudget, RetryBudgetConfig};
use super::classify::{DefaultRetryClassifier, RetryAction, RetryClassifier};
use super::request::RetryRequest;

/// Retry settings (serde-configurable).
///
/// ```
/// let cfg: archon_client::retry::RetryConfig = toml::from_str(r#"
///     max_attempts = 4
///     max_elapsed = "10s"
///     grpc_retryable_codes = ["unavailable", "resource_exhausted"]
///     [backoff]
///     initial_backoff = "50ms"
///     max_backoff = "2s"
///     [budget]
///     ratio = 0.1
/// "#).unwrap();
/// assert_eq!(cfg.max_attempts, 4);
/// assert_eq!(cfg.budget.unwrap().min_per_second, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (Resilience4j's default: 3).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: ExponentialBackoff,
    /// No retry starts later than this after the first attempt ended (the clock starts when
    /// the first retry is considered, so a call that needs no retry reads no clock).
    #[serde(with = "archon_core::config::duration")]
    pub max_elapsed: Duration,
    /// A server asking to wait longer than this (`Retry-After`, `grpc-retry-pushback-ms`) is
    /// not retried.
    #[serde(with = "archon_core::config::duration")]
    pub max_retry_after: Duration,
    /// The retry budget; `None` for no budget (not recommended).
    pub budget: Option<RetryBudgetConfig>,
    /// gRPC status codes (lower-case names such as `"unavailable"`) that are retried.
    pub grpc_retryable_codes: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: ExponentialBackoff::default(),
            max_elapsed: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(30),
            budget: Some(RetryBudgetConfig::default()),
            grpc_retryable_codes: vec!["unavailable".to_owned()],
        }
    }
}

/// The gRPC code number of a lower-case (or upper-case) code name.
pub(crate) fn grpc_code(name: &str) -> Option<i32> {
    const NAMES: [&str; 17] = [
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    let lower = name.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|n| *n == lower)
        .and_then(|i| i32::try_from(i).ok())
}

impl RetryConfig {
    /// Sets the attempts in all (first included).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use archon_client::retry::{RetryConfig, RetryPolicy};
    /// use tower::{ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// static CALLS: AtomicU32 = AtomicU32::new(0);
    /// let svc = ServiceBuilder::new()
    ///     .layer(RetryLayer::new(RetryPolicy::new(&RetryConfig::default().max_attempts(2))))
    ///     .service(service_fn(|_: http::Request<()>| async {
    ///         CALLS.fetch_add(1, Ordering::SeqCst);
    ///         Ok::<_, archon_core::BoxError>(http::Response::builder().status(503).body(()).unwrap())
    ///     }));
    /// assert_eq!(svc.oneshot(http::Request::new(())).await.unwrap().status(), 503);
    /// assert_eq!(CALLS.load(Ordering::SeqCst), 2); // the first attempt and one retry
    /// # }
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the backoff.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::{ExponentialBackoff, RetryConfig};
    /// let cfg = RetryConfig::default()
    ///     .backoff(ExponentialBackoff::new(Duration::from_millis(20), Duration::from_secs(1), 3.0));
    /// assert_eq!(cfg.backoff.ceiling(1), Duration::from_millis(60));
    /// ```
    #[must_use]
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the budget (`None` = unlimited retries).
    ///
    /// ```
    /// use archon_client::retry::{RetryBudgetConfig, RetryConfig, RetryPolicy};
    /// let tight = RetryConfig::default().budget(Some(RetryBudgetConfig { ratio: 0.1, ..Default::default() }));
    /// assert_eq!(tight.budget.unwrap().ratio, 0.1);
    /// let unlimited = RetryConfig::default().budget(None);
    /// assert!(RetryPolicy::new(&unlimited).budget().is_none());
    /// ```
    #[must_use]
    pub fn budget(mut self, budget: Option<RetryBudgetConfig>) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the longest time after the first attempt at which a retry may start.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::RetryConfig;
    /// let cfg = RetryConfig::default().max_attempts(10).max_elapsed(Duration::from_secs(5));
    /// assert_eq!(cfg.max_elapsed, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn max_elapsed(mut self, max: Duration) -> Self {
        self.max_elapsed = max;
        self
    }

    /// The gRPC codes named in `grpc_retryable_codes`; unknown names are returned as `Err`.
    ///
    /// ```
    /// use archon_client::retry::RetryConfig;
    /// let mut cfg = RetryConfig::default();
    /// assert_eq!(cfg.grpc_codes(), Ok(vec![14])); // unavailable
    /// cfg.grpc_retryable_codes = vec!["resource_exhausted".into(), "sometimes".into()];
    /// assert_eq!(cfg.grpc_codes(), Err("sometimes".to_owned()));
    /// ```
    ///
    /// # Errors
    /// The first name that is not a gRPC code.
    pub fn grpc_codes(&self) -> Result<Vec<i32>, String> {
        self.grpc_retryable_codes
            .iter()
            .map(|n| grpc_code(n).ok_or_else(|| n.clone()))
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Settings {
    /// Kept here (not beside the settings) so a per-call clone bumps one `Arc`, not two.
    budget: Option<RetryBudget>,
    max_attempts: u32,
    backoff: ExponentialBackoff,
    max_elapsed: Duration,
    max_retry_after: Duration,
}

/// A `tower::retry::Policy`: exponential backoff with full jitter, at most `max_attempts`
/// attempts and `max_elapsed` time, a shared [`RetryBudget`], server hints honoured, and only
/// idempotent, replayable requests retried.
///
/// tower's `Retry` clones the policy for every call, so each clone starts a fresh count of
/// attempts and a fresh clock; the budget is shared by all clones. The clock is read only once
/// a retry is considered: `max_elapsed` counts from the end of the first attempt. A request that is not
/// idempotent or cannot be cloned is sent once (and earns no budget).
///
/// ```
/// use archon_client::retry::{RetryConfig, RetryPolicy};
/// use tower::{ServiceBuilder, retry::RetryLayer, service_fn};
///
/// let policy = RetryPolicy::new(&RetryConfig::default());
/// let svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(policy.clone()))
///     .service(service_fn(|_req: http::Request<()>| async {
///         Ok::<_, archon_core::BoxError>(http::Response::new(()))
///     }));
/// # drop(svc);
/// println!("{} retries available", policy.budget().unwrap().available());
/// ```
#[derive(Debug)]
pub struct RetryPolicy<C = DefaultRetryClassifier> {
    settings: Arc<Settings>,
    classifier: C,
    attempts: u32,
    /// When the first retry was considered (read lazily: a call that needs no retry reads no
    /// clock).
    started: Option<Instant>,
}

impl<C: Clone> Clone for RetryPolicy<C> {
    /// A fresh per-call copy: attempts and clock start again, the budget is shared.
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            classifier: self.classifier.clone(),
            attempts: 0,
            started: None,
        }
    }
}

impl RetryPolicy {
    /// A policy from `config`, with a new budget and the default classifier (gRPC codes from
    /// the config; unknown names are ignored with a warning).
    ///
    /// ```
    /// use archon_client::retry::{RetryConfig, RetryPolicy};
    /// let policy = RetryPolicy::new(&RetryConfig::default());
    /// assert_eq!(policy.budget().unwrap().available(), 100);
    /// // Each policy built by `new` has a budget of its own.
    /// let other = RetryPolicy::new(&RetryConfig::default());
    /// assert!(policy.budget().unwrap().withdraw());
    /// assert_eq!(other.budget().unwrap().available(), 100);
    /// ```
    pub fn new(config: &RetryConfig) -> Self {
        let codes = config
            .grpc_retryable_codes
            .iter()
            .filter_map(|n| {
                let code = grpc_code(n);
                if code.is_none() {
                    tracing::warn!(code = %n, "unknown gRPC status code name in retry config; ignored");
                }
                code
            })
            .collect::<Vec<_>>();
        Self {
            settings: Arc::new(Settings {
                budget: config.budget.map(RetryBudget::new),
                max_attempts: config.max_attempts.max(1),
                backoff: config.backoff,
                max_elapsed: config.max_elapsed,
                max_retry_after: config.max_retry_after,
            }),
            classifier: DefaultRetryClassifier::with_grpc_codes(codes),
            attempts: 0,
            started: None,
        }
    }
}

impl<C> RetryPolicy<C> {
    /// Shares `budget` (e.g. one budget for every route of an upstream, or with hedging).
    ///
    /// ```
    /// use archon_client::retry::{RetryBudget, RetryBudgetConfig, RetryConfig, RetryPolicy};
    /// let shared = RetryBudget::new(RetryBudgetConfig::default());
    /// let reads = RetryPolicy::new(&RetryConfig::default()).with_budget(Some(shared.clone()));
    /// let writes = RetryPolicy::new(&RetryConfig::default()).with_budget(Some(shared.clone()));
    /// assert!(reads.budget().unwrap().withdraw());
    /// assert_eq!(writes.budget().unwrap().available(), 99);
    /// ```
    #[must_use]
    pub fn with_budget(mut self, budget: Option<RetryBudget>) -> Self {
        let mut settings = Settings::clone(&self.settings);
        settings.budget = budget;
        self.settings = Arc::new(settings);
        self
    }

    /// Uses `classifier` to decide what is retried.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use archon_client::retry::{RetryAction, RetryConfig, RetryPolicy};
    /// use tower::{ServiceBuilder, ServiceExt, retry::RetryLayer, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// static CALLS: AtomicU32 = AtomicU32::new(0);
    /// // Also retry 404: the resource may not have been replicated yet.
    /// let policy = RetryPolicy::new(&RetryConfig::default()).classifier(
    ///     |r: &Result<http::Response<()>, archon_core::BoxError>| match r {
    ///         Ok(resp) if resp.status() == 404 => RetryAction::Retry,
    ///         Ok(_) => RetryAction::Success,
    ///         Err(_) => RetryAction::Fail,
    ///     },
    /// );
    /// let svc = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(service_fn(|_: http::Request<()>| async {
    ///     let status = if CALLS.fetch_add(1, Ordering::SeqCst) == 0 { 404 } else { 200 };
    ///     Ok::<_, archon_core::BoxError>(http::Response::builder().status(status).body(()).unwrap())
    /// }));
    /// assert_eq!(svc.oneshot(http::Request::new(())).await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> RetryPolicy<C2> {
        RetryPolicy {
            settings: self.settings,
            classifier,
            attempts: 0,
            started: self.started,
        }
    }

    /// The shared budget.
    ///
    /// ```
    /// use archon_client::retry::{RetryConfig, RetryPolicy};
    /// let policy = RetryPolicy::new(&RetryConfig::default());
    /// let per_call = policy.clone(); // what tower's `Retry` does for every call
    /// assert!(per_call.budget().unwrap().withdraw());
    /// assert_eq!(policy.budget().unwrap().available(), 99); // shared by the clones
    /// ```
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.settings.budget.as_ref()
    }
}

impl<Req, Res, E, C> tower::retry::Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: RetryRequest,
    C: RetryClassifier<Res, E>,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        self.attempts += 1;
        let settings = &self.settings;
        let delay = match self.classifier.classify(result) {
            RetryAction::Success | RetryAction::Fail => {
                if self.attempts == 1
                    && let Some(budget) = &self.settings.budget
                {
                    budget.deposit_cheap();
                }
                return None;
            }
            RetryAction::Retry => settings.backoff.delay(self.attempts - 1),
            RetryAction::RetryAfter(wait) if wait <= settings.max_retry_after => wait,
            RetryAction::RetryAfter(wait) => {
                tracing::debug!(
                    ?wait,
                    "server asked to wait longer than max_retry_after; not retrying"
                );
                return None;
            }
        };
        if self.attempts >= settings.max_attempts {
            return None;
        }
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        if now.saturating_duration_since(started) + delay > settings.max_elapsed {
            return None;
        }
        if let Some(budget) = &self.settings.budget
            && !budget.withdraw()
        {
            metrics::counter!(crate::metric_names::RETRY_BUDGET_REJECTIONS).increment(1);
            self.classifier.on_budget_exhausted(result);
            return None;
        }
        metrics::counter!(crate::metric_names::RETRY_ATTEMPTS).increment(1);
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if req.is_idempotent() {
            req.try_clone()
        } else {
            None
        }
    }
}
