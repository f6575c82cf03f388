//! Bad input on every store (memory, SQLite, PostgreSQL): corrupt saga data in the store parks
//! that saga with the typed corrupt-data error while the engine keeps going (also when the
//! data is corrupted while the saga waits on a timer); an unknown definition is refused at
//! start, naming it; a panicking step, compensation or post-pivot step counts as a failure.
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
    Engine, Error, HistoryEvent, RetryPolicy, Saga, SagaId, SagaRecord, SagaStatus, SagaStore,
    Step, StepContext, StepError,
};
use common::{Ledger, abc_ok, effect, set};
use uuid::Uuid;

fn engine(store: Arc<dyn SagaStore>, sagas: &[&Saga<u32>]) -> Engine {
    let mut b = Engine::builder(store).poll_interval(Duration::from_millis(20));
    for s in sagas {
        b = b.register(s);
    }
    b.build().unwrap()
}

async fn insert(store: &dyn SagaStore, name: &str, version: u32, data: &str) -> SagaId {
    let r = SagaRecord::new(Uuid::new_v4(), name, version, data.to_owned(), 0);
    store
        .create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    r.id
}

async fn wait(e: &Engine, id: SagaId) -> SagaRecord {
    tokio::time::timeout(Duration::from_secs(30), e.wait(id))
        .await
        .expect("saga did not end")
        .unwrap()
}

/// Corrupt data stored before the engine starts, and data corrupted while a saga waits on a
/// retry timer: both sagas park with the typed error, the others complete.
async fn corrupt_data_parks_that_saga_only(
    store: Arc<dyn SagaStore>,
    corrupt: impl AsyncFn(SagaId, &str),
) {
    let ledger = Ledger::default();
    let tag = Uuid::new_v4().simple().to_string();
    let ok = abc_ok(&ledger, &format!("ok-{tag}"));
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let waits = Saga::<u32>::builder(format!("waits-{tag}").as_str())
        .step(
            Step::compensatable(
                "flaky",
                move |_ctx: StepContext, n: u32| {
                    let c = c.clone();
                    async move {
                        if c.fetch_add(1, Ordering::SeqCst) == 0 {
                            Err(StepError::transient("later"))
                        } else {
                            Ok(n)
                        }
                    }
                },
                effect(&ledger),
            )
            .retry(RetryPolicy::fixed(3, Duration::from_millis(700))),
        )
        .build()
        .unwrap();
    let bad = insert(&*store, ok.name(), 1, "{not json").await;
    let good = insert(&*store, ok.name(), 1, "0").await;
    // A short lease: the 700 ms retry wait is longer than half of it, so the saga is released
    // and read back from the store when due (an owner that keeps a saga works on its own
    // copy, and its next fenced write replaces whatever was put in the row meanwhile).
    let e = Engine::builder(store.clone())
        .poll_interval(Duration::from_millis(20))
        .lease(Duration::from_millis(400))
        .register(&ok)
        .register(&waits)
        .build()
        .unwrap();
    e.start().await.unwrap();
    let r = wait(&e, bad).await;
    assert_eq!(r.status, SagaStatus::Parked);
    let expected = format!("saga {bad}: corrupt data");
    assert!(
        r.error.as_deref().unwrap().starts_with(&expected),
        "the typed Error::CorruptData text: {:?}",
        r.error
    );
    assert_eq!(wait(&e, good).await.status, SagaStatus::Completed);
    assert!(ledger.applied_for(bad).is_empty());

    // Corrupted while it waits (released) for its retry: it parks when it is claimed again.
    let waiting = e.start_saga(&waits, 5).await.unwrap();
    for _ in 0..500 {
        let r = store.load(waiting).await.unwrap().unwrap();
        if r.wake_at.is_some() && r.owner.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    corrupt(waiting, "[1, 2").await;
    let r = wait(&e, waiting).await;
    assert_eq!(r.status, SagaStatus::Parked);
    assert!(r.error.as_deref().unwrap().contains("corrupt data"));
    let h = e.inspect(waiting).await.unwrap().history;
    let last = h.last().unwrap();
    assert_eq!(last.event, "parked");
    assert_eq!(last.step.as_deref(), Some("flaky"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the step never saw the bad data"
    );

    // The engine keeps going.
    let after = e.start_saga(&ok, 0).await.unwrap();
    assert_eq!(wait(&e, after).await.status, SagaStatus::Completed);
    e.shutdown().await;
}

/// An unfinished saga of a definition the engine does not have: start refuses, naming it;
/// finished sagas of unknown definitions do not matter.
async fn unknown_definition_is_refused_at_start(store: Arc<dyn SagaStore>) {
    let ledger = Ledger::default();
    let tag = Uuid::new_v4().simple().to_string();
    let name = format!("versioned-{tag}");
    let v2 = Saga::<u32>::builder(&name)
        .version(2)
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .build()
        .unwrap();
    let old = insert(&*store, &name, 1, "0").await;
    let gone = format!("gone-{tag}");
    let finished = {
        let mut r = SagaRecord::new(Uuid::new_v4(), &gone, 1, "0".to_owned(), 0);
        r.status = SagaStatus::Completed;
        store
            .create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
        r.id
    };
    let e = engine(store.clone(), &[&v2]);
    match e.start().await {
        Err(Error::UnknownDefinitions(defs)) => {
            assert!(defs.contains(&format!("{name}@v1")), "{defs:?}");
            assert!(!defs.contains(&format!("{gone}@v1")), "{defs:?}");
        }
        other => panic!("expected UnknownDefinitions, got {other:?}"),
    }
    // Nothing was touched.
    let r = store.load(old).await.unwrap().unwrap();
    assert_eq!((r.status, r.step, r.owner), (SagaStatus::Running, 0, None));
    assert!(store.load(finished).await.unwrap().is_some());
    // Starting a saga of an unregistered definition is an error too.
    let v1 = Saga::<u32>::builder(&name)
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .build()
        .unwrap();
    assert!(matches!(
        e.start_saga(&v1, 0).await,
        Err(Error::InvalidDefinition(_))
    ));
    // With both versions registered the old instance runs on its own version.
    let e = engine(store.clone(), &[&v1, &v2]);
    e.start().await.unwrap();
    assert_eq!(wait(&e, old).await.status, SagaStatus::Completed);
    e.shutdown().await;
}

fn panics(
    what: &'static str,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, archon_saga::StepResult<u32>>
+ Send
+ Sync
+ 'static {
    move |_ctx, _n| {
        Box::pin(async move {
            if what.is_empty() {
                return Ok(0);
            }
            panic!("{what}")
        })
    }
}

/// A panicking step compensates, a panicking compensation is retried then parks, a panicking
/// step after the pivot parks; the engine survives all three.
async fn panics_count_as_failures(store: Arc<dyn SagaStore>) {
    let ledger = Ledger::default();
    let tag = Uuid::new_v4().simple().to_string();
    let step_panics = Saga::<u32>::builder(format!("p1-{tag}").as_str())
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .step(Step::compensatable(
            "boom",
            panics("step kaboom"),
            effect(&ledger),
        ))
        .build()
        .unwrap();
    let compensation_panics = Saga::<u32>::builder(format!("p2-{tag}").as_str())
        .step(
            Step::compensatable("a", effect(&ledger), panics("undo kaboom"))
                .compensation_retry(RetryPolicy::fixed(2, Duration::from_millis(10))),
        )
        .step(Step::compensatable(
            "b",
            common::refuse(&ledger),
            effect(&ledger),
        ))
        .build()
        .unwrap();
    let after_pivot = Saga::<u32>::builder(format!("p3-{tag}").as_str())
        .step(Step::compensatable("a", effect(&ledger), effect(&ledger)))
        .pivot(Step::pivot("p", effect(&ledger)))
        .retriable(Step::retriable("ship", panics("ship kaboom")))
        .build()
        .unwrap();
    let e = engine(
        store.clone(),
        &[&step_panics, &compensation_panics, &after_pivot],
    );
    e.start().await.unwrap();
    let id1 = e.start_saga(&step_panics, 0).await.unwrap();
    let id2 = e.start_saga(&compensation_panics, 0).await.unwrap();
    let id3 = e.start_saga(&after_pivot, 0).await.unwrap();

    let r = wait(&e, id1).await;
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(r.error.unwrap().contains("step kaboom"));
    assert_eq!(ledger.applied_for(id1), set(&["a", "a/compensate"]));

    let r = wait(&e, id2).await;
    assert_eq!(r.status, SagaStatus::Parked);
    assert!(r.compensating);
    assert!(r.error.unwrap().contains("undo kaboom"));
    let h = e.inspect(id2).await.unwrap().history;
    assert_eq!(
        h.iter().filter(|h| h.event == "retry_scheduled").count(),
        1,
        "the panicking compensation was retried once (policy of 2 attempts)"
    );

    let r = wait(&e, id3).await;
    assert_eq!(
        r.status,
        SagaStatus::Parked,
        "no compensation after the pivot"
    );
    assert!(r.error.unwrap().contains("ship kaboom"));
    assert_eq!(ledger.applied_for(id3), set(&["a", "p"]));

    let more = e.start_saga(&step_panics, 0).await.unwrap();
    assert_eq!(wait(&e, more).await.status, SagaStatus::Compensated);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bad_input() {
    let store = Arc::new(archon_saga::MemoryStore::new());
    let s = store.clone();
    corrupt_data_parks_that_saga_only(store.clone(), async move |id, data| {
        s.corrupt_data(id, data);
    })
    .await;
    unknown_definition_is_refused_at_start(Arc::new(archon_saga::MemoryStore::new())).await;
    // A fresh store: the one above holds parked sagas of definitions the next engine lacks.
    panics_count_as_failures(Arc::new(archon_saga::MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sagas.db");
    let store = Arc::new(archon_saga::SqliteStore::open(&path).unwrap());
    let p = path.clone();
    // Corrupt the row behind the store's back, as a bad migration or manual edit would.
    corrupt_data_parks_that_saga_only(store.clone(), async move |id, data| {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let n = c
            .execute(
                "UPDATE sagas SET data = ?2 WHERE id = ?1",
                rusqlite::params![id.to_string(), data],
            )
            .unwrap();
        assert_eq!(n, 1, "corrupted the row");
    })
    .await;
    let dir2 = tempfile::tempdir().unwrap();
    unknown_definition_is_refused_at_start(Arc::new(
        archon_saga::SqliteStore::open(dir2.path().join("sagas.db")).unwrap(),
    ))
    .await;
    let dir3 = tempfile::tempdir().unwrap();
    panics_count_as_failures(Arc::new(
        archon_saga::SqliteStore::open(dir3.path().join("sagas.db")).unwrap(),
    ))
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bad_input() {
    let schema = format!("saga_bad_{}", Uuid::new_v4().simple());
    let store = Arc::new(
        archon_saga::PostgresStore::connect(common::PG, &schema)
            .await
            .unwrap(),
    );
    let s = store.clone();
    corrupt_data_parks_that_saga_only(store.clone(), async move |id, data| {
        s.corrupt_data(id, data).await.unwrap();
    })
    .await;
    let schema2 = format!("saga_bad2_{}", Uuid::new_v4().simple());
    let store2 = Arc::new(
        archon_saga::PostgresStore::connect(common::PG, &schema2)
            .await
            .unwrap(),
    );
    unknown_definition_is_refused_at_start(store2.clone()).await;
    let schema3 = format!("saga_bad3_{}", Uuid::new_v4().simple());
    let store3 = Arc::new(
        archon_saga::PostgresStore::connect(common::PG, &schema3)
            .await
            .unwrap(),
    );
    panics_count_as_failures(store3.clone()).await;
    store.drop_schema().await.unwrap();
    store2.drop_schema().await.unwrap();
    store3.drop_schema().await.unwrap();
}
