//! PostgreSQL `LISTEN/NOTIFY`: an instance that polls rarely still claims new work at once
//! when a write announces it. Each test gives the instance a 30 s poll interval and expects
//! the work done within a few seconds; a control test drops the trigger and sees the same
//! instance miss the work, so the others pass only thanks to the notifications.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use archon_saga::{
    Engine, HistoryEvent, PostgresStore, Saga, SagaRecord, SagaStatus, SagaStore, Step,
    StepContext, StepError,
};
use common::{Ledger, abc_ok, effect};
use uuid::Uuid;

const LONG_POLL: Duration = Duration::from_secs(30);
const QUICK: Duration = Duration::from_secs(5);

async fn rare_poller(store: Arc<PostgresStore>, id: &str, saga: &Saga<u32>) -> Engine {
    let e = Engine::builder(store)
        .instance_id(id)
        .poll_interval(LONG_POLL)
        .register(saga)
        .build()
        .unwrap();
    e.start().await.unwrap();
    // Let the first claim (at start) pass: from now on only a wake-up or the poll claims.
    tokio::time::sleep(Duration::from_millis(300)).await;
    e
}

async fn insert_unowned(store: &PostgresStore, name: &str) -> Uuid {
    let r = SagaRecord::new(Uuid::new_v4(), name, 1, "0".to_owned(), 0);
    store
        .create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    r.id
}

/// Poll the store (not the engine) until the saga is no longer active, or `limit` passes.
async fn finished_within(store: &dyn SagaStore, id: Uuid, limit: Duration) -> Option<SagaRecord> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(r) = store.load(id).await.unwrap()
            && !r.status.is_active()
        {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_inserted_by_another_writer_wakes_a_rarely_polling_instance() {
    let schema = format!("saga_wake_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "woken");
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let b = rare_poller(store_b.clone(), "b", &saga).await;
    // A third party (its own connection, no engine) inserts unowned work.
    let writer = PostgresStore::connect(common::PG, &schema).await.unwrap();
    let t0 = Instant::now();
    let ids = [
        insert_unowned(&writer, "woken").await,
        insert_unowned(&writer, "woken").await,
    ];
    for id in ids {
        let r = finished_within(&*store_b, id, QUICK)
            .await
            .expect("claimed only thanks to NOTIFY (the poll interval is 30 s)");
        assert_eq!(r.status, SagaStatus::Completed);
        assert_eq!(r.owner, None);
        assert_eq!(ledger.applied_for(id), common::set(&["a", "b", "c"]));
    }
    eprintln!("picked up and finished in {:?}", t0.elapsed());
    b.shutdown().await;
    writer.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_notify_trigger_a_rarely_polling_instance_misses_new_work() {
    let schema = format!("saga_nowake_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "unwoken");
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let b = rare_poller(store_b.clone(), "b", &saga).await;
    let (client, conn) = tokio_postgres::connect(common::PG, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP TRIGGER archon_saga_work_v1 ON \"{schema}\".sagas"
        ))
        .await
        .unwrap();
    let writer = PostgresStore::connect(common::PG, &schema).await.unwrap();
    // Connecting re-installs the trigger; drop it again for this control.
    client
        .batch_execute(&format!(
            "DROP TRIGGER archon_saga_work_v1 ON \"{schema}\".sagas"
        ))
        .await
        .unwrap();
    let id = insert_unowned(&writer, "unwoken").await;
    assert!(
        finished_within(&*store_b, id, Duration::from_secs(3))
            .await
            .is_none(),
        "without NOTIFY the saga waits for the next poll"
    );
    b.shutdown().await;
    writer.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_released_by_an_operator_on_one_instance_wakes_the_other() {
    let schema = format!("saga_wake_op_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let saga = Saga::<u32>::builder("parks-once")
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable(
            "b",
            move |_ctx: StepContext, n: u32| {
                let c = c.clone();
                async move {
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(StepError::fatal("misconfigured"))
                    } else {
                        Ok(n)
                    }
                }
            },
            effect(&ledger),
        ))
        .build()
        .unwrap();
    // Instance A runs the saga until it parks, then stops.
    let store_a = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let a = Engine::builder(store_a.clone())
        .instance_id("a")
        .register(&saga)
        .build()
        .unwrap();
    a.start().await.unwrap();
    let id = a.start_saga(&saga, 0).await.unwrap();
    assert_eq!(a.wait(id).await.unwrap().status, SagaStatus::Parked);
    a.shutdown().await;
    // Instance B polls rarely. An operator console (an engine that is never started, so it
    // claims nothing) resumes the saga: the write releases it, NOTIFY wakes B.
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let b = rare_poller(store_b.clone(), "b", &saga).await;
    let console = Engine::builder(store_a.clone())
        .instance_id("console")
        .register(&saga)
        .build()
        .unwrap();
    console.resume(id).await.unwrap();
    let r = finished_within(&*store_b, id, QUICK)
        .await
        .expect("resumed only thanks to NOTIFY (the poll interval is 30 s)");
    assert_eq!(r.status, SagaStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let h = b.inspect(id).await.unwrap().history;
    assert!(h.iter().any(|e| e.event == "operator_resume"));
    b.shutdown().await;
    store_b.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_transitions_send_no_notifications() {
    // The hot path stays free of NOTIFY: a listener on the schema's channel hears the
    // unowned insert, but nothing from a saga an engine creates and runs itself.
    let schema = format!("saga_quiet_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "quiet");
    let store = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let signal = store
        .work_signal()
        .await
        .unwrap()
        .expect("postgres signals");
    let e = Engine::builder(store.clone())
        .instance_id("solo")
        .register(&saga)
        .build()
        .unwrap();
    e.start().await.unwrap();
    for _ in 0..5 {
        let id = e.start_saga(&saga, 0).await.unwrap();
        assert_eq!(e.wait(id).await.unwrap().status, SagaStatus::Completed);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), signal.notified())
            .await
            .is_err(),
        "no notification for an owned saga's transitions"
    );
    insert_unowned(&store, "quiet").await;
    tokio::time::timeout(QUICK, signal.notified())
        .await
        .expect("an unowned insert is announced");
    e.shutdown().await;
    store.drop_schema().await.unwrap();
}
