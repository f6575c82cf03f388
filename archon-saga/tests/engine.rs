//! Engine behaviour on the in-memory store (paused clock where timers matter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use archon_saga::{
    Engine, Error, ListQuery, MemoryStore, RetryPolicy, Saga, SagaStatus, Step, StepContext,
    StepError,
};
use common::{Ledger, abc_failing, abc_ok, effect, set};

fn engine(store: &Arc<MemoryStore>, sagas: &[&Saga<u32>]) -> Engine {
    let mut b = Engine::builder(store.clone()).poll_interval(Duration::from_millis(20));
    for s in sagas {
        b = b.register(s);
    }
    b.build().unwrap()
}

/// A memory store and a started engine for `saga`, with one instance of it started on `data`.
async fn start_one(saga: &Saga<u32>, data: u32) -> (Arc<MemoryStore>, Engine, archon_saga::SagaId) {
    let store = Arc::new(MemoryStore::new());
    let e = engine(&store, &[saga]);
    e.start().await.unwrap();
    let id = e.start_saga(saga, data).await.unwrap();
    (store, e, id)
}

#[tokio::test]
async fn completes_three_steps_with_n_plus_one_writes() {
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "ok");
    let (store, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(r.data, "3");
    assert_eq!(store.durable_writes(), 4, "N+1 durable writes for N = 3");
    assert_eq!(ledger.order_for(id), vec!["a", "b", "c"]);
    e.shutdown().await;
}

#[tokio::test]
async fn business_failure_compensates_in_reverse_order() {
    let ledger = Ledger::default();
    let saga = abc_failing(&ledger, "fail");
    let (store, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(
        ledger.order_for(id),
        vec!["a", "b", "b/compensate", "a/compensate"]
    );
    // create, a, b, c failed -> compensating, undo b, undo a
    assert_eq!(store.durable_writes(), 6);
    let view = e.inspect(id).await.unwrap();
    let events: Vec<&str> = view.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(
        events,
        vec![
            "started",
            "step_completed",
            "step_completed",
            "compensating",
            "step_compensated",
            "compensated"
        ]
    );
    assert!(
        view.history[3]
            .error
            .as_deref()
            .unwrap()
            .contains("refused")
    );
    e.shutdown().await;
}

/// Compensatable step "b" that always fails transiently (counting its attempts), retried
/// `retry`; its compensation is recorded in `ledger`.
fn always_busy(
    ledger: &Ledger,
    calls: &Arc<AtomicU32>,
    retry: RetryPolicy,
) -> Step<u32, archon_saga::Compensatable> {
    let c = calls.clone();
    Step::compensatable(
        "b",
        move |_ctx: StepContext, _n: u32| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>(StepError::transient("busy"))
            }
        },
        effect(ledger),
    )
    .retry(retry)
}

fn flaky(fails: u32, counter: Arc<AtomicU32>) -> Step<u32, archon_saga::Retriable> {
    Step::retriable("flaky", move |_ctx: StepContext, n: u32| {
        let counter = counter.clone();
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) < fails {
                Err(StepError::transient("503"))
            } else {
                Ok(n + 1)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn transient_errors_retry_with_backoff_then_succeed() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("flaky")
        .retriable(flaky(2, calls.clone()).retry(RetryPolicy::fixed(5, Duration::from_secs(1))))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let h = e.inspect(id).await.unwrap().history;
    assert_eq!(h.iter().filter(|e| e.event == "retry_scheduled").count(), 2);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retriable_step_that_exhausts_its_policy_parks_and_skip_completes() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("flaky")
        .retriable(flaky(100, calls.clone()).retry(RetryPolicy::fixed(3, Duration::from_secs(1))))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Parked);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let parked = e
        .list(&ListQuery::status(SagaStatus::Parked))
        .await
        .unwrap();
    assert_eq!(parked.len(), 1);
    e.skip_step(id).await.unwrap();
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn parked_saga_resumed_through_the_operator_api_completes() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let saga = Saga::<u32>::builder("fatal-once")
        .retriable(Step::retriable("x", move |_ctx: StepContext, n: u32| {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(StepError::fatal("misconfigured"))
                } else {
                    Ok(n)
                }
            }
        }))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 7).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Parked);
    assert!(r.error.unwrap().contains("misconfigured"));
    assert!(e.resume(id).await.is_ok());
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    assert!(matches!(
        e.resume(id).await,
        Err(Error::InvalidState { .. })
    ));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timeout_counts_as_transient_and_exhaustion_compensates() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("slow")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(
            Step::compensatable(
                "slow",
                |_ctx: StepContext, n: u32| async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(n)
                },
                effect(&ledger),
            )
            .timeout(Duration::from_secs(1))
            .retry(RetryPolicy::fixed(2, Duration::from_secs(1))),
        )
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(ledger.applied_for(id), set(&["a", "a/compensate"]));
    let h = e.inspect(id).await.unwrap().history;
    assert!(
        h.iter()
            .any(|e| e.error.as_deref().is_some_and(|m| m.contains("timed out")))
    );
    e.shutdown().await;
}

#[tokio::test]
async fn step_panic_counts_as_failure_and_compensates() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("panics")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable(
            "boom",
            |_ctx: StepContext, _n: u32| async move {
                if true {
                    panic!("kaboom");
                }
                Ok(0)
            },
            effect(&ledger),
        ))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(r.error.unwrap().contains("kaboom"));
    assert_eq!(ledger.applied_for(id), set(&["a", "a/compensate"]));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn durable_retry_timer_survives_a_restart() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("later")
        .retriable(flaky(1, calls.clone()).retry(RetryPolicy::fixed(2, Duration::from_secs(600))))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let e1 = engine(&store, &[&saga]);
    e1.start().await.unwrap();
    let id = e1.start_saga(&saga, 0).await.unwrap();
    // Wait for the retry to be scheduled 10 minutes out.
    loop {
        let r = store_load(&store, id).await;
        if r.wake_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    e1.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let e2 = engine(&store, &[&saga]);
    e2.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not before the timer is due"
    );
    let r = e2.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    e2.shutdown().await;
}

async fn store_load(store: &Arc<MemoryStore>, id: archon_saga::SagaId) -> archon_saga::SagaRecord {
    use archon_saga::SagaStore as _;
    store.load(id).await.unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn saga_deadline_compensates_instead_of_starting_late_steps() {
    let ledger = Ledger::default();
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("deadline")
        .deadline(Duration::from_secs(30))
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(always_busy(
            &ledger,
            &calls,
            RetryPolicy::fixed(100, Duration::from_secs(10)),
        ))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(r.error.as_deref(), Some("deadline exceeded"));
    assert!(calls.load(Ordering::SeqCst) <= 4);
    assert_eq!(ledger.applied_for(id), set(&["a", "a/compensate"]));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancellation_still_runs_the_compensations() {
    let ledger = Ledger::default();
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("cancel")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(always_busy(
            &ledger,
            &calls,
            RetryPolicy::fixed(100, Duration::from_secs(5)),
        ))
        .pivot(Step::pivot("p", effect(&ledger)))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    e.cancel(id).await.unwrap();
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(r.cancel_requested);
    assert_eq!(ledger.applied_for(id), set(&["a", "a/compensate"]));
    e.shutdown().await;
}

#[tokio::test]
async fn cancel_after_the_pivot_is_refused() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("pivoted")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .pivot(Step::pivot("p", effect(&ledger)))
        .retriable(
            Step::retriable("r", |_ctx: StepContext, _n: u32| async move {
                Err::<u32, _>(StepError::fatal("stop here"))
            }),
        )
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    assert_eq!(e.wait(id).await.unwrap().status, SagaStatus::Parked);
    assert!(matches!(
        e.cancel(id).await,
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(
        e.force_compensation(id).await,
        Err(Error::InvalidState { .. })
    ));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failing_compensation_parks_and_retry_now_finishes_it() {
    let ledger = Ledger::default();
    let broken = Arc::new(AtomicU32::new(1));
    let b2 = broken.clone();
    let l2 = ledger.clone();
    let saga = Saga::<u32>::builder("stuck")
        .step(
            Step::compensatable("a", effect(&ledger), move |ctx: StepContext, n: u32| {
                let b = b2.clone();
                let l = l2.clone();
                async move {
                    if b.load(Ordering::SeqCst) == 1 {
                        Err(StepError::transient("downstream down"))
                    } else {
                        l.apply(&ctx);
                        Ok(n)
                    }
                }
            })
            .compensation_retry(RetryPolicy::fixed(3, Duration::from_secs(1))),
        )
        .step(Step::compensatable(
            "b",
            common::refuse(&ledger),
            effect(&ledger),
        ))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Parked);
    assert!(r.compensating);
    let view = e.inspect(id).await.unwrap();
    assert_eq!(
        view.history
            .iter()
            .filter(|h| h.event == "retry_scheduled")
            .count(),
        2
    );
    broken.store(0, Ordering::SeqCst);
    e.retry_now(id).await.unwrap();
    let r = e.wait(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(ledger.applied_for(id), set(&["a", "a/compensate"]));
    e.shutdown().await;
}

#[tokio::test]
async fn force_compensation_of_a_parked_saga_compensates_it() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("force")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable(
            "b",
            |_ctx: StepContext, _n: u32| async move { Err::<u32, _>(StepError::fatal("broken")) },
            effect(&ledger),
        ))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    assert_eq!(e.wait(id).await.unwrap().status, SagaStatus::Parked);
    e.force_compensation(id).await.unwrap();
    assert_eq!(e.wait(id).await.unwrap().status, SagaStatus::Compensated);
    assert_eq!(ledger.applied_for(id), set(&["a", "a/compensate"]));
    e.shutdown().await;
}

#[tokio::test]
async fn corrupt_data_parks_that_saga_and_the_engine_keeps_going() {
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "corrupt");
    let store = Arc::new(MemoryStore::new());
    // Write two sagas with a first engine that never gets to run them.
    let e0 = engine(&store, &[&saga]);
    let bad = e0.start_saga(&saga, 0).await.unwrap();
    let good = e0.start_saga(&saga, 0).await.unwrap();
    e0.shutdown().await;
    let _ = (bad, good);
    // (the first engine may have completed them already; start fresh ones without a driver)
    let store2 = Arc::new(MemoryStore::new());
    {
        use archon_saga::{HistoryEvent, SagaRecord, SagaStore as _};
        for (id, data) in [(bad, "{not json"), (good, "0")] {
            let r = SagaRecord::new(id, "corrupt", 1, data.to_owned(), 0);
            store2
                .create(&r, &HistoryEvent::new(0, "started"))
                .await
                .unwrap();
        }
    }
    let e = engine(&store2, &[&saga]);
    e.start().await.unwrap();
    let r = e.wait(bad).await.unwrap();
    assert_eq!(r.status, SagaStatus::Parked);
    assert!(
        r.error.unwrap().contains("corrupt data"),
        "typed corrupt-data error"
    );
    assert_eq!(e.wait(good).await.unwrap().status, SagaStatus::Completed);
    e.shutdown().await;
}

#[tokio::test]
async fn unknown_definition_version_is_refused_at_start() {
    let ledger = Ledger::default();
    let v1 = abc_ok(&ledger, "versioned");
    let v2 = Saga::<u32>::builder("versioned")
        .version(2)
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    {
        use archon_saga::{HistoryEvent, SagaRecord, SagaStore as _};
        let r = SagaRecord::new(uuid::Uuid::new_v4(), "versioned", 1, "0".to_owned(), 0);
        store
            .create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
    }
    let e = engine(&store, &[&v2]);
    match e.start().await {
        Err(Error::UnknownDefinitions(defs)) => assert_eq!(defs, vec!["versioned@v1".to_owned()]),
        other => panic!("expected UnknownDefinitions, got {other:?}"),
    }
    let e = engine(&store, &[&v1, &v2]);
    e.start().await.unwrap();
    e.shutdown().await;
}

#[test]
fn builder_rejects_empty_and_duplicate_steps() {
    let ledger = Ledger::default();
    let dup = Saga::<u32>::builder("dup")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .build();
    assert!(matches!(dup, Err(Error::InvalidDefinition(_))));
}

#[test]
fn mermaid_export_shows_kinds_and_compensation_path() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("order")
        .step(Step::compensatable(
            "reserve",
            effect(&ledger),
            effect(&ledger),
        ))
        .pivot(Step::pivot("charge", effect(&ledger)))
        .retriable(Step::retriable("ship", effect(&ledger)))
        .build()
        .unwrap();
    let m = saga.to_mermaid();
    assert!(m.contains("s0[\"reserve\"]"), "{m}");
    assert!(m.contains("charge (pivot)"), "{m}");
    assert!(m.contains("ship (retriable)"), "{m}");
    assert!(m.contains("undo reserve"), "{m}");
    assert!(m.contains("s1 -. fails .-> c0"), "{m}");
    assert!(
        !m.contains("s2 -. fails"),
        "no compensation after the pivot: {m}"
    );
}

#[tokio::test]
async fn list_returns_oldest_first_and_concurrent_sagas_all_finish() {
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "many");
    let store = Arc::new(MemoryStore::new());
    let e = engine(&store, &[&saga]);
    e.start().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(e.start_saga(&saga, 0).await.unwrap());
    }
    for id in &ids {
        assert_eq!(e.wait(*id).await.unwrap().status, SagaStatus::Completed);
    }
    let all = e
        .list(&ListQuery::status(SagaStatus::Completed).limit(1000))
        .await
        .unwrap();
    assert_eq!(all.len(), 50);
    assert!(all.windows(2).all(|w| w[0].updated_at <= w[1].updated_at));
    assert_eq!(store.durable_writes(), 50 * 4);
    e.shutdown().await;
}

#[tokio::test]
async fn listener_sees_every_committed_transition_in_order() {
    use std::sync::Mutex;
    let ledger = Ledger::default();
    let saga = abc_failing(&ledger, "listened");
    let seen: Arc<Mutex<Vec<(String, SagaStatus)>>> = Arc::default();
    let s2 = seen.clone();
    let store = Arc::new(MemoryStore::new());
    let e = Engine::builder(store.clone())
        .register(&saga)
        .listener(Arc::new(
            move |r: &archon_saga::SagaRecord, ev: &archon_saga::HistoryEvent| {
                s2.lock().unwrap().push((ev.event.clone(), r.status));
            },
        ))
        .build()
        .unwrap();
    e.start().await.unwrap();
    let id = e.start_saga(&saga, 0).await.unwrap();
    e.wait(id).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let history: Vec<String> = e
        .inspect(id)
        .await
        .unwrap()
        .history
        .into_iter()
        .map(|h| h.event)
        .collect();
    assert_eq!(
        seen.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
        history
    );
    assert_eq!(seen.last().unwrap().1, SagaStatus::Compensated);
    e.shutdown().await;
}

/// A compensatable step that never returns; counts how often it was started and dropped.
fn hanging(
    started: Arc<AtomicU32>,
    dropped: Arc<AtomicU32>,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, archon_saga::StepResult<u32>>
+ Send
+ Sync
+ 'static {
    struct OnDrop(Arc<AtomicU32>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    move |_ctx, _n| {
        let (started, dropped) = (started.clone(), dropped.clone());
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
            let _d = OnDrop(dropped);
            std::future::pending::<()>().await;
            unreachable!()
        })
    }
}

async fn wait_bounded(e: &Engine, id: archon_saga::SagaId) -> archon_saga::SagaRecord {
    // Under the paused clock an idle runtime jumps ahead: a step that is never interrupted
    // makes this fail after an hour of virtual time instead of hanging the test.
    tokio::time::timeout(Duration::from_secs(3600), e.wait(id))
        .await
        .expect("saga did not end: the running step was not interrupted")
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn deadline_interrupts_a_hanging_step_and_compensates_it() {
    let ledger = Ledger::default();
    let (started, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let saga = Saga::<u32>::builder("hangs")
        .deadline(Duration::from_secs(10))
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable(
            "hang",
            hanging(started.clone(), dropped.clone()),
            effect(&ledger),
        ))
        .step(Step::compensatable(
            "never",
            effect(&ledger),
            effect(&ledger),
        ))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let e = engine(&store, &[&saga]);
    e.start().await.unwrap();
    let t0 = tokio::time::Instant::now();
    let id = e.start_saga(&saga, 0).await.unwrap();
    let r = wait_bounded(&e, id).await;
    let took = t0.elapsed();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(r.error.as_deref(), Some("deadline exceeded"));
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "interrupted at the deadline, took {took:?}"
    );
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the step's future was dropped"
    );
    // The interrupted step's outcome is unknown: its compensation runs, once, before a's.
    assert_eq!(
        ledger.order_for(id),
        vec!["a", "hang/compensate", "a/compensate"]
    );
    assert_eq!(ledger.calls(&format!("{id}/hang/compensate")), 1);
    assert_eq!(ledger.calls(&format!("{id}/never")), 0);
    assert_eq!(ledger.calls(&format!("{id}/never/compensate")), 0);
    let h = e.inspect(id).await.unwrap().history;
    let events: Vec<&str> = h.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(
        events,
        vec![
            "started",
            "step_completed",
            "step_interrupted",
            "step_compensated",
            "compensated"
        ]
    );
    assert_eq!(h[2].step.as_deref(), Some("hang"));
    assert_eq!(h[2].error.as_deref(), Some("deadline exceeded"));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn operator_cancel_interrupts_a_running_step_and_compensates_it() {
    let ledger = Ledger::default();
    let (started, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let saga = Saga::<u32>::builder("hangs-cancel")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable(
            "hang",
            hanging(started.clone(), dropped.clone()),
            effect(&ledger),
        ))
        .pivot(Step::pivot("p", effect(&ledger)))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "the step is running");
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    e.cancel(id).await.unwrap();
    let r = wait_bounded(&e, id).await;
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(r.cancel_requested);
    assert_eq!(r.error.as_deref(), Some("cancelled"));
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        ledger.order_for(id),
        vec!["a", "hang/compensate", "a/compensate"]
    );
    assert_eq!(ledger.calls(&format!("{id}/hang/compensate")), 1);
    assert_eq!(ledger.calls(&format!("{id}/p")), 0, "the pivot never ran");
    let h = e.inspect(id).await.unwrap().history;
    assert!(
        h.iter()
            .any(|h| h.event == "step_interrupted" && h.error.as_deref() == Some("cancelled"))
    );
    e.shutdown().await;
}

/// A step that takes a minute (of paused-clock time) and then applies its effect.
fn slow_then_effect(
    ledger: &Ledger,
    secs: u64,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, archon_saga::StepResult<u32>>
+ Send
+ Sync
+ 'static {
    let ledger = ledger.clone();
    move |ctx, n| {
        let ledger = ledger.clone();
        Box::pin(async move {
            ledger.call(&ctx);
            tokio::time::sleep(Duration::from_secs(secs)).await;
            ledger.land(&ctx);
            Ok(n + 1)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn retriable_step_after_the_pivot_is_not_interrupted() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("after-pivot")
        .deadline(Duration::from_secs(10))
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .pivot(Step::pivot("p", effect(&ledger)))
        .retriable(Step::retriable("ship", slow_then_effect(&ledger, 60)))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let e = engine(&store, &[&saga]);
    e.start().await.unwrap();
    let t0 = tokio::time::Instant::now();
    let id = e.start_saga(&saga, 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Past the deadline, the post-pivot step is still running; a cancel is refused.
    assert_eq!(ledger.calls(&format!("{id}/ship")), 1);
    assert!(matches!(
        e.cancel(id).await,
        Err(Error::InvalidState { .. })
    ));
    let r = wait_bounded(&e, id).await;
    assert_eq!(r.status, SagaStatus::Completed);
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "ship ran to its end"
    );
    assert_eq!(ledger.order_for(id), vec!["a", "p", "ship"]);
    assert_eq!(
        ledger.calls(&format!("{id}/ship")),
        1,
        "not interrupted, not re-run"
    );
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_pivot_is_not_interrupted_by_the_deadline() {
    let ledger = Ledger::default();
    let saga = Saga::<u32>::builder("slow-pivot")
        .deadline(Duration::from_secs(10))
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .pivot(Step::pivot("p", slow_then_effect(&ledger, 30)))
        .retriable(Step::retriable("ship", effect(&ledger)))
        .build()
        .unwrap();
    let (_, e, id) = start_one(&saga, 0).await;
    let r = wait_bounded(&e, id).await;
    // The pivot's outcome decides: it succeeded after the deadline, so the saga goes forward.
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(ledger.order_for(id), vec!["a", "p", "ship"]);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_wait_ends_at_the_deadline() {
    let ledger = Ledger::default();
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("wait-past-deadline")
        .deadline(Duration::from_secs(60))
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(always_busy(
            &ledger,
            &calls,
            RetryPolicy::fixed(5, Duration::from_secs(3600)),
        ))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let e = engine(&store, &[&saga]);
    e.start().await.unwrap();
    let t0 = tokio::time::Instant::now();
    let id = e.start_saga(&saga, 0).await.unwrap();
    let r = wait_bounded(&e, id).await;
    let took = t0.elapsed();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert_eq!(r.error.as_deref(), Some("deadline exceeded"));
    assert!(
        took < Duration::from_secs(62),
        "compensated at the deadline, not after the hour-long retry wait: {took:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(ledger.order_for(id), vec!["a", "a/compensate"]);
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_released_retry_wait_is_claimed_when_due_not_at_the_next_poll() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::<u32>::builder("released-wait")
        .retriable(flaky(1, calls.clone()).retry(RetryPolicy::fixed(2, Duration::from_secs(600))))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    // A 10-minute wait releases the saga (longer than half the 30 s lease); the poller runs
    // only every 6 hours, so the saga resumes on time only if the engine wakes itself.
    let e = Engine::builder(store.clone())
        .poll_interval(Duration::from_secs(6 * 3600))
        .register(&saga)
        .build()
        .unwrap();
    e.start().await.unwrap();
    let t0 = tokio::time::Instant::now();
    let id = e.start_saga(&saga, 0).await.unwrap();
    let r = e.wait(id).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        took >= Duration::from_secs(600) && took < Duration::from_secs(601),
        "resumed when the timer was due: {took:?}"
    );
    let h = e.inspect(id).await.unwrap().history;
    assert!(h.iter().any(|h| h.event == "retry_scheduled"));
    e.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_driver_stops_here_gets_the_end_written_by_the_next_instance() {
    // `wait` on the instance driving a saga listens for its driver's word only; when that
    // driver stops without an end (here: shutdown), the waiter must fall back to the store and
    // see the end written by the instance that takes the saga over.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let saga = Saga::<u32>::builder("handed-over")
        .retriable(Step::retriable("a", move |_ctx: StepContext, n: u32| {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(n + 1)
            }
        }))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let instance = |id: &str| {
        Engine::builder(store.clone())
            .instance_id(id)
            .lease(Duration::from_millis(300))
            .poll_interval(Duration::from_millis(20))
            .register(&saga)
            .build()
            .unwrap()
    };
    let a = instance("a");
    a.start().await.unwrap();
    let id = a.start_saga(&saga, 0).await.unwrap();
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.wait(id).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.shutdown().await;
    let b = instance("b");
    b.start().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3600), waiter)
        .await
        .expect("the waiter on the stopped instance never heard of the end")
        .unwrap()
        .unwrap();
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(r.data, "1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    b.shutdown().await;
}

#[tokio::test]
async fn saga_ids_are_time_ordered() {
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "ordered");
    let (_store, e, first) = start_one(&saga, 0).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = e.start_saga(&saga, 0).await.unwrap();
    assert_eq!(first.get_version_num(), 7, "UUIDv7");
    assert!(second > first, "a later saga sorts after an earlier one");
    e.shutdown().await;
}
