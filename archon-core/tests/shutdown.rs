//! Shutdown: readiness flips first, running work drains, stubborn work is cut at the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use archon_core::config::ShutdownConfig;
use archon_core::health::{HealthRegistry, HealthStatus};
use archon_core::shutdown::Shutdown;

fn config(readiness_delay_ms: u64, drain_timeout_ms: u64) -> ShutdownConfig {
    ShutdownConfig {
        readiness_delay: Duration::from_millis(readiness_delay_ms),
        drain_timeout: Duration::from_millis(drain_timeout_ms),
    }
}

#[tokio::test(start_paused = true)]
async fn running_task_is_drained_before_exit() {
    let shutdown = Shutdown::new(config(0, 5_000));
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let drain = shutdown.drain_token();
    let handle = shutdown.spawn(async move {
        drain.cancelled().await;
        // Finish the item in hand: takes a while, well within the deadline.
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.store(true, Ordering::SeqCst);
    });
    shutdown.trigger();
    let report = shutdown.wait().await;
    assert!(
        finished.load(Ordering::SeqCst),
        "the task finished before wait() returned"
    );
    assert_eq!(report.cut, 0);
    assert_eq!(handle.await.unwrap(), Some(()));
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_before_drain_begins() {
    let registry = HealthRegistry::default();
    let shutdown = Shutdown::new(config(2_000, 1_000)).with_health(registry.clone());
    let drain = shutdown.drain_token();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = Arc::clone(&seen);
    let watcher_registry = registry.clone();
    // Record readiness at the moment draining begins.
    tokio::spawn(async move {
        drain.cancelled().await;
        let status = watcher_registry.readiness().await.status;
        *record.lock().unwrap() = Some(status);
    });
    assert_eq!(registry.readiness().await.status, HealthStatus::Up);
    shutdown.trigger();
    // Readiness is down at once, while the drain token has not fired yet (readiness delay).
    assert_eq!(registry.readiness().await.status, HealthStatus::Down);
    assert!(!shutdown.drain_token().is_cancelled());
    shutdown.wait().await;
    tokio::task::yield_now().await;
    assert_eq!(*seen.lock().unwrap(), Some(HealthStatus::Down));
}

#[tokio::test(start_paused = true)]
async fn task_ignoring_cancellation_is_cut_at_the_deadline() {
    let shutdown = Shutdown::new(config(0, 1_000));
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let handle = shutdown.spawn(async move {
        // Ignores every token.
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        done.store(true, Ordering::SeqCst);
    });
    let cancel = shutdown.cancel_token();
    shutdown.trigger();
    let started = tokio::time::Instant::now();
    let report = shutdown.wait().await;
    assert_eq!(report.cut, 1);
    assert!(cancel.is_cancelled());
    assert!(!finished.load(Ordering::SeqCst));
    assert_eq!(
        handle.await.unwrap(),
        None,
        "the task was dropped, not completed"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_000) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn trigger_is_idempotent_and_observable() {
    let shutdown = Shutdown::new(config(0, 100));
    assert!(!shutdown.is_triggered());
    let waiter = shutdown.clone();
    let woke = tokio::spawn(async move { waiter.triggered().await });
    shutdown.trigger();
    shutdown.trigger();
    woke.await.unwrap();
    assert!(shutdown.is_triggered());
    assert_eq!(shutdown.wait().await.cut, 0);
}
