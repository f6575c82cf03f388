//! Two orchestrator instances on one PostgreSQL schema: leases, fencing, SKIP LOCKED claiming,
//! takeover after a kill, and no step ever running in both at once.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{sync::Arc, time::Duration};

use archon_saga::{
    Engine, HistoryEvent, PostgresStore, Saga, SagaRecord, SagaStatus, SagaStore, Step,
    StepContext, StepResult,
};
use common::{Ledger, set};
use uuid::Uuid;

fn slow_effect(
    ledger: &Ledger,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, StepResult<u32>>
+ Send
+ Sync
+ 'static {
    let ledger = ledger.clone();
    move |ctx, n| {
        let ledger = ledger.clone();
        Box::pin(async move {
            let _g = ledger.enter(ctx.saga_id());
            ledger.call(&ctx);
            tokio::time::sleep(Duration::from_millis(20 + u64::from(n % 3) * 10)).await;
            // The effect lands at the end of the call (a kill mid-call leaves no effect).
            ledger.land(&ctx);
            Ok(n)
        })
    }
}

fn saga(ledger: &Ledger, name: &str) -> Saga<u32> {
    Saga::<u32>::builder(name)
        .step(Step::compensatable(
            "a",
            slow_effect(ledger),
            slow_effect(ledger),
        ))
        .step(Step::compensatable(
            "b",
            slow_effect(ledger),
            slow_effect(ledger),
        ))
        .pivot(Step::pivot("c", slow_effect(ledger)))
        .build()
        .unwrap()
}

async fn instance(store: Arc<PostgresStore>, id: &str, saga: &Saga<u32>) -> Engine {
    let e = Engine::builder(store)
        .instance_id(id)
        .lease(Duration::from_millis(600))
        .poll_interval(Duration::from_millis(50))
        .register(saga)
        .build()
        .unwrap();
    e.start().await.unwrap();
    e
}

async fn wait_all(store: &dyn SagaStore, ids: &[Uuid]) {
    for _ in 0..2_000 {
        let mut done = true;
        for id in ids {
            if store
                .load(*id)
                .await
                .unwrap()
                .is_none_or(|r| r.status.is_active())
            {
                done = false;
                break;
            }
        }
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("sagas did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_finishes_every_saga_after_the_other_instance_is_killed() {
    let schema = format!("saga_two_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = saga(&ledger, "two-instances");
    let store_a = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let a = instance(store_a.clone(), "a", &saga).await;
    let b = instance(store_b.clone(), "b", &saga).await;
    let mut ids = Vec::new();
    for i in 0..40u32 {
        ids.push(a.start_saga(&saga, i).await.unwrap());
    }
    for i in 0..10u32 {
        ids.push(b.start_saga(&saga, i).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Kill A mid-run: its tasks stop wherever they are; its leases stay until they expire.
    a.shutdown().await;
    let unfinished_at_kill = {
        let mut n = 0;
        for id in &ids {
            if store_b.load(*id).await.unwrap().unwrap().status.is_active() {
                n += 1;
            }
        }
        n
    };
    assert!(unfinished_at_kill > 0, "the kill happened mid-run");
    wait_all(&*store_b, &ids).await;
    for id in &ids {
        let r = store_b.load(*id).await.unwrap().unwrap();
        assert_eq!(r.status, SagaStatus::Completed);
        assert_eq!(ledger.applied_for(*id), set(&["a", "b", "c"]));
    }
    assert_eq!(
        ledger.max_overlap(),
        1,
        "a step of one saga ran in two places at once"
    );
    let taken_over = store_b
        .list(&archon_saga::ListQuery::status(SagaStatus::Completed).limit(100))
        .await
        .unwrap()
        .len();
    assert_eq!(taken_over, 50);
    b.shutdown().await;
    store_b.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_unowned_work_without_running_anything_twice() {
    let schema = format!("saga_share_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let saga = saga(&ledger, "shared");
    let store_a = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let mut ids = Vec::new();
    for i in 0..60u32 {
        let r = SagaRecord::new(Uuid::new_v4(), "shared", 1, i.to_string(), 0);
        store_a
            .create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
        ids.push(r.id);
    }
    let a = instance(store_a.clone(), "a", &saga).await;
    let b = instance(store_b.clone(), "b", &saga).await;
    wait_all(&*store_a, &ids).await;
    {
        let s = ledger.0.lock().unwrap();
        for id in &ids {
            for step in ["a", "b", "c"] {
                assert_eq!(
                    s.calls.get(&format!("{id}/{step}")).copied(),
                    Some(1),
                    "{id}/{step}"
                );
            }
        }
        assert_eq!(s.max_overlap, 1);
    }
    a.shutdown().await;
    b.shutdown().await;
    store_a.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_another_instance_interrupts_the_running_step() {
    let schema = format!("saga_xcancel_{}", Uuid::new_v4().simple());
    let ledger = Ledger::default();
    let entered = Arc::new(tokio::sync::Notify::new());
    let e2 = entered.clone();
    let saga = Saga::<u32>::builder("hangs")
        .step(Step::compensatable(
            "a",
            common::effect(&ledger),
            common::effect(&ledger),
        ))
        .step(Step::compensatable(
            "hang",
            move |_ctx: StepContext, _n: u32| {
                let e2 = e2.clone();
                async move {
                    e2.notify_one();
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            },
            common::effect(&ledger),
        ))
        .build()
        .unwrap();
    let store_a = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let store_b = Arc::new(PostgresStore::connect(common::PG, &schema).await.unwrap());
    let a = instance(store_a.clone(), "a", &saga).await;
    let b = instance(store_b.clone(), "b", &saga).await;
    let id = a.start_saga(&saga, 0).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), entered.notified())
        .await
        .expect("the hanging step started on A");
    // B does not own the saga: the flag goes to the store, A sees it at its next renewal.
    b.cancel(id).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), b.wait(id))
        .await
        .expect("A interrupted the step within a few renewals")
        .unwrap();
    assert_eq!(r.status, SagaStatus::Compensated);
    assert!(r.cancel_requested);
    assert_eq!(
        ledger.order_for(id),
        vec!["a", "hang/compensate", "a/compensate"]
    );
    assert_eq!(ledger.calls(&format!("{id}/hang/compensate")), 1);
    a.shutdown().await;
    b.shutdown().await;
    store_a.drop_schema().await.unwrap();
}
