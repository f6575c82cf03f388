//! Health checks: liveness and readiness, served over HTTP (`/livez`, `/readyz`) and as the
//! standard gRPC health service.
//!
//! Register checks in a [`HealthRegistry`]; each runs with a timeout, and its result is reused for
//! a short time so that a storm of probes does not hammer the database it pings. When shutdown
//! begins, [`HealthRegistry::set_draining`] makes readiness fail first, so load balancers stop
//! sending traffic before the servers stop accepting it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use archon_core::health::{CheckKind, HealthRegistry, HealthStatus};
//! use archon_core::config::HealthConfig;
//!
//! let registry = HealthRegistry::new(HealthConfig::default());
//! // A closure is a check.
//! registry.register("database", CheckKind::Readiness, || async { Ok(()) });
//! registry.register("cache", CheckKind::Readiness, || async { Err("connection refused".into()) });
//!
//! let report = registry.readiness().await;
//! assert_eq!(report.status, HealthStatus::Down);
//! assert_eq!(report.checks[1].error.as_deref(), Some("connection refused"));
//! assert_eq!(registry.liveness().await.status, HealthStatus::Up);
//! # }
//! ```

#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "http")]
mod http;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

#[cfg(feature = "grpc")]
pub use self::grpc::GrpcHealth;
#[cfg(feature = "http")]
pub use self::http::router;

use crate::BoxError;
use crate::config::HealthConfig;

/// A dependency or internal condition the service's health depends on.
///
/// Usable as `Arc<dyn HealthCheck>`. Any `Fn() -> impl Future<Output = Result<(), BoxError>>`
/// closure is a check; implement the trait for a type that holds a connection pool:
///
/// ```
/// use archon_core::{BoxError, health::HealthCheck};
///
/// struct DatabaseCheck { reachable: bool }
///
/// #[async_trait::async_trait]
/// impl HealthCheck for DatabaseCheck {
///     async fn check(&self) -> Result<(), BoxError> {
///         if self.reachable { Ok(()) } else { Err("database unreachable".into()) }
///     }
/// }
/// let _check: std::sync::Arc<dyn HealthCheck> = std::sync::Arc::new(DatabaseCheck { reachable: true });
/// ```
#[async_trait::async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// `Ok` when healthy; the error's text is shown in the health report.
    async fn check(&self) -> Result<(), BoxError>;
}

#[async_trait::async_trait]
impl<F, Fut> HealthCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    async fn check(&self) -> Result<(), BoxError> {
        self().await
    }
}

/// Which probe a check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CheckKind {
    /// "Restart me if this fails": only for conditions a restart fixes (a deadlocked worker).
    Liveness,
    /// "Do not send me traffic while this fails": dependencies, warm-up, draining.
    Readiness,
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Healthy.
    Up,
    /// Not healthy.
    Down,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// The name it was registered under.
    pub name: String,
    /// Up or down.
    pub status: HealthStatus,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the check took, in milliseconds (of the run whose result this is).
    pub duration_ms: u64,
}

/// The answer to a liveness or readiness probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Up only if every check is up (and, for readiness, the service is not draining).
    pub status: HealthStatus,
    /// True once shutdown has begun.
    pub draining: bool,
    /// Each check's result, in registration order.
    pub checks: Vec<CheckReport>,
}

struct Cached {
    at: Instant,
    report: CheckReport,
}

struct Entry {
    name: String,
    kind: CheckKind,
    timeout: Duration,
    check: Arc<dyn HealthCheck>,
    // Held across the check so that concurrent probes wait for one run instead of each running it.
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl Entry {
    async fn run(&self, ttl: Duration) -> CheckReport {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| c.at.elapsed() < ttl) {
            return cached.report.clone();
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, self.check.check()).await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("timed out after {:?}", self.timeout)),
        };
        if let Some(error) = &error {
            tracing::warn!(check = %self.name, %error, "health check failed");
        }
        let report = CheckReport {
            name: self.name.clone(),
            status: if error.is_none() {
                HealthStatus::Up
            } else {
                HealthStatus::Down
            },
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        *cache = Some(Cached {
            at: Instant::now(),
            report: report.clone(),
        });
        report
    }
}

struct Inner {
    config: HealthConfig,
    checks: RwLock<Vec<Arc<Entry>>>,
    draining: AtomicBool,
    changed: tokio::sync::watch::Sender<()>,
}

/// The service's health checks. Cheap to clone; clones share the checks.
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.entries().iter().map(|e| e.name.clone()).collect();
        f.debug_struct("HealthRegistry")
            .field("checks", &names)
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

impl HealthRegistry {
    /// An empty registry: live and ready.
    pub fn new(config: HealthConfig) -> Self {
        let (changed, _) = tokio::sync::watch::channel(());
        Self {
            inner: Arc::new(Inner {
                config,
                checks: RwLock::new(Vec::new()),
                draining: AtomicBool::new(false),
                changed,
            }),
        }
    }

    /// Adds a check with the configured timeout. A later check with the same name replaces the
    /// earlier one.
    pub fn register<C: HealthCheck>(&self, name: impl Into<String>, kind: CheckKind, check: C) {
        let timeout = self.inner.config.check_timeout;
        self.register_arc(name, kind, timeout, Arc::new(check));
    }

    /// Adds a shared check with its own timeout.
    pub fn register_arc(
        &self,
        name: impl Into<String>,
        kind: CheckKind,
        timeout: Duration,
        check: Arc<dyn HealthCheck>,
    ) {
        let name = name.into();
        let entry = Arc::new(Entry {
            name,
            kind,
            timeout,
            check,
            cache: tokio::sync::Mutex::new(None),
        });
        {
            let mut checks = self.inner.checks.write().unwrap_or_else(|e| e.into_inner());
            checks.retain(|e| e.name != entry.name);
            checks.push(entry);
        }
        self.inner.changed.send_replace(());
    }

    /// Marks the service as shutting down: readiness reports down from now on.
    pub fn set_draining(&self) {
        if !self.inner.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("readiness now reports NOT_SERVING: shutting down");
            self.inner.changed.send_replace(());
        }
    }

    /// Whether [`set_draining`](Self::set_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Runs (or reuses) the liveness checks.
    pub async fn liveness(&self) -> HealthReport {
        self.report(CheckKind::Liveness).await
    }

    /// Runs (or reuses) the readiness checks; down while draining.
    pub async fn readiness(&self) -> HealthReport {
        self.report(CheckKind::Readiness).await
    }

    /// The result of the one check called `name`, if registered.
    pub async fn check(&self, name: &str) -> Option<CheckReport> {
        let entry = self.entries().into_iter().find(|e| e.name == name)?;
        Some(entry.run(self.inner.config.cache_ttl).await)
    }

    /// Resolves when a check is added or draining begins (used by gRPC `Watch`).
    #[cfg(feature = "grpc")]
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.inner.changed.subscribe()
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        self.inner
            .checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn report(&self, kind: CheckKind) -> HealthReport {
        let ttl = self.inner.config.cache_ttl;
        let entries: Vec<_> = self
            .entries()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect();
        let checks = futures::future::join_all(entries.iter().map(|e| e.run(ttl))).await;
        let draining = self.is_draining();
        let all_up = checks.iter().all(|c| c.status == HealthStatus::Up);
        let up = all_up && !(kind == CheckKind::Readiness && draining);
        HealthReport {
            status: if up {
                HealthStatus::Up
            } else {
                HealthStatus::Down
            },
            draining,
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn config(ttl_ms: u64, timeout_ms: u64) -> HealthConfig {
        HealthConfig {
            cache_ttl: Duration::from_millis(ttl_ms),
            check_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn concurrent_probes_share_one_run_within_the_ttl() {
        let registry = HealthRegistry::new(config(60_000, 1_000));
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        registry.register("db", CheckKind::Readiness, move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        });
        let probes = (0..50).map(|_| registry.readiness());
        let reports = futures::future::join_all(probes).await;
        assert!(reports.iter().all(|r| r.status == HealthStatus::Up));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn results_expire_after_the_ttl() {
        let registry = HealthRegistry::new(config(0, 1_000));
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        registry.register("db", CheckKind::Readiness, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        registry.readiness().await;
        registry.readiness().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_check_times_out_as_down() {
        let registry = HealthRegistry::new(config(0, 50));
        registry.register("slow", CheckKind::Liveness, || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        });
        let report = registry.liveness().await;
        assert_eq!(report.status, HealthStatus::Down);
        assert!(
            report.checks[0]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("timed out")
        );
    }

    #[tokio::test]
    async fn draining_fails_readiness_but_not_liveness() {
        let registry = HealthRegistry::default();
        assert_eq!(registry.readiness().await.status, HealthStatus::Up);
        registry.set_draining();
        assert_eq!(registry.readiness().await.status, HealthStatus::Down);
        assert_eq!(registry.liveness().await.status, HealthStatus::Up);
    }
}
