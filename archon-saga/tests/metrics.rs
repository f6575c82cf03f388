//! The engine's metrics through the `metrics` facade, captured by a small test recorder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use archon_saga::{Engine, MemoryStore, RetryPolicy, Saga, Step, StepContext, StepError};
use common::{Ledger, abc_failing, abc_ok};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);
impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(
            self.counters
                .lock()
                .unwrap()
                .entry(name(key))
                .or_default()
                .clone(),
        )
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(
            self.histograms
                .lock()
                .unwrap()
                .entry(name(key))
                .or_default()
                .clone(),
        )
    }
}

impl TestRecorder {
    fn counter(&self, n: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(n)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
    fn samples(&self, n: &str) -> usize {
        self.histograms
            .lock()
            .unwrap()
            .get(n)
            .map_or(0, |h| h.0.lock().unwrap().len())
    }
}

#[test]
fn engine_counts_started_completed_compensated_parked_retries_and_step_durations() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let ledger = Ledger::default();
            let ok = abc_ok(&ledger, "m-ok");
            let fail = abc_failing(&ledger, "m-fail");
            let calls = Arc::new(AtomicU64::new(0));
            let c = calls.clone();
            let parks = Saga::<u32>::builder("m-park")
                .retriable(
                    Step::retriable("r", move |_ctx: StepContext, _n: u32| {
                        c.fetch_add(1, Ordering::SeqCst);
                        async { Err::<u32, _>(StepError::transient("down")) }
                    })
                    .retry(RetryPolicy::fixed(3, Duration::from_secs(1))),
                )
                .build()
                .unwrap();
            let e = Engine::builder(Arc::new(MemoryStore::new()))
                .register(&ok)
                .register(&fail)
                .register(&parks)
                .build()
                .unwrap();
            e.start().await.unwrap();
            for _ in 0..2 {
                let id = e.start_saga(&ok, 0).await.unwrap();
                e.wait(id).await.unwrap();
            }
            let id = e.start_saga(&fail, 0).await.unwrap();
            e.wait(id).await.unwrap();
            let id = e.start_saga(&parks, 0).await.unwrap();
            e.wait(id).await.unwrap();
            e.shutdown().await;
            assert_eq!(calls.load(Ordering::SeqCst), 3);
        });
    });
    assert_eq!(
        recorder.counter("archon.saga.started{archon.saga.name=m-ok}"),
        2
    );
    assert_eq!(
        recorder
            .counter("archon.saga.executions{archon.saga.name=m-ok,archon.saga.outcome=completed}"),
        2
    );
    assert_eq!(
        recorder.counter(
            "archon.saga.executions{archon.saga.name=m-fail,archon.saga.outcome=compensated}"
        ),
        1
    );
    assert_eq!(
        recorder
            .counter("archon.saga.executions{archon.saga.name=m-park,archon.saga.outcome=parked}"),
        1
    );
    assert_eq!(
        recorder
            .counter("archon.saga.step.retries{archon.saga.name=m-park,archon.saga.step.name=r}"),
        2
    );
    assert_eq!(
        recorder
            .samples("archon.saga.step.duration{archon.saga.name=m-ok,archon.saga.step.name=a}"),
        2
    );
    assert_eq!(
        recorder
            .samples("archon.saga.step.duration{archon.saga.name=m-park,archon.saga.step.name=r}"),
        3
    );
}
