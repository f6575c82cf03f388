#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The breaker and bulkhead report through the `metrics` facade under the documented names.

use std::time::Duration;

use archon_client::Outcome;
use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn find(
    snapshot: &[(metrics_util::CompositeKey, DebugValue)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<String> {
    snapshot
        .iter()
        .find(|(key, _)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, v)| match v {
            DebugValue::Counter(n) => format!("counter {n}"),
            DebugValue::Gauge(g) => format!("gauge {}", g.into_inner()),
            DebugValue::Histogram(_) => "histogram".to_owned(),
        })
}

#[test]
fn breaker_and_bulkhead_metrics_use_the_documented_names() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let cfg = CircuitBreakerConfig::default()
            .count_window(4)
            .minimum_calls(4);
        let breaker = CircuitBreakerHandle::new("inv", cfg).unwrap();
        for _ in 0..3 {
            breaker
                .try_acquire()
                .unwrap()
                .record_with_duration(Outcome::Success, Duration::ZERO);
        }
        // A ring of 4: [S, S, S, F] is 25 %, [S, S, F, F] is 50 %: open.
        for _ in 0..2 {
            breaker
                .try_acquire()
                .unwrap()
                .record_with_duration(Outcome::Failure, Duration::ZERO);
        }
        assert!(breaker.try_acquire().is_err());
        let _bulkhead = BulkheadLayer::new("inv", BulkheadConfig::default());
    });
    let snap: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (k, v))
        .collect();
    let calls = |outcome| {
        find(
            &snap,
            "archon.circuit_breaker.calls",
            &[
                ("archon.policy.name", "inv"),
                ("archon.circuit_breaker.outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("success"), Some("counter 3".to_owned()));
    assert_eq!(calls("failure"), Some("counter 2".to_owned()));
    assert_eq!(
        find(
            &snap,
            "archon.circuit_breaker.rejected.calls",
            &[("archon.policy.name", "inv")],
        ),
        Some("counter 1".to_owned())
    );
    assert_eq!(
        find(
            &snap,
            "archon.circuit_breaker.transitions",
            &[
                ("archon.policy.name", "inv"),
                ("archon.circuit_breaker.from_state", "closed"),
                ("archon.circuit_breaker.to_state", "open"),
            ],
        ),
        Some("counter 1".to_owned())
    );
    let state = |state| {
        find(
            &snap,
            "archon.circuit_breaker.state",
            &[
                ("archon.policy.name", "inv"),
                ("archon.circuit_breaker.state", state),
            ],
        )
    };
    assert_eq!(state("open"), Some("gauge 1".to_owned()));
    assert_eq!(state("closed"), Some("gauge 0".to_owned()));
    assert_eq!(state("half_open"), Some("gauge 0".to_owned()));
    assert_eq!(
        find(
            &snap,
            "archon.bulkhead.permits.limit",
            &[("archon.policy.name", "inv")],
        ),
        Some("gauge 25".to_owned())
    );
    assert_eq!(
        find(
            &snap,
            "archon.bulkhead.permits.in_use",
            &[("archon.policy.name", "inv")],
        ),
        Some("gauge 0".to_owned())
    );
}
