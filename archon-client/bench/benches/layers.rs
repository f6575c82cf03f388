//! Per-call cost of each layer and of the full stack over a no-op inner service, side by side
//! with tower's own layers and tower-resilience 0.13, in one run.
//!
//! Run with: cargo bench -p archon-client-bench --bench layers -- --warm-up-time 1 --measurement-time 3
//!
//! After criterion's figures it prints a summary: every service timed in interleaved rounds and
//! the targets as ratios of the medians (`ARCHON_SUMMARY_ONLY=1` prints only that).
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use archon_client::Outcome;
use archon_client::bulkhead::{BulkheadConfig, BulkheadLayer};
use archon_client::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerHandle, CircuitBreakerLayer,
};
use archon_client::retry::{RetryConfig, RetryPolicy, RetryRequest};
use archon_client::timeout::DeadlineRequest;
use archon_core::BoxError;
use criterion::{Criterion, criterion_group};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// The request every stack gets (cloneable so every retry implementation can use it).
#[derive(Clone, Debug)]
struct Req(u64);

impl RetryRequest for Req {
    fn is_idempotent(&self) -> bool {
        true
    }
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl DeadlineRequest for Req {
    fn set_deadline(&mut self, _at: tokio::time::Instant) {}
    fn deadline(&self) -> Option<tokio::time::Instant> {
        None
    }
}

#[derive(Clone, Debug)]
struct BenchError;

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bench error")
    }
}

impl std::error::Error for BenchError {}

type Resp = http::Response<()>;

fn noop() -> impl Service<Req, Response = Resp, Error = BoxError, Future: Send> + Clone + Send + Sync
{
    service_fn(|_: Req| std::future::ready(Ok::<_, BoxError>(http::Response::new(()))))
}

fn noop_typed()
-> impl Service<Req, Response = Resp, Error = BenchError, Future: Send> + Clone + Send + Sync {
    service_fn(|_: Req| std::future::ready(Ok::<_, BenchError>(http::Response::new(()))))
}

/// A minimal attempt-count policy for tower's own `Retry` (tower ships none).
#[derive(Clone)]
struct Attempts(usize);

impl<E> tower::retry::Policy<Req, Resp, E> for Attempts {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _: &mut Req, result: &mut Result<Resp, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 0 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Drives one call on the current runtime thread.
async fn call<S: Service<Req>>(svc: &mut S, i: u64) {
    let _ = svc.ready().await.ok().unwrap().call(Req(i)).await;
}

fn breaker_cfg() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .count_window(100)
        .minimum_calls(100)
}

/// The same breaker without slow-call detection (tower-resilience's default: it has none
/// unless configured), so the breaker reads no clock per call.
fn breaker_cfg_no_slow() -> CircuitBreakerConfig {
    breaker_cfg().slow_calls(100.0, Duration::ZERO)
}

fn ours_breaker() -> impl Service<Req, Response = Resp> + Clone {
    ours_breaker_with(breaker_cfg())
}

fn ours_breaker_with(cfg: CircuitBreakerConfig) -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new("bench", cfg).unwrap())
        .service(noop())
}

fn tr_breaker() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(
            tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .sliding_window_size(100)
                .minimum_number_of_calls(100)
                .build()
                .unwrap(),
        )
        .service(noop_typed())
}

fn ours_retry() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryPolicy::new(
            &RetryConfig::default(),
        )))
        .service(noop())
}

fn tower_retry() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(Attempts(2)))
        .service(noop())
}

fn tr_retry() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(
            tower_resilience::retry::RetryLayer::<Req, Resp, BenchError>::builder()
                .max_attempts(3)
                .exponential_backoff(Duration::from_millis(100))
                .build(),
        )
        .service(noop_typed())
}

fn ours_bulkhead() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(BulkheadLayer::new("bench", BulkheadConfig::default()))
        .service(noop())
}

fn tower_limit() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(25)
        .service(noop())
}

fn tr_bulkhead() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(
            tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(25)
                .build()
                .unwrap(),
        )
        .service(noop_typed())
}

/// Ours: retry (+ budget) > breaker > bulkhead > per-attempt timeout. The layers compose as
/// they are: the retry classifier reads the breaker's error type.
fn ours_full() -> impl Service<Req, Response = Resp> + Clone {
    ours_full_with(breaker_cfg())
}

fn ours_full_with(cfg: CircuitBreakerConfig) -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryPolicy::new(
            &RetryConfig::default(),
        )))
        .layer(CircuitBreakerLayer::new("bench", cfg).unwrap())
        .layer(BulkheadLayer::new("bench", BulkheadConfig::default()))
        .timeout(Duration::from_secs(10))
        .service(noop())
}

/// tower's own four layers: Timeout, Retry, LoadShed, ConcurrencyLimit.
fn tower_full() -> impl Service<Req, Response = Resp> + Clone {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(Attempts(2)))
        .load_shed()
        .concurrency_limit(25)
        .timeout(Duration::from_secs(10))
        .service(noop())
}

/// tower-resilience 0.13: retry > breaker > bulkhead > time limiter.
fn tr_full() -> impl Service<Req, Response = Resp> + Clone {
    let svc = ServiceBuilder::new()
        .layer(
            tower_resilience::timelimiter::TimeLimiterLayer::builder()
                .timeout_duration(Duration::from_secs(10))
                .build(),
        )
        .service(noop_typed());
    let svc = ServiceBuilder::new()
        .layer(
            tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(25)
                .build()
                .unwrap(),
        )
        .service(svc);
    let svc = ServiceBuilder::new()
        .layer(
            tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .failure_rate_threshold(0.5)
                .sliding_window_size(100)
                .minimum_number_of_calls(100)
                .build()
                .unwrap(),
        )
        .service(svc);
    ServiceBuilder::new()
        .layer(
            tower_resilience::retry::RetryLayer::<Req, Resp, _>::builder()
                .max_attempts(3)
                .exponential_backoff(Duration::from_millis(100))
                .build(),
        )
        .service(svc)
}

fn bench_service<S>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, svc: S)
where
    S: Service<Req> + Clone,
{
    c.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    call(&mut svc, i).await;
                }
                start.elapsed()
            }
        });
    });
}

fn per_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_service(c, &rt, "baseline/noop", noop());
    bench_service(c, &rt, "breaker/archon", ours_breaker());
    bench_service(
        c,
        &rt,
        "breaker/archon-no-slow-calls",
        ours_breaker_with(breaker_cfg_no_slow()),
    );
    bench_service(c, &rt, "breaker/tower-resilience", tr_breaker());
    bench_service(c, &rt, "retry/archon", ours_retry());
    bench_service(c, &rt, "retry/tower", tower_retry());
    bench_service(c, &rt, "retry/tower-resilience", tr_retry());
    bench_service(c, &rt, "bulkhead/archon", ours_bulkhead());
    bench_service(c, &rt, "bulkhead/tower-loadshed+limit", tower_limit());
    bench_service(c, &rt, "bulkhead/tower-resilience", tr_bulkhead());
    bench_service(c, &rt, "stack/archon", ours_full());
    bench_service(
        c,
        &rt,
        "stack/archon-no-slow-calls",
        ours_full_with(breaker_cfg_no_slow()),
    );
    bench_service(c, &rt, "stack/tower", tower_full());
    bench_service(c, &rt, "stack/tower-resilience", tr_full());
    let boxed: BoxCloneSyncService<Req, Resp, BoxError> =
        archon_client::ResiliencePolicy::default()
            .timeout(Duration::from_secs(10))
            .retry(RetryConfig::default())
            .circuit_breaker(breaker_cfg())
            .bulkhead(BulkheadConfig::default())
            .build("bench")
            .unwrap()
            .wrap(noop());
    bench_service(c, &rt, "stack/archon-policy-boxed", boxed);
}

/// The breaker's own cost (acquire + record) by window kind and size: flat in the size.
fn windows(c: &mut Criterion) {
    for (name, cfg) in [
        (
            "window/count-100",
            CircuitBreakerConfig::default().count_window(100),
        ),
        (
            "window/count-100000",
            CircuitBreakerConfig::default().count_window(100_000),
        ),
        (
            "window/time-1s",
            CircuitBreakerConfig::default().time_window(1),
        ),
        (
            "window/time-60s",
            CircuitBreakerConfig::default().time_window(60),
        ),
    ] {
        let handle = CircuitBreakerHandle::new(name, cfg.minimum_calls(u32::MAX)).unwrap();
        // Fill the window first: 100,000 calls in it.
        for _ in 0..100_000 {
            handle
                .try_acquire()
                .unwrap()
                .record_with_duration(Outcome::Success, Duration::ZERO);
        }
        c.bench_function(name, |b| {
            b.iter(|| {
                handle
                    .try_acquire()
                    .unwrap()
                    .record_with_duration(Outcome::Success, Duration::ZERO);
            });
        });
    }
}

/// One thread per handle (thread `i` on `handles[i]`), each making `calls` calls through the
/// closed path. The threads first meet at a spinning start barrier (so both are running on a
/// core before the clock starts); the time is from the first thread leaving the barrier to
/// the last thread's end, divided by the number of threads: time per call of all threads
/// together.
fn closed_path_threads(handles: &[&CircuitBreakerHandle], calls: u64) -> Duration {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let arrived = AtomicUsize::new(0);
    let threads = handles.len();
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .map(|handle| {
                let arrived = &arrived;
                s.spawn(move || {
                    arrived.fetch_add(1, Ordering::AcqRel);
                    while arrived.load(Ordering::Acquire) < threads {
                        std::hint::spin_loop();
                    }
                    let start = Instant::now();
                    for _ in 0..calls {
                        handle
                            .try_acquire()
                            .unwrap()
                            .record_with_duration(Outcome::Success, Duration::ZERO);
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    (end - start) / threads as u32
}

/// Calls per thread in the thread-scaling measurements (`ARCHON_THREAD_CALLS`, default
/// 1,000,000).
fn thread_calls() -> u64 {
    std::env::var("ARCHON_THREAD_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

fn threads_breaker(name: &str) -> CircuitBreakerHandle {
    CircuitBreakerHandle::new(name, breaker_cfg().minimum_calls(u32::MAX)).unwrap()
}

/// Throughput of the breaker's closed path: 1 thread, 2 threads on one shared breaker, and
/// (the control: what the two cores give) 2 threads on two separate breakers.
fn threads(c: &mut Criterion) {
    let (a, b) = (threads_breaker("threads-a"), threads_breaker("threads-b"));
    for (name, handles) in [
        ("threads/1", vec![&a]),
        ("threads/2-shared", vec![&a, &a]),
        ("threads/2-separate", vec![&a, &b]),
    ] {
        // Time per call of all threads together: lower = more throughput.
        c.bench_function(name, |bench| {
            bench.iter_custom(|iters| closed_path_threads(&handles, iters));
        });
    }
}

criterion_group!(benches, per_layer, windows, threads);

/// `ARCHON_PROFILE=<stack> ARCHON_PROFILE_CALLS=<n>` runs only `n` calls of one stack (for
/// `valgrind --tool=callgrind`: instructions per call = difference of two runs / difference
/// of `n`).
fn profile(which: &str, calls: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    fn run<S: Service<Req>>(rt: &tokio::runtime::Runtime, mut svc: S, calls: u64) {
        rt.block_on(async {
            for i in 0..calls {
                call(&mut svc, i).await;
            }
        });
    }
    fn size<S: Service<Req>>(name: &str, mut svc: S) {
        let f = svc.call(Req(0));
        eprintln!(
            "{name}: future {} bytes, service {} bytes",
            std::mem::size_of_val(&f),
            std::mem::size_of::<S>()
        );
    }
    if which == "sizes" {
        let _guard = rt.enter();
        size("breaker", ours_breaker());
        size("bulkhead", ours_bulkhead());
        size("bulkhead-tower", tower_limit());
        size("retry", ours_retry());
        size("retry-tower", tower_retry());
        size("stack", ours_full());
        size("stack-tower", tower_full());
        return;
    }
    if which == "clock" {
        let start = Instant::now();
        let mut x = 0u64;
        for _ in 0..calls {
            x = x.wrapping_add(
                std::hint::black_box(Instant::now())
                    .elapsed()
                    .subsec_nanos() as u64,
            );
        }
        let std_ns = start.elapsed().as_nanos() as f64 / calls as f64 / 2.0;
        let start = Instant::now();
        for _ in 0..calls {
            x = x.wrapping_add(
                std::hint::black_box(tokio::time::Instant::now())
                    .elapsed()
                    .subsec_nanos() as u64,
            );
        }
        let tokio_ns = start.elapsed().as_nanos() as f64 / calls as f64 / 2.0;
        let start = Instant::now();
        for _ in 0..calls {
            let t = std::hint::black_box(rustix::time::clock_gettime(
                rustix::time::ClockId::MonotonicCoarse,
            ));
            x = x.wrapping_add(t.tv_nsec as u64);
        }
        let coarse_ns = start.elapsed().as_nanos() as f64 / calls as f64;
        let _ = quanta::Instant::now();
        let start = Instant::now();
        for _ in 0..calls {
            x = x.wrapping_add(
                std::hint::black_box(quanta::Instant::now())
                    .elapsed()
                    .subsec_nanos() as u64,
            );
        }
        let quanta_ns = start.elapsed().as_nanos() as f64 / calls as f64 / 2.0;
        let res = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
        println!(
            "clock reading: std {std_ns:.1} ns, tokio {tokio_ns:.1} ns, coarse monotonic {coarse_ns:.1} ns (resolution {} ns), quanta {quanta_ns:.1} ns ({x})",
            res.tv_nsec
        );
        return;
    }
    match which {
        "noop" => run(&rt, noop(), calls),
        "breaker" => run(&rt, ours_breaker(), calls),
        "breaker-no-slow" => run(&rt, ours_breaker_with(breaker_cfg_no_slow()), calls),
        "breaker-tr" => run(&rt, tr_breaker(), calls),
        "retry" => run(&rt, ours_retry(), calls),
        "retry-tower" => run(&rt, tower_retry(), calls),
        "bulkhead" => run(&rt, ours_bulkhead(), calls),
        "bulkhead-tower" => run(&rt, tower_limit(), calls),
        "stack" => run(&rt, ours_full(), calls),
        "stack-no-slow" => run(&rt, ours_full_with(breaker_cfg_no_slow()), calls),
        "stack-tower" => run(&rt, tower_full(), calls),
        "stack-tr" => run(&rt, tr_full(), calls),
        "threads1" | "threads2" | "threads2-separate" => {
            let (a, b) = (threads_breaker("p"), threads_breaker("q"));
            let handles = match which {
                "threads1" => vec![&a],
                "threads2" => vec![&a, &a],
                _ => vec![&a, &b],
            };
            closed_path_threads(&handles, calls / handles.len() as u64);
        }
        "window" => {
            let handle =
                CircuitBreakerHandle::new("p", breaker_cfg().minimum_calls(u32::MAX)).unwrap();
            for _ in 0..calls {
                handle
                    .try_acquire()
                    .unwrap()
                    .record_with_duration(Outcome::Success, Duration::ZERO);
            }
        }
        other => panic!("unknown stack {other}"),
    }
}

/// Times `calls` calls of `svc` on `rt`; nanoseconds per call.
fn time_calls<S: Service<Req>>(rt: &tokio::runtime::Runtime, svc: &mut S, calls: u64) -> f64 {
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..calls {
            call(svc, i).await;
        }
        start.elapsed().as_nanos() as f64 / calls as f64
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The targets as same-run ratios: every service is timed in each of `ROUNDS`
/// interleaved rounds (so load changes hit all of them alike) and the medians are compared.
fn summary() {
    const ROUNDS: usize = 21;
    const CALLS: u64 = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let load_before = load_average();
    type Timer<'a> = Box<dyn FnMut() -> f64 + 'a>;
    fn timer<'a, S: Service<Req> + 'a>(rt: &'a tokio::runtime::Runtime, mut svc: S) -> Timer<'a> {
        Box::new(move || time_calls(rt, &mut svc, CALLS))
    }
    let (a, b) = (threads_breaker("threads-a"), threads_breaker("threads-b"));
    let (a, b) = (&a, &b);
    let per_thread = thread_calls();
    let per_call = move |handles: &[&CircuitBreakerHandle]| {
        closed_path_threads(handles, per_thread).as_nanos() as f64 / per_thread as f64
    };
    let mut timers: Vec<(&str, Timer<'_>)> = vec![
        ("baseline/noop", timer(&rt, noop())),
        ("breaker/archon", timer(&rt, ours_breaker())),
        (
            "breaker/archon-no-slow-calls",
            timer(&rt, ours_breaker_with(breaker_cfg_no_slow())),
        ),
        ("breaker/tower-resilience", timer(&rt, tr_breaker())),
        ("retry/archon", timer(&rt, ours_retry())),
        ("retry/tower", timer(&rt, tower_retry())),
        ("bulkhead/archon", timer(&rt, ours_bulkhead())),
        ("bulkhead/tower-loadshed+limit", timer(&rt, tower_limit())),
        ("stack/archon", timer(&rt, ours_full())),
        (
            "stack/archon-no-slow-calls",
            timer(&rt, ours_full_with(breaker_cfg_no_slow())),
        ),
        ("stack/tower", timer(&rt, tower_full())),
        ("stack/tower-resilience", timer(&rt, tr_full())),
        ("threads/1", Box::new(move || per_call(&[a]))),
        ("threads/2-shared", Box::new(move || per_call(&[a, a]))),
        ("threads/2-separate", Box::new(move || per_call(&[a, b]))),
    ];
    let mut samples = vec![Vec::new(); timers.len()];
    for _ in 0..ROUNDS {
        for (i, (_, t)) in timers.iter_mut().enumerate() {
            samples[i].push(t());
        }
    }
    let m: std::collections::HashMap<&str, f64> = timers
        .iter()
        .zip(samples)
        .map(|((name, _), s)| (*name, median(s)))
        .collect();
    let base = m["baseline/noop"];
    println!();
    println!(
        "summary: medians of {ROUNDS} interleaved rounds of {CALLS} calls (load average before: {load_before}; after: {})",
        load_average()
    );
    for (name, _) in &timers {
        let v = m[name];
        if name.starts_with("threads") || *name == "baseline/noop" {
            println!("  {name:32} {v:8.1} ns/call");
        } else {
            println!(
                "  {name:32} {v:8.1} ns/call  (+{:.1} ns over baseline)",
                v - base
            );
        }
    }
    let added = |n: &str| m[n] - base;
    let ratio = |a: &str, b: &str| added(a) / added(b);
    println!("targets:");
    for ours in ["stack/archon", "stack/archon-no-slow-calls"] {
        println!(
            "  1. {ours} added / stack/tower-resilience added = {:.2}x (target <= 0.30x)",
            ratio(ours, "stack/tower-resilience")
        );
        println!(
            "  2. {ours} added / stack/tower added            = {:.2}x (target <= 1.50x)",
            ratio(ours, "stack/tower")
        );
    }
    println!(
        "  3. closed-path throughput, 2 threads / 1 thread on one shared breaker = {:.2}x (target >= 1.80x)",
        m["threads/1"] / m["threads/2-shared"]
    );
    println!(
        "     control, 2 threads / 1 thread on two separate breakers        = {:.2}x (what the two cores give; {per_thread} calls per thread)",
        m["threads/1"] / m["threads/2-separate"]
    );
    println!(
        "  breaker alone: archon / tower-resilience added = {:.2}x; retry: archon / tower = {:.2}x; bulkhead: archon / tower = {:.2}x",
        ratio("breaker/archon", "breaker/tower-resilience"),
        ratio("retry/archon", "retry/tower"),
        ratio("bulkhead/archon", "bulkhead/tower-loadshed+limit"),
    );
}

fn main() {
    if let Ok(which) = std::env::var("ARCHON_PROFILE") {
        let calls = std::env::var("ARCHON_PROFILE_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        profile(&which, calls);
        return;
    }
    // `ARCHON_SUMMARY_ONLY=1` skips criterion and prints only the interleaved summary.
    if std::env::var_os("ARCHON_SUMMARY_ONLY").is_none() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
