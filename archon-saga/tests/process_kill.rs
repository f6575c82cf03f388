//! Real process kills: the orchestrator runs in a child process (this test binary re-run with
//! `ARCHON_SAGA_CHILD` set) that is SIGKILLed at random moments and restarted, on SQLite.
//! The participant records effects in its own SQLite file, deduplicated on the idempotency key.
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use archon_saga::{
    Engine, Saga, SagaStatus, SagaStore, SqliteStore, Step, StepContext, StepError, StepResult,
};
use uuid::Uuid;

const CHILD: &str = "ARCHON_SAGA_CHILD";

fn sagas() -> u128 {
    if std::env::var("ARCHON_FULL").is_ok_and(|v| v == "1") {
        200
    } else {
        40
    }
}

fn participant(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, n INTEGER NOT NULL);",
    )
    .unwrap();
    c
}

fn step(
    db: PathBuf,
    fail: bool,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, StepResult<u32>>
+ Send
+ Sync
+ 'static {
    move |ctx, n| {
        let db = db.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let key = ctx.idempotency_key().to_owned();
            let refuse = fail && ctx.step_name() == "c" && !ctx.is_compensation();
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

fn definition(db: &Path, fail: bool) -> Saga<u32> {
    let name = if fail { "kill-fail" } else { "kill-ok" };
    let s = |f| step(db.to_owned(), f);
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

/// The orchestrator process: start the sagas that do not exist yet, run until all are done.
#[test]
fn child_orchestrator() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pdb = dir.join("participant.db");
        let (ok, fail) = (definition(&pdb, false), definition(&pdb, true));
        let store = Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap());
        let engine = Engine::builder(store.clone())
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

#[test]
fn sigkilled_orchestrator_recovers_every_saga() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args(["child_orchestrator", "--exact", "--test-threads=1"])
            .env(CHILD, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let kills = if std::env::var("ARCHON_FULL").is_ok_and(|v| v == "1") {
        40
    } else {
        8
    };
    let mut killed_running = 0;
    for _ in 0..kills {
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(
        killed_running > 0,
        "at least one kill hit a running orchestrator"
    );
    // A last run without a kill finishes everything.
    let mut child = spawn();
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

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = SqliteStore::open(dir.path().join("sagas.db")).unwrap();
    let p = participant(&dir.path().join("participant.db"));
    let applied: std::collections::BTreeSet<String> = p
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
