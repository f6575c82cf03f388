#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The breaker's closed path and its rejections allocate nothing (counted by dhat's heap
//! profiler in testing mode).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use archon_client::Outcome;
use archon_client::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerHandle};
use tower::Service;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

fn poll_once<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("noop service is always ready"),
    }
}

#[test]
fn closed_path_and_rejections_do_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    for cfg in [
        CircuitBreakerConfig::default().count_window(100),
        CircuitBreakerConfig::default().time_window(10),
    ] {
        let handle = CircuitBreakerHandle::new("alloc", cfg.minimum_calls(1_000_000)).unwrap();
        let mut svc = CircuitBreaker::new(
            tower::service_fn(|fail: bool| {
                std::future::ready(if fail {
                    Err(())
                } else {
                    Ok::<_, ()>(http::Response::new(()))
                })
            }),
            handle.clone(),
        );
        // Warm up (thread-locals, lazy statics).
        let _ = poll_once(svc.call(false));

        let before = allocations();
        for i in 0..10_000 {
            let _ = poll_once(svc.call(i % 7 == 0));
            let permit = handle.try_acquire().unwrap();
            permit.record_with_duration(Outcome::Success, Duration::from_millis(1));
        }
        // dhat counts every thread of the process: allow a handful of background allocations
        // (test harness, lazy statics); one per call would show as 10,000.
        let allocated = allocations() - before;
        assert!(
            allocated < 10,
            "closed path allocated {allocated} blocks in 10,000 calls"
        );

        handle.force_open();
        let before = allocations();
        for _ in 0..1_000 {
            let err = poll_once(svc.call(false)).unwrap_err();
            assert!(err.as_open().is_some());
        }
        let allocated = allocations() - before;
        assert!(
            allocated < 10,
            "rejections allocated {allocated} blocks in 1,000 calls"
        );
        handle.reset();
    }
}
