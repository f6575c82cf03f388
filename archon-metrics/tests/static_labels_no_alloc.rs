//! Recording through a registered handle allocates nothing (counted by a global allocator
//! wrapper, with the real Prometheus recorder installed). The `metrics` macros, even with static
//! labels, cost one small allocation per call inside the Prometheus exporter (`Key::to_retained`),
//! which is why Archon's hot paths keep handles (the RED layers keep theirs per label set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::convert::Infallible;

use archon_metrics::messaging::MessagingInstruments;
use archon_metrics::{MetricsConfig, ObserveServerLayer};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer as _, Service as _, ServiceExt as _};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 1_000;

fn allocations_per_call(op: impl Fn()) -> f64 {
    op(); // registers the series
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        op();
    }
    region.change().allocations as f64 / N as f64
}

/// The allocator counts the whole process, and the harness or an exporter thread may allocate
/// once while we measure: a per-call allocation shows as >= 1.0, background noise as ~0.001.
fn assert_no_per_call_allocation(per_call: f64) {
    assert!(per_call < 0.01, "{per_call} allocations per call");
}

#[test]
fn static_label_sets_do_not_allocate() {
    let service = archon_core::ServiceInfo::new("svc", "1.0.0");
    let _metrics = archon_metrics::install(&MetricsConfig::new(&service)).unwrap();

    // Handles: what MessagingInstruments keeps, and what Archon crates should keep.
    let bus = MessagingInstruments::new("nats", "orders.created").with_consumer_group("billing");
    assert_no_per_call_allocation(allocations_per_call(|| bus.record_sent(1)));
    assert_no_per_call_allocation(allocations_per_call(|| bus.record_consumed(1)));
    let breaker_rejections = metrics::counter!(
        archon_metrics::names::ARCHON_CIRCUIT_BREAKER_REJECTED_CALLS.name,
        archon_metrics::names::attr::ARCHON_POLICY_NAME => "orders"
    );
    assert_no_per_call_allocation(allocations_per_call(|| breaker_rejections.increment(1)));
    let permits = metrics::gauge!(
        archon_metrics::names::ARCHON_BULKHEAD_PERMITS_IN_USE.name,
        archon_metrics::names::attr::ARCHON_POLICY_NAME => "orders"
    );
    assert_no_per_call_allocation(allocations_per_call(|| permits.increment(1.0)));

    // For the record: the macro path with static labels, looked up on every call.
    let macro_path = allocations_per_call(|| {
        metrics::counter!("archon.retry.attempts", "archon.policy.name" => "orders").increment(1);
    });
    eprintln!("counter! macro with static labels: {macro_path} allocations per call");

    // The RED layer (metrics only), per request, once its series exists: no allocation either
    // (the histogram's sample storage grows by one block per many samples, hence "< 0.1").
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut svc = ObserveServerLayer::new()
        .tracing(false)
        .layer(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(()))
        }));
    let per_request = rt.block_on(async {
        let request = || http::Request::get("/orders").body(()).unwrap();
        svc.ready().await.unwrap().call(request()).await.unwrap();
        let requests: Vec<_> = (0..100).map(|_| request()).collect();
        let region = Region::new(GLOBAL);
        for request in requests {
            let response = svc.ready().await.unwrap().call(request).await.unwrap();
            drop(response);
        }
        region.change().allocations as f64 / 100.0
    });
    eprintln!("ObserveServer (metrics only): {per_request} allocations per request");
    assert!(per_request < 0.1, "{per_request} allocations per request");
}
