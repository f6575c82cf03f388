//! Saga throughput next to the store's own commit rate, measured in the same run.
//!
//! Run with:
//! `cargo bench -p archon-saga --all-features --bench saga_throughput`
//! (`BENCH_SECS=N` per measurement, default 3; PostgreSQL at 127.0.0.1:5432 database `test`).
//!
//! C1 = single-row INSERT commits in a loop from one client; C64 = the same from 64 concurrent
//! clients. A 3-step saga with no-op steps costs N+1 = 4 durable writes, so the reference
//! ceilings are C1/4 and C64/4 sagas per second; the table prints each result as a ratio.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use archon_saga::{Engine, Saga, SagaStore, Step, StepContext, StepResult};

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

/// utime + stime of this process in seconds (Linux /proc).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

async fn noop(_ctx: StepContext, n: u32) -> StepResult<u32> {
    Ok(n)
}

fn saga() -> Saga<u32> {
    Saga::<u32>::builder("bench")
        .step(Step::compensatable("a", noop, noop))
        .step(Step::compensatable("b", noop, noop))
        .step(Step::compensatable("c", noop, noop))
        .build()
        .unwrap()
}

struct Run {
    per_sec: f64,
    cpu_per_saga_us: f64,
}

/// Sagas per second at `concurrency` (each worker: start, wait for the end, repeat).
async fn sagas_per_sec(store: Arc<dyn SagaStore>, concurrency: usize) -> Run {
    let saga = saga();
    let engine = Engine::builder(store).register(&saga).build().unwrap();
    engine.start().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (engine, saga, stop, done) =
                (engine.clone(), saga.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = engine.start_saga(&saga, 1).await.unwrap();
                    engine.wait(id).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(secs()).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    engine.shutdown().await;
    let n = done.load(Ordering::Relaxed) as f64;
    Run {
        per_sec: n / elapsed,
        cpu_per_saga_us: cpu / n.max(1.0) * 1e6,
    }
}

/// Memory per in-flight saga: RSS growth while `n` sagas wait in their first step.
async fn memory_per_in_flight(store: Arc<dyn SagaStore>, n: usize) -> f64 {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let saga = Saga::<u32>::builder("bench-mem")
        .step(Step::compensatable(
            "wait",
            move |_ctx: StepContext, v: u32| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok(v)
                }
            },
            noop,
        ))
        .build()
        .unwrap();
    let engine = Engine::builder(store)
        .register(&saga)
        .max_concurrent(n * 2)
        .build()
        .unwrap();
    engine.start().await.unwrap();
    let before = rss_bytes();
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        futures::future::join_all(chunk.iter().map(|i| engine.start_saga(&saga, *i as u32)))
            .await
            .into_iter()
            .for_each(|r| {
                r.unwrap();
            });
    }
    while engine.in_flight() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = rss_bytes();
    engine.shutdown().await;
    (after - before) / n as f64
}

/// The store's own rate of saga-row transitions (one fenced `write` at a time, no engine).
async fn transition_rate(store: Arc<dyn SagaStore>) -> f64 {
    use archon_saga::{HistoryEvent, SagaRecord, Transition};
    let mut r = SagaRecord::new(uuid::Uuid::new_v4(), "bench-w", 1, "1".to_owned(), 0);
    r.fence = 1;
    store
        .create(&r, &HistoryEvent::new(0, "started"))
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < secs() {
        r.step += 1;
        let t = Transition {
            expected_fence: 1,
            record: r.clone(),
            event: HistoryEvent::new(0, "step_completed"),
        };
        store.write(&t).await.unwrap();
        n += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    // Finish it, so engines on the same store do not refuse an unknown definition.
    r.status = archon_saga::SagaStatus::Completed;
    let done = Transition {
        expected_fence: 1,
        record: r,
        event: HistoryEvent::new(0, "completed"),
    };
    store.write(&done).await.unwrap();
    rate
}

fn sqlite_c1(path: &std::path::Path) -> f64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS c (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < secs() {
        conn.execute("INSERT INTO c (v) VALUES ('x')", []).unwrap();
        n += 1;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn line(label: &str, value: f64, unit: &str, reference: Option<(&str, f64)>) {
    match reference {
        Some((name, r)) => println!(
            "{label:<44} {value:>10.0} {unit:<10} = {:>5.2}x {name}",
            value / r
        ),
        None => println!("{label:<44} {value:>10.0} {unit}"),
    }
}

#[cfg(feature = "postgres")]
const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

#[cfg(feature = "postgres")]
async fn pg_commit_rate(clients: usize) -> f64 {
    let table = format!("bench_c_{}", uuid::Uuid::new_v4().simple());
    let mut conns = Vec::new();
    for _ in 0..clients {
        let (c, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        conns.push(c);
    }
    conns[0]
        .batch_execute(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v TEXT)"
        ))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let (stop, total, table) = (stop.clone(), total.clone(), table.clone());
            tokio::spawn(async move {
                let stmt = c
                    .prepare(&format!("INSERT INTO {table} (v) VALUES ('x')"))
                    .await
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    c.execute(&stmt, &[]).await.unwrap();
                    total.fetch_add(1, Ordering::Relaxed);
                }
                c
            })
        })
        .collect();
    tokio::time::sleep(secs()).await;
    stop.store(true, Ordering::Relaxed);
    let mut last = None;
    for t in tasks {
        last = Some(t.await.unwrap());
    }
    let rate = total.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    if let Some(c) = last {
        c.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
    rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        println!("archon-saga throughput, 3-step no-op saga (N+1 = 4 durable writes per saga)");
        println!(
            "measurement time {:?} each; C1 = mean of a run before and after\n",
            secs()
        );

        let c1a = sqlite_c1(&dir.path().join("c1a.db"));
        let open = |f: &str| Arc::new(archon_saga::SqliteStore::open(dir.path().join(f)).unwrap());
        let w1 = transition_rate(open("w.db")).await;
        let r1 = sagas_per_sec(open("s1.db"), 1).await;
        let r64 = sagas_per_sec(open("s64.db"), 64).await;
        let c1 = (c1a + sqlite_c1(&dir.path().join("c1b.db"))) / 2.0;
        line("SQLite C1 (1-row commits, 1 client)", c1, "commits/s", None);
        line(
            "SQLite store transition writes, 1 at a time",
            w1,
            "writes/s",
            Some(("C1", c1)),
        );
        line(
            "SQLite sagas/s, concurrency 1",
            r1.per_sec,
            "sagas/s",
            Some(("C1/4", c1 / 4.0)),
        );
        line(
            "SQLite sagas/s, concurrency 64",
            r64.per_sec,
            "sagas/s",
            Some(("C1/4", c1 / 4.0)),
        );
        line("SQLite CPU per saga (c=1)", r1.cpu_per_saga_us, "us", None);
        line(
            "SQLite CPU per saga (c=64)",
            r64.cpu_per_saga_us,
            "us",
            None,
        );
        let mem = memory_per_in_flight(open("mem.db"), 5_000).await;
        line("memory per in-flight saga (5k waiting)", mem, "bytes", None);

        #[cfg(feature = "postgres")]
        {
            println!();
            let c1a = pg_commit_rate(1).await;
            let c64a = pg_commit_rate(64).await;
            let schema = format!("saga_bench_{}", uuid::Uuid::new_v4().simple());
            let store = Arc::new(
                archon_saga::PostgresStore::connect(PG, &schema)
                    .await
                    .unwrap(),
            );
            let w1 = transition_rate(store.clone()).await;
            let r1 = sagas_per_sec(store.clone(), 1).await;
            let r64 = sagas_per_sec(store.clone(), 64).await;
            let c1 = (c1a + pg_commit_rate(1).await) / 2.0;
            let c64 = (c64a + pg_commit_rate(64).await) / 2.0;
            line(
                "PostgreSQL C1 (1-row commits, 1 client)",
                c1,
                "commits/s",
                None,
            );
            line(
                "PostgreSQL C64 (1-row commits, 64 clients)",
                c64,
                "commits/s",
                None,
            );
            line(
                "PostgreSQL store transition writes, 1 at a time",
                w1,
                "writes/s",
                Some(("C1", c1)),
            );
            line(
                "PostgreSQL sagas/s, concurrency 1",
                r1.per_sec,
                "sagas/s",
                Some(("C1/4", c1 / 4.0)),
            );
            line(
                "PostgreSQL sagas/s, concurrency 64",
                r64.per_sec,
                "sagas/s",
                Some(("C64/4", c64 / 4.0)),
            );
            line(
                "PostgreSQL CPU per saga (c=1)",
                r1.cpu_per_saga_us,
                "us",
                None,
            );
            line(
                "PostgreSQL CPU per saga (c=64)",
                r64.cpu_per_saga_us,
                "us",
                None,
            );
            store.drop_schema().await.unwrap();
        }
    });
}
