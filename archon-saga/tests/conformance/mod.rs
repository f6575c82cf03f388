//! The store conformance suite: one contract, run against every store.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;

use archon_saga::{Error, HistoryEvent, ListQuery, SagaRecord, SagaStatus, SagaStore, Transition};
use uuid::Uuid;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

fn rec(name: &str, now: i64) -> SagaRecord {
    let mut r = SagaRecord::new(Uuid::new_v4(), name, 1, "{\"n\":1}".to_owned(), now);
    r.owner = Some("me".to_owned());
    r.fence = 1;
    r.lease_until = now + 1_000;
    r
}

fn step(r: &SagaRecord, now: i64, event: &str) -> Transition {
    let mut next = r.clone();
    next.step += 1;
    next.updated_at = now;
    Transition {
        expected_fence: r.fence,
        record: next,
        event: HistoryEvent::new(now, event),
    }
}

/// Run every case against `store`.
pub async fn run_all(store: Arc<dyn SagaStore>) {
    create_then_load_round_trips(&*store).await;
    create_twice_is_already_exists(&*store).await;
    write_applies_and_appends_history_in_order(&*store).await;
    stale_fence_is_lease_lost_and_changes_nothing(&*store).await;
    cancel_flag_is_sticky_across_writes(&*store).await;
    claim_takes_only_due_unowned_registered_sagas_and_bumps_fence(&*store).await;
    claim_takes_over_expired_leases_and_fences_the_old_owner(&*store).await;
    renew_is_fenced(&*store).await;
    release_owner_frees_sagas_of_that_owner(&*store).await;
    list_filters_and_orders_oldest_first(&*store).await;
    unfinished_definitions_names_non_finished(&*store).await;
    long_history_reads_back_whole_and_in_order(&*store).await;
    concurrent_writes_each_get_their_own_outcome(store.clone()).await;
    concurrent_creates_and_writes_each_get_their_own_outcome(store.clone()).await;
    concurrent_claims_never_hand_out_a_saga_twice(store).await;
}

async fn create_then_load_round_trips(s: &dyn SagaStore) {
    let mut r = rec(&unique("roundtrip"), 10);
    r.wake_at = Some(55);
    r.deadline = Some(99);
    r.error = Some("e".to_owned());
    s.create(&r, &HistoryEvent::new(10, "started"))
        .await
        .unwrap();
    assert_eq!(s.load(r.id).await.unwrap().unwrap(), r);
    let h = s.history(r.id).await.unwrap();
    assert_eq!(h, vec![HistoryEvent::new(10, "started")]);
    assert!(s.load(Uuid::new_v4()).await.unwrap().is_none());
}

async fn create_twice_is_already_exists(s: &dyn SagaStore) {
    let r = rec(&unique("dup"), 0);
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    let again = s.create(&r, &HistoryEvent::new(0, "started")).await;
    assert!(
        matches!(again, Err(Error::AlreadyExists(id)) if id == r.id),
        "{again:?}"
    );
    assert_eq!(s.history(r.id).await.unwrap().len(), 1);
}

async fn write_applies_and_appends_history_in_order(s: &dyn SagaStore) {
    let r = rec(&unique("write"), 0);
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    let t1 = step(&r, 1, "one");
    s.write(&t1).await.unwrap();
    let mut t2 = step(&t1.record, 2, "two");
    t2.record.status = SagaStatus::Completed;
    t2.record.data = "{\"n\":2}".to_owned();
    t2.record.owner = None;
    assert!(!s.write(&t2).await.unwrap());
    assert_eq!(s.load(r.id).await.unwrap().unwrap(), t2.record);
    let events: Vec<String> = s
        .history(r.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, vec!["started", "one", "two"]);
}

/// Many transitions, some with long error texts (stores may keep recent history in the saga
/// row and move older history elsewhere): every event comes back once, in order, and a
/// refused write adds nothing.
async fn long_history_reads_back_whole_and_in_order(s: &dyn SagaStore) {
    let r = rec(&unique("longhist"), 0);
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    let mut cur = r.clone();
    let mut expected = vec![HistoryEvent::new(0, "started")];
    for i in 1..=120_i64 {
        let mut t = step(&cur, i, &format!("e{i}"));
        let len = match i % 40 {
            0 => 5_000,
            7 => 1_500,
            _ => usize::try_from(i).unwrap() * 3,
        };
        t.event.error = Some(format!("{i}:{}\n\"quoted\" é", "x".repeat(len)));
        t.event.attempt = Some(u32::try_from(i).unwrap());
        s.write(&t).await.unwrap();
        expected.push(t.event.clone());
        if i == 60 {
            let mut stale = step(&t.record, i, "stale");
            stale.expected_fence += 1;
            assert!(matches!(s.write(&stale).await, Err(Error::LeaseLost(_))));
        }
        cur = t.record;
    }
    assert_eq!(s.history(r.id).await.unwrap(), expected);
    assert_eq!(s.load(r.id).await.unwrap().unwrap(), cur);
    assert!(s.history(Uuid::new_v4()).await.unwrap().is_empty());
}

async fn stale_fence_is_lease_lost_and_changes_nothing(s: &dyn SagaStore) {
    let r = rec(&unique("fence"), 0);
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    let mut t = step(&r, 1, "stale");
    t.expected_fence = r.fence + 7;
    assert!(matches!(s.write(&t).await, Err(Error::LeaseLost(_))));
    assert_eq!(s.load(r.id).await.unwrap().unwrap(), r);
    assert_eq!(s.history(r.id).await.unwrap().len(), 1);
    let missing = step(&rec("x", 0), 1, "missing");
    assert!(matches!(s.write(&missing).await, Err(Error::LeaseLost(_))));
}

async fn cancel_flag_is_sticky_across_writes(s: &dyn SagaStore) {
    let r = rec(&unique("cancel"), 0);
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    s.request_cancel(r.id).await.unwrap();
    let t = step(&r, 1, "after-cancel");
    assert!(!t.record.cancel_requested);
    assert!(
        s.write(&t).await.unwrap(),
        "write reports the stored cancel flag"
    );
    assert!(s.load(r.id).await.unwrap().unwrap().cancel_requested);
    assert!(matches!(
        s.request_cancel(Uuid::new_v4()).await,
        Err(Error::NotFound(_))
    ));
}

async fn claim_takes_only_due_unowned_registered_sagas_and_bumps_fence(s: &dyn SagaStore) {
    let name = unique("claim");
    let defs = vec![format!("{name}@v1")];
    let now = 1_000;
    let mut due = rec(&name, 0);
    due.owner = None;
    let mut later = rec(&name, 0);
    later.owner = None;
    later.wake_at = Some(now + 500);
    let mut owned = rec(&name, 0);
    owned.lease_until = now + 500;
    let mut parked = rec(&name, 0);
    parked.owner = None;
    parked.status = SagaStatus::Parked;
    let mut other_version = rec(&name, 0);
    other_version.owner = None;
    other_version.version = 2;
    for r in [&due, &later, &owned, &parked, &other_version] {
        s.create(r, &HistoryEvent::new(0, "started")).await.unwrap();
    }
    let got = s.claim("me", now, now + 100, 10, &defs).await.unwrap();
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), vec![due.id]);
    assert_eq!(got[0].fence, due.fence + 1);
    assert_eq!(got[0].owner.as_deref(), Some("me"));
    assert_eq!(got[0].lease_until, now + 100);
    assert!(
        s.claim("other", now, now + 100, 10, &defs)
            .await
            .unwrap()
            .is_empty()
    );
    // After the wake-up time the timer saga is due.
    let got = s
        .claim("me", now + 600, now + 700, 10, &defs)
        .await
        .unwrap();
    let ids: Vec<_> = got.iter().map(|r| r.id).collect();
    assert!(ids.contains(&later.id) && ids.contains(&owned.id) && !ids.contains(&parked.id));
    // limit
    let name2 = unique("limit");
    for _ in 0..5 {
        let mut r = rec(&name2, 0);
        r.owner = None;
        s.create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
    }
    let defs2 = vec![format!("{name2}@v1")];
    assert_eq!(
        s.claim("me", now, now + 1, 3, &defs2).await.unwrap().len(),
        3
    );
}

async fn claim_takes_over_expired_leases_and_fences_the_old_owner(s: &dyn SagaStore) {
    let name = unique("takeover");
    let defs = vec![format!("{name}@v1")];
    let r = rec(&name, 0); // owned by "me" until 1000
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    assert!(
        s.claim("b", 999, 2_000, 10, &defs)
            .await
            .unwrap()
            .is_empty()
    );
    let got = s.claim("b", 1_001, 2_000, 10, &defs).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].owner.as_deref(), Some("b"));
    // The old owner's write is refused; the new owner's goes through.
    assert!(matches!(
        s.write(&step(&r, 1_002, "old")).await,
        Err(Error::LeaseLost(_))
    ));
    s.write(&step(&got[0], 1_003, "new")).await.unwrap();
}

async fn renew_is_fenced(s: &dyn SagaStore) {
    let r = rec(&unique("renew"), 0);
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    s.renew(r.id, r.fence, 5_000).await.unwrap();
    assert_eq!(s.load(r.id).await.unwrap().unwrap().lease_until, 5_000);
    assert!(matches!(
        s.renew(r.id, r.fence + 1, 9_000).await,
        Err(Error::LeaseLost(_))
    ));
    assert_eq!(s.load(r.id).await.unwrap().unwrap().lease_until, 5_000);
}

async fn release_owner_frees_sagas_of_that_owner(s: &dyn SagaStore) {
    let name = unique("release");
    let owner = unique("owner");
    let mut r = rec(&name, 0);
    r.owner = Some(owner.clone());
    r.lease_until = i64::MAX / 2;
    s.create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    assert_eq!(s.release_owner(&owner).await.unwrap(), 1);
    assert!(s.load(r.id).await.unwrap().unwrap().owner.is_none());
    let got = s
        .claim("x", 10, 20, 10, &[format!("{name}@v1")])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}

async fn list_filters_and_orders_oldest_first(s: &dyn SagaStore) {
    let name = unique("list");
    let mut ids = Vec::new();
    for (i, status) in [
        (30, SagaStatus::Parked),
        (10, SagaStatus::Parked),
        (20, SagaStatus::Running),
        (5, SagaStatus::Parked),
    ] {
        let mut r = rec(&name, i);
        r.status = status;
        s.create(&r, &HistoryEvent::new(i, "started"))
            .await
            .unwrap();
        ids.push((i, r.id));
    }
    let parked = s
        .list(&ListQuery::status(SagaStatus::Parked).name(&name))
        .await
        .unwrap();
    let got: Vec<i64> = parked.iter().map(|r| r.updated_at).collect();
    assert_eq!(got, vec![5, 10, 30]);
    let old = s
        .list(
            &ListQuery::status(SagaStatus::Parked)
                .name(&name)
                .updated_before(20)
                .limit(1),
        )
        .await
        .unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].updated_at, 5);
    let all = s.list(&ListQuery::default().name(&name)).await.unwrap();
    assert_eq!(all.len(), 4);
}

async fn unfinished_definitions_names_non_finished(s: &dyn SagaStore) {
    let a = unique("unfin");
    let b = unique("fin");
    let mut ra = rec(&a, 0);
    ra.status = SagaStatus::Parked;
    let mut rb = rec(&b, 0);
    rb.status = SagaStatus::Completed;
    s.create(&ra, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    s.create(&rb, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    let defs = s.unfinished_definitions().await.unwrap();
    assert!(defs.contains(&format!("{a}@v1")));
    assert!(!defs.contains(&format!("{b}@v1")));
}

async fn concurrent_writes_each_get_their_own_outcome(s: Arc<dyn SagaStore>) {
    let name = unique("group");
    let mut recs = Vec::new();
    for _ in 0..64 {
        let r = rec(&name, 0);
        s.create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
        recs.push(r);
    }
    let tasks: Vec<_> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let s = s.clone();
            let mut t = step(r, 1, "concurrent");
            if i % 4 == 0 {
                t.expected_fence += 1; // stale
            }
            tokio::spawn(async move { s.write(&t).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let res = task.await.unwrap();
        if i % 4 == 0 {
            assert!(matches!(res, Err(Error::LeaseLost(_))), "{i}: {res:?}");
            assert_eq!(s.load(recs[i].id).await.unwrap().unwrap().step, 0);
        } else {
            res.unwrap();
            assert_eq!(s.load(recs[i].id).await.unwrap().unwrap().step, 1);
            assert_eq!(s.history(recs[i].id).await.unwrap().len(), 2);
        }
    }
}

/// Creates (some of taken ids) and writes (some stale, some twice for one saga) at once, as a
/// group-committing store may batch them together: each gets its own outcome.
async fn concurrent_creates_and_writes_each_get_their_own_outcome(s: Arc<dyn SagaStore>) {
    let name = unique("mixed");
    let mut existing = Vec::new();
    for _ in 0..32 {
        let r = rec(&name, 0);
        s.create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
        existing.push(r);
    }
    let fresh: Vec<SagaRecord> = (0..32).map(|_| rec(&name, 0)).collect();
    let mut tasks = Vec::new();
    for (i, r) in existing.iter().enumerate() {
        let s2 = s.clone();
        let mut t = step(r, 1, "w");
        if i % 3 == 0 {
            t.expected_fence += 1; // stale
        }
        tasks.push(tokio::spawn(async move { s2.write(&t).await.map(|_| ()) }));
        if i % 8 == 1 {
            // A second write of the same saga in flight at once, with the right fence.
            let s2 = s.clone();
            let mut t = step(r, 2, "w2");
            t.record.step = 7;
            tasks.push(tokio::spawn(async move { s2.write(&t).await.map(|_| ()) }));
        }
    }
    for r in fresh.iter().chain(existing.iter().step_by(8)) {
        let s2 = s.clone();
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            s2.create(&r, &HistoryEvent::new(0, "started")).await
        }));
    }
    let results: Vec<Result<(), Error>> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut k = 0;
    for (i, r) in existing.iter().enumerate() {
        let res = &results[k];
        k += 1;
        if i % 3 == 0 {
            assert!(matches!(res, Err(Error::LeaseLost(_))), "{i}: {res:?}");
        } else {
            assert!(res.is_ok(), "{i}: {res:?}");
        }
        let mut events = 1 + usize::from(i % 3 != 0);
        if i % 8 == 1 {
            assert!(results[k].is_ok(), "{i}: {:?}", results[k]);
            k += 1;
            events += 1;
        }
        let stored = s.load(r.id).await.unwrap().unwrap();
        let h = s.history(r.id).await.unwrap();
        assert_eq!(h.len(), events, "{i}: {h:?}");
        if i % 3 == 0 && i % 8 != 1 {
            assert_eq!(stored.step, 0);
        }
    }
    for r in &fresh {
        assert!(results[k].is_ok(), "{:?}", results[k]);
        k += 1;
        assert_eq!(s.load(r.id).await.unwrap().unwrap(), *r);
        assert_eq!(s.history(r.id).await.unwrap().len(), 1);
    }
    for r in existing.iter().step_by(8) {
        assert!(
            matches!(&results[k], Err(Error::AlreadyExists(id)) if *id == r.id),
            "{:?}",
            results[k]
        );
        k += 1;
    }
}

async fn concurrent_claims_never_hand_out_a_saga_twice(s: Arc<dyn SagaStore>) {
    let name = unique("claimrace");
    let defs = vec![format!("{name}@v1")];
    for _ in 0..40 {
        let mut r = rec(&name, 0);
        r.owner = None;
        s.create(&r, &HistoryEvent::new(0, "started"))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let defs = defs.clone();
            tokio::spawn(async move {
                s.claim(&format!("c{i}"), 10, 1_000, 7, &defs)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for t in tasks {
        for r in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(r.id), "saga {} claimed twice", r.id);
        }
    }
    assert_eq!(total, 40);
}
