//! Real process kills: the orchestrator runs in a child process (this test binary re-run with
//! `ARCHON_SAGA_CHILD` set) that is SIGKILLed at random moments and restarted, on SQLite and
//! on PostgreSQL; and on PostgreSQL, a second instance in the test process takes over from a
//! SIGKILLed one. The participant records effects in its own SQLite file, deduplicated on the
//! idempotency key, plus every execution's interval, so overlapping runs of one saga's steps
//! in two processes would show.
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use archon_saga::{
    Engine, Saga, SagaStatus, SagaStore, SqliteStore, Step, StepContext, StepError, StepResult,
};
use uuid::Uuid;

/// The child's working directory (participant file, SQLite store).
const CHILD: &str = "ARCHON_SAGA_CHILD";
/// `sqlite` or `postgres:<schema>`.
const CHILD_STORE: &str = "ARCHON_SAGA_CHILD_STORE";
/// Instance id and lease (ms) of the child orchestrator.
const CHILD_INSTANCE: &str = "ARCHON_SAGA_CHILD_INSTANCE";
const CHILD_LEASE_MS: &str = "ARCHON_SAGA_CHILD_LEASE_MS";
#[cfg(feature = "postgres")]
const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn full() -> bool {
    std::env::var("ARCHON_FULL").is_ok_and(|v| v == "1")
}

fn sagas() -> u128 {
    if full() { 200 } else { 40 }
}

fn now_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

fn participant(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, n INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS runs (saga TEXT NOT NULL, key TEXT NOT NULL,
             who TEXT NOT NULL, started INTEGER NOT NULL, ended INTEGER);",
    )
    .unwrap();
    c
}

fn step(
    db: PathBuf,
    who: String,
    fail: bool,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, StepResult<u32>>
+ Send
+ Sync
+ 'static {
    move |ctx, n| {
        let (db, who) = (db.clone(), who.clone());
        Box::pin(async move {
            let key = ctx.idempotency_key().to_owned();
            let saga = ctx.saga_id().to_string();
            let refuse = fail && ctx.step_name() == "c" && !ctx.is_compensation();
            // The execution starts: recorded before any effect, ended after it.
            let run = {
                let (db, key) = (db.clone(), key.clone());
                tokio::task::spawn_blocking(move || {
                    let c = participant(&db);
                    c.execute(
                        "INSERT INTO runs (saga, key, who, started) VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![saga, key, who, now_us()],
                    )
                    .unwrap();
                    c.last_insert_rowid()
                })
                .await
                .unwrap()
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::task::spawn_blocking(move || {
                let c = participant(&db);
                c.execute(
                    "INSERT INTO calls (key, n) VALUES (?1, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1",
                    [&key],
                )
                .unwrap();
                if !refuse {
                    c.execute("INSERT OR IGNORE INTO applied (key) VALUES (?1)", [&key])
                        .unwrap();
                }
                c.execute(
                    "UPDATE runs SET ended = ?2 WHERE rowid = ?1",
                    rusqlite::params![run, now_us()],
                )
                .unwrap();
            })
            .await
            .unwrap();
            if refuse {
                Err(StepError::business("refused"))
            } else {
                Ok(n)
            }
        })
    }
}

fn definition(db: &Path, who: &str, fail: bool) -> Saga<u32> {
    let name = if fail { "kill-fail" } else { "kill-ok" };
    let s = |f| step(db.to_owned(), who.to_owned(), f);
    Saga::<u32>::builder(name)
        .step(Step::compensatable("a", s(fail), s(fail)))
        .step(Step::compensatable("b", s(fail), s(fail)))
        .step(Step::compensatable("c", s(fail), s(fail)))
        .build()
        .unwrap()
}

fn id_of(i: u128) -> Uuid {
    Uuid::from_u128(0xA5A5_0000_0000_0000_0000_0000_0000_0000 | i)
}

async fn open_store(dir: &Path, which: &str) -> Arc<dyn SagaStore> {
    if which == "sqlite" {
        return Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap());
    }
    #[cfg(feature = "postgres")]
    if let Some(schema) = which.strip_prefix("postgres:") {
        return Arc::new(
            archon_saga::PostgresStore::connect(PG, schema)
                .await
                .unwrap(),
        );
    }
    panic!("unknown store {which}");
}

/// The orchestrator process: start the sagas that do not exist yet, run until all are done.
#[test]
fn child_orchestrator() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let which = std::env::var(CHILD_STORE).unwrap_or_else(|_| "sqlite".to_owned());
    let instance = std::env::var(CHILD_INSTANCE).unwrap_or_else(|_| "local".to_owned());
    let lease = std::env::var(CHILD_LEASE_MS).map_or(Duration::from_secs(30), |ms| {
        Duration::from_millis(ms.parse().unwrap())
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pdb = dir.join("participant.db");
        let who = format!("{instance}-{}", std::process::id());
        let (ok, fail) = (definition(&pdb, &who, false), definition(&pdb, &who, true));
        let store = open_store(&dir, &which).await;
        let engine = Engine::builder(store)
            .instance_id(&instance)
            .lease(lease)
            .register(&ok)
            .register(&fail)
            .poll_interval(Duration::from_millis(20))
            .build()
            .unwrap();
        engine.start().await.unwrap();
        for i in 0..sagas() {
            let s = if i % 2 == 0 { &fail } else { &ok };
            match engine.start_saga_with_id(s, id_of(i), 0).await {
                Ok(_) | Err(archon_saga::Error::AlreadyExists(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        for i in 0..sagas() {
            engine.wait(id_of(i)).await.unwrap();
        }
        engine.shutdown().await;
    });
}

fn spawn_child(dir: &Path, which: &str, instance: &str, lease_ms: u64) -> Child {
    // The participant's file exists, in WAL mode, before any child opens it: otherwise the
    // first child's steps race to create it and switch it to WAL, a switch SQLite may refuse
    // with "database is locked" without waiting, and the step that hit it panicked.
    drop(participant(&dir.join("participant.db")));
    Command::new(std::env::current_exe().unwrap())
        .args(["child_orchestrator", "--exact", "--test-threads=1"])
        .env(CHILD, dir)
        .env(CHILD_STORE, which)
        .env(CHILD_INSTANCE, instance)
        .env(CHILD_LEASE_MS, lease_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGKILL the child; returns the time (µs) by which it is certainly dead.
fn kill(child: &mut Child) -> i64 {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    now_us()
}

/// Every saga ended as expected, each effect and compensation applied exactly once.
fn check_effects(rt: &tokio::runtime::Runtime, store: &dyn SagaStore, dir: &Path) {
    let p = participant(&dir.join("participant.db"));
    let applied: BTreeSet<String> = p
        .prepare("SELECT key FROM applied")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for i in 0..sagas() {
        let id = id_of(i);
        let r = rt.block_on(store.load(id)).unwrap().expect("saga exists");
        let mine: Vec<&str> = applied
            .iter()
            .filter_map(|k| k.strip_prefix(&format!("{id}/")))
            .collect();
        if i % 2 == 0 {
            assert_eq!(r.status, SagaStatus::Compensated, "{id}");
            assert_eq!(mine, vec!["a", "a/compensate", "b", "b/compensate"], "{id}");
        } else {
            assert_eq!(r.status, SagaStatus::Completed, "{id}");
            assert_eq!(mine, vec!["a", "b", "c"], "{id}");
        }
    }
}

/// No two executions of one saga's steps overlapped in time; a run cut short by a kill ends
/// at the kill (`killed`: process tag -> time by which it was dead). Returns how many runs
/// were cut short.
fn check_no_overlap(dir: &Path, killed: &[(String, i64)]) -> usize {
    let p = participant(&dir.join("participant.db"));
    let mut rows: Vec<(String, String, String, i64, Option<i64>)> = p
        .prepare("SELECT saga, key, who, started, ended FROM runs ORDER BY saga, started")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut cut = 0;
    for row in &mut rows {
        if row.4.is_none() {
            let (_, at) = killed
                .iter()
                .find(|(who, _)| *who == row.2)
                .unwrap_or_else(|| panic!("run {} by {} never ended", row.1, row.2));
            row.4 = Some(*at);
            cut += 1;
        }
    }
    for w in rows.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.0 == b.0 {
            assert!(
                a.4.unwrap() <= b.3,
                "saga {}: {} by {} overlapped {} by {}",
                a.0,
                a.1,
                a.2,
                b.1,
                b.2
            );
        }
    }
    cut
}

#[cfg(feature = "postgres")]
fn pids_of(dir: &Path) -> BTreeSet<String> {
    participant(&dir.join("participant.db"))
        .prepare("SELECT DISTINCT who FROM runs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Kill the child orchestrator again and again at random moments, then let a last run finish.
fn kill_and_restart(dir: &Path, which: &str) {
    let mut rng = fastrand::Rng::with_seed(7);
    let kills = if full() { 40 } else { 8 };
    let mut killed_running = 0;
    let mut killed = Vec::new();
    for _ in 0..kills {
        let mut child = spawn_child(dir, which, "local", 30_000);
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        killed.push((format!("local-{pid}"), kill(&mut child)));
    }
    assert!(
        killed_running > 0,
        "at least one kill hit a running orchestrator"
    );
    // A last run without a kill finishes everything.
    let mut child = spawn_child(dir, which, "local", 30_000);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "final run did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    // Multi-threaded: the store's connection tasks must run while we block on its calls.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(open_store(dir, which));
    check_effects(&rt, &*store, dir);
    check_no_overlap(dir, &killed);
}

#[test]
fn sigkilled_orchestrator_recovers_every_saga() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    kill_and_restart(dir.path(), "sqlite");
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_sigkilled_orchestrator_recovers_every_saga() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("saga_kill_{}", Uuid::new_v4().simple());
    kill_and_restart(dir.path(), &format!("postgres:{schema}"));
    drop_schema(&schema);
}

#[cfg(feature = "postgres")]
fn drop_schema(schema: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        archon_saga::PostgresStore::connect(PG, schema)
            .await
            .unwrap()
            .drop_schema()
            .await
            .unwrap();
    });
}

/// Two instances on PostgreSQL: instance A (a child process) starts every saga and is
/// SIGKILLed mid-run; instance B (this process, running all along) takes A's sagas over once
/// their leases expire and finishes them. No step of a saga ran in both at once.
#[cfg(feature = "postgres")]
#[test]
fn postgres_survivor_takes_over_from_a_sigkilled_instance() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("saga_takeover_{}", Uuid::new_v4().simple());
    let which = format!("postgres:{schema}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pdb = dir.path().join("participant.db");
    let who_b = format!("b-{}", std::process::id());
    let (ok, fail) = (
        definition(&pdb, &who_b, false),
        definition(&pdb, &who_b, true),
    );
    let store = rt.block_on(open_store(dir.path(), &which));
    let b = rt.block_on(async {
        let b = Engine::builder(store.clone())
            .instance_id("b")
            .lease(Duration::from_millis(1_000))
            .poll_interval(Duration::from_millis(50))
            .register(&ok)
            .register(&fail)
            .build()
            .unwrap();
        b.start().await.unwrap();
        b
    });
    let mut a = spawn_child(dir.path(), &which, "a", 1_000);
    let pid = a.id();
    // Kill A once it has started every saga and some are still under way.
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "A never started all sagas"
        );
        if let Some(s) = a.try_wait().unwrap() {
            panic!("A finished before the kill ({s}); make the sagas longer");
        }
        let started = rt.block_on(async {
            let mut n = 0;
            for i in 0..sagas() {
                n += usize::from(store.load(id_of(i)).await.unwrap().is_some());
            }
            n
        });
        if started == usize::try_from(sagas()).unwrap() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed_at = kill(&mut a);
    let owned_by_a = rt.block_on(async {
        let mut n = 0;
        for i in 0..sagas() {
            let r = store.load(id_of(i)).await.unwrap().unwrap();
            n += usize::from(r.status.is_active() && r.owner.as_deref() == Some("a"));
        }
        n
    });
    assert!(owned_by_a > 0, "A was killed with sagas under way");
    rt.block_on(async {
        for i in 0..sagas() {
            tokio::time::timeout(Duration::from_secs(120), b.wait(id_of(i)))
                .await
                .expect("B finished the saga")
                .unwrap();
        }
        b.shutdown().await;
    });
    check_effects(&rt, &*store, dir.path());
    let cut = check_no_overlap(dir.path(), &[(format!("a-{pid}"), killed_at)]);
    let pids = pids_of(dir.path());
    assert!(
        pids.contains(&who_b) && pids.contains(&format!("a-{pid}")),
        "both instances ran steps: {pids:?}"
    );
    eprintln!("{owned_by_a} sagas under way on A at the kill, {cut} executions cut short");
    drop(rt);
    drop_schema(&schema);
}
