//! Every metric the other Archon crates emit is registered in `archon_metrics::names`, with
//! label keys among the instrument's attributes: one vocabulary for the exporter, the
//! dashboard and the docs. Each crate is driven for real (a saga on the memory store, events
//! through the memory bus and the router, a resilience stack in front of a failing service)
//! under a capturing recorder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archon_metrics::names;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Remembers the name and label keys of every series registered.
#[derive(Default)]
struct Captured(Mutex<BTreeSet<(String, Vec<String>)>>);

impl Captured {
    fn note(&self, key: &Key) {
        let labels = key.labels().map(|l| l.key().to_owned()).collect();
        self.0
            .lock()
            .unwrap()
            .insert((key.name().to_owned(), labels));
    }

    /// Checks each series against the registry; returns the names seen.
    fn check(&self) -> BTreeSet<String> {
        let seen = self.0.lock().unwrap();
        for (name, labels) in seen.iter() {
            let instrument = names::ALL
                .iter()
                .find(|i| i.name == name)
                .unwrap_or_else(|| panic!("`{name}` is not in archon_metrics::names::ALL"));
            for label in labels {
                assert!(
                    instrument.attributes.contains(&label.as_str()),
                    "`{name}` has label `{label}`, not among its attributes {:?}",
                    instrument.attributes
                );
            }
        }
        seen.iter().map(|(name, _)| name.clone()).collect()
    }
}

impl Recorder for Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key);
        Histogram::noop()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn archon_saga_emits_registered_names() {
    use archon_saga::{Engine, MemoryStore, RetryPolicy, Saga, Step, StepContext, StepError};

    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        runtime().block_on(async {
            let flaky = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let tries = Arc::clone(&flaky);
            let saga = Saga::<u32>::builder("names-check")
                .step(Step::compensatable(
                    "reserve",
                    |_: StepContext, n: u32| async move { Ok(n) },
                    |_: StepContext, n: u32| async move { Ok(n) },
                ))
                .pivot(
                    Step::pivot("charge", move |_: StepContext, _n: u32| {
                        let tries = Arc::clone(&tries);
                        async move {
                            // Fails once (a retry), then refuses (compensation).
                            if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                                Err::<u32, _>(StepError::transient("flaky"))
                            } else {
                                Err(StepError::business("declined"))
                            }
                        }
                    })
                    .retry(RetryPolicy::fixed(3, Duration::from_millis(1))),
                )
                .build()
                .unwrap();
            let engine = Engine::builder(Arc::new(MemoryStore::new()))
                .register(&saga)
                .build()
                .unwrap();
            engine.start().await.unwrap();
            let id = engine.start_saga(&saga, 0).await.unwrap();
            engine.wait(id).await.unwrap();
            engine.shutdown().await;
        });
    });
    let seen = captured.check();
    for expected in [
        names::ARCHON_SAGA_STARTED.name,
        names::ARCHON_SAGA_EXECUTIONS.name,
        names::ARCHON_SAGA_STEP_DURATION.name,
    ] {
        assert!(
            seen.contains(expected),
            "{expected} not emitted; saw {seen:?}"
        );
    }
}

#[test]
fn archon_events_emits_registered_names() {
    use archon_events::router::{EventContext, MeteredPublisher, MetricsLayer, Route, Router};
    use archon_events::{Envelope, Event, EventBus, JsonCodec, MemoryBus};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping {
        n: u32,
    }
    impl Event for Ping {
        const TYPE: &'static str = "test.ping.v1";
    }

    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        runtime().block_on(async {
            let memory = MemoryBus::new();
            let bus: Arc<dyn EventBus> = Arc::new(MeteredPublisher::new(memory.clone()));
            let router = Router::new(Arc::clone(&bus))
                .layer(MetricsLayer::new())
                .route(Route::new("pings", "w"), |_: EventContext, _: Ping| async {
                    Ok(())
                })
                .start()
                .await
                .unwrap();
            let event = Envelope::event("/test", &Ping { n: 1 }, &JsonCodec)
                .unwrap()
                .build()
                .unwrap();
            bus.publish("pings", event).await.unwrap();
            for _ in 0..500 {
                if memory.pending("pings", "w") == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            router.shutdown().await;
        });
    });
    let seen = captured.check();
    for expected in [
        names::MESSAGING_CLIENT_SENT_MESSAGES.name,
        names::MESSAGING_CLIENT_CONSUMED_MESSAGES.name,
        names::MESSAGING_PROCESS_DURATION.name,
        names::MESSAGING_CLIENT_OPERATION_DURATION.name,
    ] {
        assert!(
            seen.contains(expected),
            "{expected} not emitted; saw {seen:?}"
        );
    }
}

#[test]
fn archon_client_emits_registered_names() {
    use archon_client::ResiliencePolicy;
    use archon_client::bulkhead::BulkheadConfig;
    use archon_client::circuit_breaker::CircuitBreakerConfig;
    use archon_client::hedge::HedgeConfig;
    use archon_client::retry::{ExponentialBackoff, RetryBudgetConfig, RetryConfig};
    use tower::{Service as _, ServiceExt as _};

    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        runtime().block_on(async {
            let policy = ResiliencePolicy::default()
                .retry(
                    RetryConfig::default()
                        .max_attempts(3)
                        .backoff(ExponentialBackoff::new(
                            Duration::from_millis(1),
                            Duration::from_millis(2),
                            2.0,
                        ))
                        .budget(Some(RetryBudgetConfig::default())),
                )
                .hedge(HedgeConfig {
                    delay: Duration::from_millis(1),
                    ..HedgeConfig::default()
                })
                .circuit_breaker(
                    CircuitBreakerConfig::default()
                        .count_window(4)
                        .minimum_calls(4),
                )
                .bulkhead(BulkheadConfig {
                    max_concurrent: 1,
                    max_wait: Duration::ZERO,
                });
            // A server in trouble: every call is a slow 503.
            let unavailable = tower::service_fn(|_req: http::Request<String>| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder().status(503).body(()).unwrap(),
                )
            });
            let mut svc = policy.build("inventory").unwrap().wrap(unavailable);
            for _ in 0..10 {
                let request = http::Request::get("http://inventory/items/7")
                    .body(String::new())
                    .unwrap();
                let _ = svc.ready().await.unwrap().call(request).await;
            }
        });
    });
    let seen = captured.check();
    for expected in [
        names::ARCHON_CIRCUIT_BREAKER_CALLS.name,
        names::ARCHON_CIRCUIT_BREAKER_STATE_GAUGE.name,
        names::ARCHON_CIRCUIT_BREAKER_TRANSITIONS.name,
        names::ARCHON_CIRCUIT_BREAKER_REJECTED_CALLS.name,
        names::ARCHON_BULKHEAD_PERMITS_IN_USE.name,
        names::ARCHON_BULKHEAD_PERMITS_LIMIT.name,
        names::ARCHON_RETRY_ATTEMPTS.name,
        names::ARCHON_HEDGE_ATTEMPTS.name,
    ] {
        assert!(
            seen.contains(expected),
            "{expected} not emitted; saw {seen:?}"
        );
    }
}
