//! Graceful shutdown: readiness first, then drain, then cancel.
//!
//! [`Shutdown`] is triggered by SIGINT/SIGTERM ([`Shutdown::listen_for_signals`]) or by
//! [`Shutdown::trigger`]. [`Shutdown::wait`] then runs the sequence:
//!
//! 1. readiness turns NOT_SERVING ([`HealthRegistry::set_draining`]);
//! 2. after `readiness_delay`, the [`drain_token`](Shutdown::drain_token) fires: servers stop
//!    accepting, workers finish what they hold and take nothing new;
//! 3. tracked tasks ([`Shutdown::spawn`]) get up to `drain_timeout` to finish;
//! 4. then the [`cancel_token`](Shutdown::cancel_token) fires and tracked tasks still running are
//!    dropped.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use archon_core::{config::ShutdownConfig, shutdown::Shutdown};
//!
//! let shutdown = Shutdown::new(ShutdownConfig {
//!     drain_timeout: Duration::from_millis(100),
//!     ..ShutdownConfig::default()
//! });
//! let drain = shutdown.drain_token();
//! shutdown.spawn(async move {
//!     drain.cancelled().await; // finish the current item, then stop
//! });
//! shutdown.trigger();
//! let report = shutdown.wait().await;
//! assert_eq!(report.cut, 0);
//! # }
//! ```

#[cfg(any(feature = "http", feature = "grpc"))]
mod serve;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[cfg(any(feature = "http", feature = "grpc"))]
pub use self::serve::{Servers, bind};

use crate::config::ShutdownConfig;
use crate::health::HealthRegistry;
use crate::{Error, Result};

#[derive(Debug)]
struct Inner {
    config: ShutdownConfig,
    triggered: CancellationToken,
    drain: CancellationToken,
    cancel: CancellationToken,
    tracker: TaskTracker,
    running: AtomicUsize,
    health: std::sync::OnceLock<HealthRegistry>,
}

/// Coordinates a service's graceful shutdown. Cheap to clone; clones share state.
///
/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

/// How the shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// From the trigger to the end of the drain (or the deadline).
    pub elapsed: Duration,
    /// Tracked tasks still running at the deadline, which were cancelled.
    pub cut: usize,
}

impl Shutdown {
    /// A shutdown coordinator with these timings.
    pub fn new(config: ShutdownConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                triggered: CancellationToken::new(),
                drain: CancellationToken::new(),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
                running: AtomicUsize::new(0),
                health: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Flips this registry's readiness to NOT_SERVING as the first step of shutdown (the first
    /// registry given wins; clones share it).
    #[must_use]
    pub fn with_health(self, registry: HealthRegistry) -> Self {
        let _already_set = self.inner.health.set(registry);
        self
    }

    /// Triggers shutdown on SIGINT (Ctrl-C) or, on Unix, SIGTERM. Must be called inside a Tokio
    /// runtime.
    ///
    /// # Errors
    /// [`Error::Signal`] if the signal handlers cannot be installed.
    pub fn listen_for_signals(&self) -> Result<()> {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::Signal)?;
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let terminate = async move {
                term.recv().await;
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "cannot listen for Ctrl-C");
                        return;
                    }
                    tracing::info!(signal = "SIGINT", "shutdown requested");
                }
                () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                () = this.inner.triggered.cancelled() => return,
            }
            this.trigger();
        });
        Ok(())
    }

    /// Starts the shutdown sequence (idempotent).
    pub fn trigger(&self) {
        if !self.inner.triggered.is_cancelled() {
            if let Some(health) = self.inner.health.get() {
                health.set_draining();
            }
            self.inner.triggered.cancel();
        }
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub async fn triggered(&self) {
        self.inner.triggered.cancelled().await;
    }

    /// Fires when draining begins: stop accepting new work, finish what you hold.
    pub fn drain_token(&self) -> CancellationToken {
        self.inner.drain.clone()
    }

    /// Fires at the drain deadline: abandon what you hold.
    pub fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// The tracker [`wait`](Self::wait) drains. Tasks spawned on it directly are waited for but
    /// not cut at the deadline: prefer [`spawn`](Self::spawn).
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Spawns a task that shutdown waits for, and drops if it is still running at the deadline.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        let this = Arc::clone(&self.inner);
        this.running.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard(Arc::clone(&this));
        self.inner.tracker.spawn(async move {
            let _guard = guard;
            tokio::select! {
                biased;
                output = task => Some(output),
                () = cancel.cancelled() => None,
            }
        })
    }

    /// Waits for a trigger, then runs the sequence in the [module docs](self).
    pub async fn wait(&self) -> ShutdownReport {
        self.triggered().await;
        let started = Instant::now();
        let config = &self.inner.config;
        if !config.readiness_delay.is_zero() {
            tokio::time::sleep(config.readiness_delay).await;
        }
        self.inner.drain.cancel();
        self.inner.tracker.close();
        let drained = tokio::time::timeout(config.drain_timeout, self.inner.tracker.wait())
            .await
            .is_ok();
        let mut cut = 0;
        if !drained {
            cut = self.inner.running.load(Ordering::SeqCst);
            tracing::warn!(tasks = cut, timeout = ?config.drain_timeout, "drain deadline reached; cancelling");
        }
        self.inner.cancel.cancel();
        if !drained {
            // Tasks from `spawn` end at once now; give the rest a moment to see the token.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.tracker.wait()).await;
        }
        let report = ShutdownReport {
            elapsed: started.elapsed(),
            cut,
        };
        tracing::info!(elapsed = ?report.elapsed, cut = report.cut, "shutdown complete");
        report
    }
}

/// Counts tasks from [`Shutdown::spawn`] still running.
struct RunningGuard(Arc<Inner>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}
