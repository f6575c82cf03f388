//! In-memory publish+consume throughput against raw `tokio::sync::mpsc` channels doing the same
//! fan-out, and router overhead per event.
//!
//! Run with: `cargo bench -p archon-events --bench throughput -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use archon_events::router::{
    EventContext, HandlerError, MetricsLayer, Route, Router, TracingLayer,
};
use archon_events::{
    Envelope, Event, EventBus, JsonCodec, MemoryBus, MemoryConfig, Publisher, SubscribeOptions,
    Subscriber,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::{Mutex, mpsc};

const EVENTS: usize = 10_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn envelope(size: usize) -> Envelope {
    Envelope::builder("/bench", "bench.event.v1")
        .data("application/octet-stream", vec![7u8; size])
        .build()
        .unwrap()
}

struct MemoryRig {
    bus: MemoryBus,
    done: mpsc::UnboundedReceiver<()>,
    groups: usize,
}

async fn memory_rig(groups: usize) -> MemoryRig {
    let bus = MemoryBus::with_config(MemoryConfig::default().with_capacity(16_384));
    let (tx, done) = mpsc::unbounded_channel();
    for g in 0..groups {
        let mut sub = bus
            .subscribe(
                "bench",
                SubscribeOptions::group(format!("g{g}")).with_prefetch(512),
            )
            .await
            .unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(Ok(d)) = sub.next().await {
                d.ack().await.unwrap();
                n += 1;
                if n.is_multiple_of(EVENTS) && tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    MemoryRig { bus, done, groups }
}

impl MemoryRig {
    async fn run(&mut self, events: Vec<Envelope>, batch: bool) -> Duration {
        let start = Instant::now();
        if batch {
            let mut events = events;
            while !events.is_empty() {
                let rest = events.split_off(events.len().min(256));
                self.bus.publish_batch("bench", events).await.unwrap();
                events = rest;
            }
        } else {
            for e in events {
                self.bus.publish("bench", e).await.unwrap();
            }
        }
        for _ in 0..self.groups {
            self.done.recv().await.unwrap();
        }
        start.elapsed()
    }
}

struct ChannelRig {
    senders: Vec<mpsc::Sender<Arc<Envelope>>>,
    done: mpsc::UnboundedReceiver<()>,
}

fn channel_rig(groups: usize) -> ChannelRig {
    let (tx, done) = mpsc::unbounded_channel();
    let mut senders = Vec::new();
    for _ in 0..groups {
        let (s, mut r) = mpsc::channel::<Arc<Envelope>>(16_384);
        senders.push(s);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(e) = r.recv().await {
                std::hint::black_box(&e);
                n += 1;
                if n.is_multiple_of(EVENTS) && tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    ChannelRig { senders, done }
}

impl ChannelRig {
    async fn run(&mut self, events: Vec<Envelope>) -> Duration {
        let start = Instant::now();
        for e in events {
            let e = Arc::new(e);
            for s in &self.senders {
                s.send(Arc::clone(&e)).await.unwrap();
            }
        }
        for _ in 0..self.senders.len() {
            self.done.recv().await.unwrap();
        }
        start.elapsed()
    }
}

fn fan_out(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish_consume");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for size in [16usize, 256, 4096] {
        let template = envelope(size);
        for groups in [1usize, 4] {
            let param = format!("{size}B/{groups}g");
            let memory = Arc::new(Mutex::new(rt.block_on(memory_rig(groups))));
            for batch in [false, true] {
                let name = if batch { "memory_batch256" } else { "memory" };
                group.bench_function(BenchmarkId::new(name, &param), |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let (rig, template) = (Arc::clone(&memory), template.clone());
                        async move {
                            let mut rig = rig.lock().await;
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += rig.run(vec![template.clone(); EVENTS], batch).await;
                            }
                            total
                        }
                    });
                });
            }
            let channels = Arc::new(Mutex::new(rt.block_on(async { channel_rig(groups) })));
            group.bench_function(BenchmarkId::new("tokio_mpsc", &param), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (rig, template) = (Arc::clone(&channels), template.clone());
                    async move {
                        let mut rig = rig.lock().await;
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += rig.run(vec![template.clone(); EVENTS]).await;
                        }
                        total
                    }
                });
            });
        }
    }
    group.finish();
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Tick {
    n: u64,
}

impl Event for Tick {
    const TYPE: &'static str = "bench.tick.v1";
}

/// Router (tracing + metrics layers, no subscriber/recorder installed) against a bare
/// subscription loop that acks, both handling `EVENTS` 16-byte-ish JSON events.
fn router_overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    let template = Envelope::event("/bench", &Tick { n: 1 }, &JsonCodec)
        .unwrap()
        .build()
        .unwrap();

    let (bare, bare_done) = rt.block_on(async {
        let memory = MemoryBus::new();
        let mut sub = memory
            .subscribe("bench", SubscribeOptions::group("g").with_prefetch(512))
            .await
            .unwrap();
        let (tx, done) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(Ok(d)) = sub.next().await {
                let tick: Tick = serde_json::from_slice(d.envelope().data()).unwrap();
                std::hint::black_box(tick.n);
                d.ack().await.unwrap();
                n += 1;
                if n.is_multiple_of(EVENTS) && tx.send(()).is_err() {
                    break;
                }
            }
        });
        (memory, done)
    });
    let bare = Arc::new(Mutex::new((bare, bare_done)));
    group.bench_function("bare_subscription", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (rig, template) = (Arc::clone(&bare), template.clone());
            async move {
                let mut rig = rig.lock().await;
                let (bus, done) = &mut *rig;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    bus.publish_batch("bench", vec![template.clone(); EVENTS])
                        .await
                        .unwrap();
                    done.recv().await.unwrap();
                    total += start.elapsed();
                }
                total
            }
        });
    });

    for (name, layered) in [
        ("router_no_layers", false),
        ("router_tracing_metrics", true),
    ] {
        let routed = rt.block_on(async {
            let memory = MemoryBus::new();
            let bus: Arc<dyn EventBus> = Arc::new(memory.clone());
            let (tx, done) = mpsc::unbounded_channel();
            let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut router = Router::new(bus);
            if layered {
                router = router.layer(TracingLayer::new()).layer(MetricsLayer::new());
            }
            let router = router
                .route(
                    Route::new("bench", "g").prefetch(512),
                    move |_: EventContext, tick: Tick| {
                        std::hint::black_box(tick.n);
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if n.is_multiple_of(EVENTS) {
                            let _ = tx.send(());
                        }
                        async { Ok::<(), HandlerError>(()) }
                    },
                )
                .start()
                .await
                .unwrap();
            (memory, done, router)
        });
        let routed = Arc::new(Mutex::new(routed));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (rig, template) = (Arc::clone(&routed), template.clone());
                async move {
                    let mut rig = rig.lock().await;
                    let (bus, done, _router) = &mut *rig;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        bus.publish_batch("bench", vec![template.clone(); EVENTS])
                            .await
                            .unwrap();
                        done.recv().await.unwrap();
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

/// Per-call cost of the middleware alone, on one thread (no scheduling noise): a no-op handler
/// wrapped in nothing, in `TracingLayer`, in `MetricsLayer`, and in both.
fn layer_cost(c: &mut Criterion) {
    use archon_events::router::HandlerService;
    use tower::ServiceExt as _;
    use tower_layer::Layer as _;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let event = Arc::new(
        Envelope::event("/bench", &Tick { n: 1 }, &JsonCodec)
            .unwrap()
            .build()
            .unwrap(),
    );
    let noop = || {
        HandlerService::new(tower::service_fn(|_ctx: EventContext| async {
            Ok::<(), HandlerError>(())
        }))
    };
    let stacks: [(&str, HandlerService); 4] = [
        ("none", noop()),
        (
            "tracing",
            HandlerService::new(TracingLayer::new().layer(noop())),
        ),
        (
            "metrics",
            HandlerService::new(MetricsLayer::new().layer(noop())),
        ),
        (
            "tracing_metrics",
            HandlerService::new(TracingLayer::new().layer(MetricsLayer::new().layer(noop()))),
        ),
    ];
    let mut group = c.benchmark_group("layers");
    for (name, service) in stacks {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let ctx = EventContext::new(Arc::clone(&event), "bench", "g", "h", 1);
                service.clone().oneshot(ctx)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out, router_overhead, layer_cost);
criterion_main!(benches);
