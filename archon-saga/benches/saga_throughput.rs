//! Saga throughput next to the store's own commit rate, measured in the same run.
//!
//! Run with:
//! `cargo bench -p archon-saga --all-features --bench saga_throughput`
//! (`BENCH_SECS=N` per measurement, default 3; PostgreSQL at 127.0.0.1:5432 database `test`).
//!
//! C1 = single-row INSERT commits in a loop from one client; C64 = the same from 64 concurrent
//! clients. A 3-step saga with no-op steps costs N+1 = 4 durable writes, so the reference
//! ceilings are C1/4 and C64/4 sagas per second; the table prints each result as a ratio to
//! the reference measured just before and just after it (the commit rate of a shared disk
//! drifts within seconds), with this process's CPU time per operation next to the
//! reference's CPU for as many commits, and the load average.
//!
//! Other knobs: `BENCH_ONLY=sqlite|postgres` runs one half; `BENCH_DIR=/dev/shm` puts the
//! SQLite files on tmpfs (no fsync cost: the ratios then show the CPU overhead alone, a lower
//! bound for the ratios on a disk); `BENCH_PROFILE=c1|sqlite1|sqlite64|sqlitew|pg1|pg64|pgw` runs
//! one measurement alone, for `perf stat`/`perf record` (`w` = the store's writes, no engine).
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

/// While set (ms), every measurement runs this long: one slice of an interleaved pair.
static SLICE_MS: AtomicU64 = AtomicU64::new(0);

/// Slices per measurement: each is paired with a slice of its reference, alternating, so both
/// sample the same moments of a disk whose commit rate drifts within seconds.
fn slices() -> u32 {
    std::env::var("BENCH_SLICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
        .max(1)
}

fn secs() -> Duration {
    let slice = SLICE_MS.load(Ordering::Relaxed);
    if slice > 0 {
        return Duration::from_millis(slice);
    }
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

/// Operations per second and this process's CPU time per operation.
#[derive(Clone, Copy)]
struct Rate {
    per_sec: f64,
    cpu_per_op_us: f64,
}

/// A started engine for [`saga`] over `store`: one per store for the whole run, as a
/// service has (starting one per slice measured its start-up too).
async fn started(store: Arc<dyn SagaStore>) -> (Engine, Saga<u32>) {
    let saga = saga();
    let engine = Engine::builder(store).register(&saga).build().unwrap();
    engine.start().await.unwrap();
    (engine, saga)
}

/// Sagas per second at `concurrency` (each worker: start, wait for the end, repeat).
async fn sagas_per_sec(engine: &Engine, saga: &Saga<u32>, concurrency: usize) -> Rate {
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
    let n = done.load(Ordering::Relaxed) as f64;
    Rate {
        per_sec: n / elapsed,
        cpu_per_op_us: cpu / n.max(1.0) * 1e6,
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

/// The store's own rate of durable writes in a saga's pattern, no engine: one at a time,
/// `create` then three fenced `write`s (the last one completing the saga), like the 3-step
/// saga, with real-size history events. Runs in a spawned task, like the engine's drivers and
/// the commit-rate loops (polled in `block_on`, every round trip would cost two more thread
/// wake-ups).
async fn store_write_rate(store: Arc<dyn SagaStore>) -> Rate {
    tokio::spawn(store_writes(store)).await.unwrap()
}

async fn store_writes(store: Arc<dyn SagaStore>) -> Rate {
    use archon_saga::{HistoryEvent, SagaRecord, SagaStatus, Transition};
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < secs() {
        let mut r = SagaRecord::new(uuid::Uuid::new_v4(), "bench-w", 1, "1".to_owned(), 0);
        r.owner = Some("local".to_owned());
        r.fence = 1;
        store
            .create(&r, &HistoryEvent::new(1, "started"))
            .await
            .unwrap();
        for (i, step) in ["a", "b", "c"].into_iter().enumerate() {
            r.step += 1;
            let event = if i == 2 {
                r.status = SagaStatus::Completed;
                r.owner = None;
                "completed"
            } else {
                "step_completed"
            };
            let mut e = HistoryEvent::new(2, event);
            e.step = Some(step.to_owned());
            e.attempt = Some(1);
            let t = Transition {
                expected_fence: 1,
                record: r.clone(),
                event: e,
            };
            store.write(&t).await.unwrap();
        }
        n += 4;
    }
    Rate {
        per_sec: n as f64 / t0.elapsed().as_secs_f64(),
        cpu_per_op_us: (cpu_secs() - cpu0) / (n as f64).max(1.0) * 1e6,
    }
}

/// C1 on SQLite: single-row INSERT commits in a loop (same settings as the store).
fn sqlite_c1(path: &std::path::Path) -> Rate {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS c (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < secs() {
        conn.execute("INSERT INTO c (v) VALUES ('x')", []).unwrap();
        n += 1;
    }
    let cpu = cpu_secs() - cpu0;
    Rate {
        per_sec: n as f64 / t0.elapsed().as_secs_f64(),
        cpu_per_op_us: cpu / (n as f64).max(1.0) * 1e6,
    }
}

/// Load average now (1 minute), to print next to the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The mean of equally long measurements.
fn mean(rs: &[Rate]) -> Rate {
    let n = rs.len().max(1) as f64;
    Rate {
        per_sec: rs.iter().map(|r| r.per_sec).sum::<f64>() / n,
        cpu_per_op_us: rs.iter().map(|r| r.cpu_per_op_us).sum::<f64>() / n,
    }
}

/// Measure `subject` and its `reference` in alternating slices (reference first); returns
/// (subject, reference, the reference's slowest and fastest slice).
async fn interleaved<S, SF, R, RF>(mut subject: S, mut reference: R) -> (Rate, Rate, f64, f64)
where
    S: FnMut() -> SF,
    SF: std::future::Future<Output = Rate>,
    R: FnMut() -> RF,
    RF: std::future::Future<Output = Rate>,
{
    let k = slices();
    let total = secs();
    SLICE_MS.store(
        (total.as_millis() as u64 / u64::from(k)).max(100),
        Ordering::Relaxed,
    );
    let (mut subj, mut refs) = (Vec::new(), Vec::new());
    for _ in 0..k {
        refs.push(reference().await);
        subj.push(subject().await);
    }
    SLICE_MS.store(0, Ordering::Relaxed);
    let lo = refs.iter().map(|r| r.per_sec).fold(f64::MAX, f64::min);
    let hi = refs.iter().map(|r| r.per_sec).fold(0.0, f64::max);
    (mean(&subj), mean(&refs), lo, hi)
}

fn header() {
    println!(
        "{:<46} {:>10} {:<10} {:>8} {:>9}   reference (same run)",
        "measurement", "rate", "unit", "ratio", "CPU/op"
    );
}

/// One result: its rate as a ratio to `per` reference operations (`C1/4`: a saga costs 4
/// commits), and its CPU per operation next to the reference's CPU for as many operations.
fn row(label: &str, r: Rate, unit: &str, reference: Option<(&str, Rate, f64)>) {
    match reference {
        Some((name, c, per)) => println!(
            "{label:<46} {:>10.0} {unit:<10} {:>7.2}x {:>7.0}us   {name}: {:.0}/s, CPU {:.0}us per {per} ops",
            r.per_sec,
            r.per_sec / (c.per_sec / per),
            r.cpu_per_op_us,
            c.per_sec / per,
            c.cpu_per_op_us * per,
        ),
        None => println!(
            "{label:<46} {:>10.0} {unit:<10} {:>8} {:>7.0}us",
            r.per_sec, "", r.cpu_per_op_us
        ),
    }
}

#[cfg(feature = "postgres")]
const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

#[cfg(feature = "postgres")]
async fn pg_commit_rate(clients: usize) -> Rate {
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
    let cpu0 = cpu_secs();
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
    let n = total.load(Ordering::Relaxed) as f64;
    let rate = Rate {
        per_sec: n / t0.elapsed().as_secs_f64(),
        cpu_per_op_us: (cpu_secs() - cpu0) / n.max(1.0) * 1e6,
    };
    if let Some(c) = last {
        c.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
    }
    rate
}

async fn profile_one(which: &str) {
    let dir = match std::env::var("BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let sqlite = || Arc::new(archon_saga::SqliteStore::open(dir.path().join("p.db")).unwrap());
    let r = match which {
        "sqlite1" => sagas_per_sec(&started(sqlite()).await.0, &saga(), 1).await,
        "sqlite64" => sagas_per_sec(&started(sqlite()).await.0, &saga(), 64).await,
        "sqlitew" => store_write_rate(sqlite()).await,
        "c1" => sqlite_c1(&dir.path().join("c1.db")),
        #[cfg(feature = "postgres")]
        pg => {
            let schema = format!("saga_bench_{}", uuid::Uuid::new_v4().simple());
            let store = Arc::new(
                archon_saga::PostgresStore::connect(PG, &schema)
                    .await
                    .unwrap(),
            );
            let r = match pg {
                "pgw" => store_write_rate(store.clone()).await,
                "pg64" => sagas_per_sec(&started(store.clone()).await.0, &saga(), 64).await,
                _ => sagas_per_sec(&started(store.clone()).await.0, &saga(), 1).await,
            };
            store.drop_schema().await.unwrap();
            r
        }
        #[cfg(not(feature = "postgres"))]
        _ => return,
    };
    row(which, r, "ops/s", None);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // BENCH_ONLY=sqlite|postgres runs one store's half; BENCH_PROFILE=sqlite1|sqlite64|pg1|pg64
    // runs one saga measurement alone (for a profiler).
    if let Ok(p) = std::env::var("BENCH_PROFILE") {
        rt.block_on(profile_one(&p));
        return;
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        // BENCH_DIR puts the SQLite files elsewhere (e.g. /dev/shm: no fsync cost, so the
        // ratios show the CPU overhead alone).
        let dir = match std::env::var("BENCH_DIR") {
            Ok(d) => tempfile::tempdir_in(d).unwrap(),
            Err(_) => tempfile::tempdir().unwrap(),
        };
        println!("archon-saga throughput, 3-step no-op saga (N+1 = 4 durable writes per saga)");
        println!(
            "{:?} per measurement in {} slices, each alternating with a slice of its reference \
             (C1 = 1-row commits\nfrom 1 client, C64 = from 64); load average {}\n",
            secs(),
            slices(),
            loadavg()
        );
        header();
        if only.is_empty() || only == "sqlite" {
            let open =
                |f: &str| Arc::new(archon_saga::SqliteStore::open(dir.path().join(f)).unwrap());
            let c1 = || async { sqlite_c1(&dir.path().join("c1.db")) };
            let w = open("w.db");
            let ((s1, saga1), (s64, saga64)) =
                (started(open("s1.db")).await, started(open("s64.db")).await);
            let (w1, c1w, lo_w, hi_w) = interleaved(|| store_write_rate(w.clone()), c1).await;
            let (r1, c1r1, lo_1, hi_1) = interleaved(|| sagas_per_sec(&s1, &saga1, 1), c1).await;
            let (r64, c1r64, lo_64, hi_64) =
                interleaved(|| sagas_per_sec(&s64, &saga64, 64), c1).await;
            s1.shutdown().await;
            s64.shutdown().await;
            row(
                "SQLite C1 (1-row commits, 1 client)",
                mean(&[c1w, c1r1, c1r64]),
                "commits/s",
                None,
            );
            println!(
                "{:<46} {:.0}..{:.0} / {:.0}..{:.0} / {:.0}..{:.0} commits/s",
                "  C1 slowest..fastest slice, per pair", lo_w, hi_w, lo_1, hi_1, lo_64, hi_64
            );
            row(
                "SQLite store writes (create + 3), 1 at a time",
                w1,
                "writes/s",
                Some(("C1", c1w, 1.0)),
            );
            row(
                "SQLite sagas/s, concurrency 1",
                r1,
                "sagas/s",
                Some(("C1/4", c1r1, 4.0)),
            );
            row(
                "SQLite sagas/s, concurrency 64",
                r64,
                "sagas/s",
                Some(("C1/4", c1r64, 4.0)),
            );
            println!(
                "targets: c=1 >= 0.80x C1/4, c=64 >= 5.00x C1/4; load average {}",
                loadavg()
            );
        }
        if only.is_empty() || only == "sqlite" {
            let open =
                |f: &str| Arc::new(archon_saga::SqliteStore::open(dir.path().join(f)).unwrap());
            let mem = memory_per_in_flight(open("mem.db"), 5_000).await;
            println!(
                "{:<46} {mem:>10.0} bytes",
                "memory per in-flight saga (5k waiting)"
            );
        }

        #[cfg(feature = "postgres")]
        if only.is_empty() || only == "postgres" {
            println!();
            let schema = format!("saga_bench_{}", uuid::Uuid::new_v4().simple());
            let store = Arc::new(
                archon_saga::PostgresStore::connect(PG, &schema)
                    .await
                    .unwrap(),
            );
            let (w1, c1w, lo_w, hi_w) =
                interleaved(|| store_write_rate(store.clone()), || pg_commit_rate(1)).await;
            let (engine, saga) = started(store.clone()).await;
            let (r1, c1r1, lo_1, hi_1) =
                interleaved(|| sagas_per_sec(&engine, &saga, 1), || pg_commit_rate(1)).await;
            let (r64, c64, lo_64, hi_64) =
                interleaved(|| sagas_per_sec(&engine, &saga, 64), || pg_commit_rate(64)).await;
            engine.shutdown().await;
            row(
                "PostgreSQL C1 (1-row commits, 1 client)",
                mean(&[c1w, c1r1]),
                "commits/s",
                None,
            );
            row(
                "PostgreSQL C64 (1-row commits, 64 clients)",
                c64,
                "commits/s",
                None,
            );
            println!(
                "{:<46} {:.0}..{:.0} / {:.0}..{:.0} / {:.0}..{:.0} commits/s",
                "  C1, C1, C64 slowest..fastest slice", lo_w, hi_w, lo_1, hi_1, lo_64, hi_64
            );
            row(
                "PostgreSQL store writes (create + 3), 1 at a time",
                w1,
                "writes/s",
                Some(("C1", c1w, 1.0)),
            );
            row(
                "PostgreSQL sagas/s, concurrency 1",
                r1,
                "sagas/s",
                Some(("C1/4", c1r1, 4.0)),
            );
            row(
                "PostgreSQL sagas/s, concurrency 64",
                r64,
                "sagas/s",
                Some(("C64/4", c64, 4.0)),
            );
            println!(
                "targets: c=1 >= 0.80x C1/4, c=64 >= 1.00x C64/4; CPU is this process only \
                 (the server's is not counted); load average {}",
                loadavg()
            );
            store.drop_schema().await.unwrap();
        }
    });
}
