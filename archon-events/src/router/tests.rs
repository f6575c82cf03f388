use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use super::*;
use crate::{Envelope, MemoryBus};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Job {
    n: usize,
}

impl Event for Job {
    const TYPE: &'static str = "test.job.v1";
}

fn job(n: usize) -> Envelope {
    Envelope::event("/test", &Job { n }, &JsonCodec)
        .unwrap()
        .build()
        .unwrap()
}

fn keyed_job(n: usize, key: usize) -> Envelope {
    Envelope::event("/test", &Job { n }, &JsonCodec)
        .unwrap()
        .partition_key(format!("k{key}"))
        .build()
        .unwrap()
}

fn bus() -> (MemoryBus, Arc<dyn EventBus>) {
    let memory = MemoryBus::new();
    let bus: Arc<dyn EventBus> = Arc::new(memory.clone());
    (memory, bus)
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("no fetch error")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn dead_letters_after_max_deliveries_with_reason_headers() {
    let (memory, bus) = bus();
    let mut dlq = bus
        .subscribe("jobs.dlq", SubscribeOptions::group("ops"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let router = Router::new(Arc::clone(&bus))
        .route(
            Route::new("jobs", "workers")
                .name("job-runner")
                .max_deliveries(3)
                .redelivery(Backoff::fixed(Duration::from_millis(10))),
            {
                let calls = Arc::clone(&calls);
                move |ctx: EventContext, _job: Job| {
                    let calls = Arc::clone(&calls);
                    async move {
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        assert_eq!(ctx.attempt() as usize, n, "attempt counts deliveries");
                        Err(HandlerError::transient(std::io::Error::other("db down")))
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    let event = job(1);
    bus.publish("jobs", event.clone()).await.unwrap();
    let dead = next(&mut dlq).await;
    let env = dead.envelope();
    assert_eq!(env.id(), event.id());
    assert_eq!(
        env.header(dead_letter_headers::REASON),
        Some("gave up after 3 attempts: transient: db down")
    );
    assert_eq!(env.header(dead_letter_headers::ATTEMPTS), Some("3"));
    assert_eq!(
        env.header(dead_letter_headers::ORIGINAL_TOPIC),
        Some("jobs")
    );
    assert_eq!(env.header(dead_letter_headers::HANDLER), Some("job-runner"));
    let first =
        humantime::parse_rfc3339(env.header(dead_letter_headers::FIRST_FAILURE).unwrap()).unwrap();
    let last =
        humantime::parse_rfc3339(env.header(dead_letter_headers::LAST_FAILURE).unwrap()).unwrap();
    assert!(first < last, "first failure {first:?} before last {last:?}");
    dead.ack().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let report = router.shutdown().await;
    assert_eq!(report.failed, 3);
    assert_eq!(memory.pending("jobs", "workers"), 0);
}

#[tokio::test]
async fn permanent_errors_dead_letter_at_once() {
    let (_memory, bus) = bus();
    let mut dlq = bus
        .subscribe("jobs.dlq", SubscribeOptions::group("ops"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let router = Router::new(Arc::clone(&bus))
        .route(Route::new("jobs", "w"), {
            let calls = Arc::clone(&calls);
            move |_: EventContext, _: Job| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(HandlerError::permanent("order 7 does not exist")) }
            }
        })
        .start()
        .await
        .unwrap();
    bus.publish("jobs", job(7)).await.unwrap();
    let dead = next(&mut dlq).await;
    assert_eq!(
        dead.envelope().header(dead_letter_headers::REASON),
        Some("permanent: order 7 does not exist")
    );
    assert_eq!(
        dead.envelope().header(dead_letter_headers::ATTEMPTS),
        Some("1")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    router.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_is_nacked_and_the_router_keeps_going() {
    let (memory, bus) = bus();
    let seen: Arc<Mutex<Vec<(usize, u32)>>> = Arc::default();
    let router = Router::new(Arc::clone(&bus))
        .route(
            Route::new("jobs", "w").redelivery(Backoff::fixed(Duration::from_millis(1))),
            {
                let seen = Arc::clone(&seen);
                move |ctx: EventContext, job: Job| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.lock().unwrap().push((job.n, ctx.attempt()));
                        if job.n == 1 && ctx.attempt() == 1 {
                            panic!("boom");
                        }
                        Ok(())
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    bus.publish("jobs", job(1)).await.unwrap();
    bus.publish("jobs", job(2)).await.unwrap();
    eventually("both handled", || {
        memory.pending("jobs", "w") == 0 && seen.lock().unwrap().len() == 3
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&(1, 1)) && seen.contains(&(1, 2)) && seen.contains(&(2, 1)),
        "{seen:?}"
    );
    let report = router.shutdown().await;
    assert_eq!((report.handled, report.failed), (2, 1));
}

#[tokio::test]
async fn the_retry_layer_retries_in_process_before_redelivery() {
    let (memory, bus) = bus();
    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    let router = Router::new(Arc::clone(&bus))
        .layer(RetryLayer::new(3, Backoff::fixed(Duration::from_millis(1))))
        .route(Route::new("jobs", "w"), {
            let calls = Arc::clone(&calls);
            move |ctx: EventContext, _: Job| {
                let calls = Arc::clone(&calls);
                async move {
                    let mut calls = calls.lock().unwrap();
                    calls.push(ctx.attempt());
                    if calls.len() < 3 {
                        Err(HandlerError::transient("flaky"))
                    } else {
                        Ok(())
                    }
                }
            }
        })
        .start()
        .await
        .unwrap();
    bus.publish("jobs", job(1)).await.unwrap();
    eventually("handled", || {
        calls.lock().unwrap().len() == 3 && memory.pending("jobs", "w") == 0
    })
    .await;
    assert_eq!(
        *calls.lock().unwrap(),
        vec![1, 1, 1],
        "all three calls on one delivery"
    );
    let report = router.shutdown().await;
    assert_eq!((report.handled, report.failed), (1, 0));
}

#[tokio::test]
async fn the_timeout_layer_fails_slow_handlers() {
    let (_memory, bus) = bus();
    let mut dlq = bus
        .subscribe("jobs.dlq", SubscribeOptions::group("ops"))
        .await
        .unwrap();
    let router = Router::new(Arc::clone(&bus))
        .layer(TimeoutLayer::new(Duration::from_millis(20)))
        .route(
            Route::new("jobs", "w").max_deliveries(1),
            |_: EventContext, _: Job| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            },
        )
        .start()
        .await
        .unwrap();
    bus.publish("jobs", job(1)).await.unwrap();
    let dead = next(&mut dlq).await;
    let reason = dead.envelope().header(dead_letter_headers::REASON).unwrap();
    assert!(
        reason.contains("timeout: handler timed out after 20ms"),
        "{reason}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn the_dedupe_layer_skips_an_event_seen_before() {
    let (memory, bus) = bus();
    let calls = Arc::new(AtomicUsize::new(0));
    let router = Router::new(Arc::clone(&bus))
        .layer(DedupeLayer::new(
            MemoryDedupeStore::default(),
            Duration::from_secs(60),
        ))
        .route(Route::new("jobs", "w"), {
            let calls = Arc::clone(&calls);
            move |_: EventContext, _: Job| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }
        })
        .start()
        .await
        .unwrap();
    let event = job(1);
    bus.publish("jobs", event.clone()).await.unwrap();
    bus.publish("jobs", event).await.unwrap();
    bus.publish("jobs", job(2)).await.unwrap();
    eventually("all settled", || memory.pending("jobs", "w") == 0).await;
    let report = router.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the duplicate was skipped");
    assert_eq!(report.handled, 3, "and still acknowledged");
}

#[tokio::test]
async fn follow_up_events_continue_the_producers_trace() {
    let (_memory, bus) = bus();
    let mut follow_ups = bus
        .subscribe("follow-ups", SubscribeOptions::group("g"))
        .await
        .unwrap();
    let router = Router::new(Arc::clone(&bus))
        .layer(TracingLayer::new())
        .route(Route::new("jobs", "w"), {
            let bus = Arc::clone(&bus);
            move |_: EventContext, job: Job| {
                let bus = Arc::clone(&bus);
                async move {
                    let next =
                        Envelope::event("/test", &Job { n: job.n + 1 }, &JsonCodec)?.build()?;
                    bus.publish("follow-ups", next).await?;
                    Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let md = archon_core::context::Metadata::new_root().with_tenant_id("acme");
    let original = Envelope::event("/test", &Job { n: 1 }, &JsonCodec)
        .unwrap()
        .metadata(&md)
        .build()
        .unwrap();
    bus.publish("jobs", original.clone()).await.unwrap();
    let follow_up = next(&mut follow_ups).await;
    let got = follow_up.envelope().metadata();
    assert_eq!(got.trace_id(), md.trace_id(), "same trace");
    assert_ne!(got.span_id(), md.span_id(), "new span");
    assert_eq!(got.correlation_id, md.correlation_id);
    assert_eq!(got.tenant_id.as_deref(), Some("acme"));
    assert_eq!(got.causation_id.as_deref(), Some(original.id()));
    router.shutdown().await;
}

#[tokio::test]
async fn lanes_keep_per_key_order_with_concurrency() {
    let (memory, bus) = bus();
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let router = Router::new(Arc::clone(&bus))
        .route(Route::new("jobs", "w").concurrency(4), {
            let seen = Arc::clone(&seen);
            move |ctx: EventContext, job: Job| {
                let seen = Arc::clone(&seen);
                async move {
                    let key = ctx
                        .envelope()
                        .partition_key()
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().entry(key).or_default().push(job.n);
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..1_000))).await;
                    Ok(())
                }
            }
        })
        .start()
        .await
        .unwrap();
    let events: Vec<_> = (0..200).map(|n| keyed_job(n, n % 8)).collect();
    bus.publish_batch("jobs", events).await.unwrap();
    eventually("all handled", || memory.pending("jobs", "w") == 0).await;
    router.shutdown().await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 200);
    for (key, ns) in seen.iter() {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
    }
}

#[tokio::test]
async fn batch_handlers_get_bounded_batches_and_failures_are_redelivered() {
    let (memory, bus) = bus();
    let batches: Arc<Mutex<Vec<Vec<usize>>>> = Arc::default();
    let router = Router::new(Arc::clone(&bus))
        .batch_route(
            Route::new("jobs", "w").redelivery(Backoff::fixed(Duration::from_millis(1))),
            BatchOptions::new(10, Duration::from_millis(20)),
            {
                let batches = Arc::clone(&batches);
                move |items: Vec<(EventContext, Job)>| {
                    let batches = Arc::clone(&batches);
                    async move {
                        let ns: Vec<usize> = items.iter().map(|(_, j)| j.n).collect();
                        let first_try = items.iter().all(|(ctx, _)| ctx.attempt() == 1);
                        batches.lock().unwrap().push(ns.clone());
                        if ns.contains(&13) && first_try {
                            return Err(HandlerError::transient("batch failed"));
                        }
                        Ok(())
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    let events: Vec<_> = (0..25).map(job).collect();
    bus.publish_batch("jobs", events).await.unwrap();
    eventually("all handled", || memory.pending("jobs", "w") == 0).await;
    router.shutdown().await;
    let batches = batches.lock().unwrap();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 10),
        "{batches:?}"
    );
    let failed = batches.iter().find(|b| b.contains(&13)).unwrap();
    let mut handled: Vec<usize> = batches.iter().flatten().copied().collect();
    handled.sort_unstable();
    handled.dedup();
    assert_eq!(handled, (0..25).collect::<Vec<_>>());
    let retried = batches.iter().filter(|b| b.contains(&13)).count();
    assert_eq!(retried, 2, "the failed batch {failed:?} came back once");
}

#[tokio::test]
async fn shutdown_cancels_handlers_past_the_deadline_and_nacks_them() {
    let (memory, bus) = bus();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let router = Router::new(Arc::clone(&bus))
        .shutdown_timeout(Duration::from_millis(50))
        .route(Route::new("jobs", "w"), move |_: EventContext, _: Job| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    bus.publish("jobs", job(1)).await.unwrap();
    bus.publish("jobs", job(2)).await.unwrap();
    rx.recv().await.unwrap();
    let report = router.shutdown().await;
    assert_eq!(report.aborted, 1, "{report:?}");
    assert!(report.nacked <= 1, "{report:?}"); // 0 when still prefetched, not yet in a lane
    assert_eq!(report.handled, 0);
    assert_eq!(memory.pending("jobs", "w"), 2, "both stay for redelivery");
    let mut sub = bus
        .subscribe("jobs", SubscribeOptions::group("w"))
        .await
        .unwrap();
    let d = next(&mut sub).await;
    assert!(d.attempt() >= 1);
    d.ack().await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
}

mod metrics_recorder {
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// Metric name, labels, value.
    pub(super) type Record = (String, Vec<(String, String)>, f64);

    #[derive(Debug, Default, Clone)]
    pub(super) struct Captured(pub(super) Arc<Mutex<Vec<Record>>>);

    struct Handle(Key, Captured);

    impl metrics::CounterFn for Handle {
        fn increment(&self, value: u64) {
            metrics::HistogramFn::record(self, value as f64);
        }
        fn absolute(&self, value: u64) {
            metrics::HistogramFn::record(self, value as f64);
        }
    }

    impl metrics::HistogramFn for Handle {
        fn record(&self, value: f64) {
            let labels = self
                .0
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            self.1
                .0
                .lock()
                .unwrap()
                .push((self.0.name().to_owned(), labels, value));
        }
    }

    impl Recorder for Captured {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Handle(key.clone(), self.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Handle(key.clone(), self.clone())))
        }
    }
}

#[test]
fn metrics_use_the_opentelemetry_messaging_names() {
    let captured = metrics_recorder::Captured::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&captured, || {
        rt.block_on(async {
            let memory = MemoryBus::new();
            let bus: Arc<dyn EventBus> = Arc::new(MeteredPublisher::new(memory.clone()));
            let router = Router::new(Arc::clone(&bus))
                .layer(MetricsLayer::new())
                .route(
                    Route::new("jobs", "w").max_deliveries(1),
                    |_: EventContext, j: Job| async move {
                        if j.n == 2 {
                            Err(HandlerError::permanent("no"))
                        } else {
                            Ok(())
                        }
                    },
                )
                .start()
                .await
                .unwrap();
            bus.publish("jobs", job(1)).await.unwrap();
            bus.publish("jobs", job(2)).await.unwrap();
            eventually("handled", || memory.pending("jobs", "w") == 0).await;
            router.shutdown().await;
        });
    });
    let records = captured.0.lock().unwrap();
    let count = |name: &str| records.iter().filter(|(n, ..)| n == name).count();
    assert_eq!(count(metric_names::SENT_MESSAGES), 2);
    assert_eq!(count(metric_names::CONSUMED_MESSAGES), 2);
    assert_eq!(count(metric_names::PROCESS_DURATION), 2);
    let label = |labels: &Vec<(String, String)>, k: &str| {
        labels
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let failed: Vec<_> = records
        .iter()
        .filter(|(n, labels, _)| {
            n == metric_names::PROCESS_DURATION
                && label(labels, metric_names::ERROR_TYPE).as_deref() == Some("permanent")
        })
        .collect();
    assert_eq!(failed.len(), 1);
    let (_, labels, seconds) = failed[0];
    assert_eq!(
        label(labels, metric_names::SYSTEM).as_deref(),
        Some("memory")
    );
    assert_eq!(
        label(labels, metric_names::DESTINATION).as_deref(),
        Some("jobs")
    );
    assert_eq!(label(labels, metric_names::GROUP).as_deref(), Some("w"));
    assert!(*seconds >= 0.0);
}
