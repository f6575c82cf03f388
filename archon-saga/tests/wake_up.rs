//! PostgreSQL `LISTEN/NOTIFY`: an instance that polls rarely still claims new work at once
//! when a write announces it. Each test gives the instance a 30 s poll interval and expects
//! the work done within a few seconds; a control test leaves claimable work unannounced (an
//! expired lease) and sees the same instance miss it, so the others pass only thanks to the
//! notifications.
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

/// A saga owned by `owner` with its lease until `lease_until` (Unix ms): claimable once that
/// passes, but nothing announces it.
async fn insert_owned(store: &PostgresStore, name: &str, owner: &str, lease_until: i64) -> Uuid {
    let mut r = SagaRecord::new(Uuid::new_v4(), name, 1, "0".to_owned(), 0);
    r.owner = Some(owner.to_owned());
    r.fence = 1;
    r.lease_until = lease_until;
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
async fn work_nobody_announces_waits_for_the_poll() {
    // The control: a saga whose owner died (lease expired) is claimable but no write
    // announced it, so the rarely polling instance does not see it within seconds. The other
    // tests here finish within seconds only because their writes were announced.
    let schema = format!("saga_nowake_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "unwoken");
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let b = rare_poller(store_b.clone(), "b", &saga).await;
    let writer = PostgresStore::connect(common::PG, &schema).await.unwrap();
    let id = insert_owned(&writer, "unwoken", "dead", 0).await;
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
async fn released_leases_of_an_instance_are_announced() {
    // An instance restarting under its id releases its previous incarnation's leases (here a
    // third party calls the same store method): the sagas become claimable, the release
    // announces them, and the rarely polling instance takes them at once.
    let schema = format!("saga_release_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = abc_ok(&ledger, "released");
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let b = rare_poller(store_b.clone(), "b", &saga).await;
    let writer = PostgresStore::connect(common::PG, &schema).await.unwrap();
    let far = i64::MAX / 2;
    let ids = [
        insert_owned(&writer, "released", "gone", far).await,
        insert_owned(&writer, "released", "gone", far).await,
    ];
    assert_eq!(writer.release_owner("gone").await.unwrap(), 2);
    for id in ids {
        let r = finished_within(&*store_b, id, QUICK)
            .await
            .expect("claimed only thanks to NOTIFY (the poll interval is 30 s)");
        assert_eq!(r.status, SagaStatus::Completed);
    }
    b.shutdown().await;
    writer.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_drops_an_earlier_versions_notify_trigger() {
    // Earlier versions announced work with a row trigger that every write paid for.
    let schema = format!("saga_oldtrig_{}", Uuid::new_v4().simple());
    let store = PostgresStore::connect(common::PG, &schema).await.unwrap();
    let (client, conn) = tokio_postgres::connect(common::PG, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".archon_saga_notify() RETURNS trigger
                LANGUAGE plpgsql AS $f$ BEGIN PERFORM pg_notify(TG_ARGV[0], NEW.def_key);
                RETURN NULL; END $f$;
             CREATE TRIGGER archon_saga_work_v1 AFTER INSERT OR UPDATE ON \"{schema}\".sagas
                FOR EACH ROW EXECUTE FUNCTION \"{schema}\".archon_saga_notify('x');"
        ))
        .await
        .unwrap();
    let triggers = || async {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND NOT t.tgisinternal",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    assert_eq!(triggers().await, 1);
    let again = PostgresStore::connect(common::PG, &schema).await.unwrap();
    assert_eq!(triggers().await, 0, "connecting dropped the old trigger");
    drop(again);
    store.drop_schema().await.unwrap();
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
