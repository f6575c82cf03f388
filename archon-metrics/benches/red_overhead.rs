//! Per-request cost of the RED layers against no layer, and of a counter increment with static
//! labels, with the Prometheus recorder installed.
//!
//! Run with: `cargo bench -p archon-metrics --bench red_overhead -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;

use archon_metrics::messaging::MessagingInstruments;
use archon_metrics::{MetricsConfig, ObserveClientLayer, ObserveServerLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{ServiceBuilder, ServiceExt as _};

fn request() -> http::Request<axum::body::Body> {
    http::Request::builder()
        .uri("/users/42")
        .body(axum::body::Body::empty())
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let service = archon_core::ServiceInfo::new("bench", "1.0.0");
    let _metrics = archon_metrics::install(&MetricsConfig::new(&service)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let router = axum::Router::new().route("/users/{id}", axum::routing::get(|| async { "user" }));
    let mut group = c.benchmark_group("axum_request");
    let plain = router.clone();
    group.bench_function("no_layer", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(plain.clone().oneshot(request()).await.unwrap()) });
    });
    let metrics_only = router
        .clone()
        .layer(ObserveServerLayer::new().tracing(false));
    group.bench_function("observe_server_metrics", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(metrics_only.clone().oneshot(request()).await.unwrap()) });
    });
    let full = router.layer(ObserveServerLayer::new());
    group.bench_function("observe_server_metrics_and_spans_no_subscriber", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(full.clone().oneshot(request()).await.unwrap()) });
    });
    group.finish();

    let mut group = c.benchmark_group("client_request");
    let echo = tower::service_fn(|_req: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let client_request = || {
        http::Request::builder()
            .uri("http://orders.internal:8080/orders")
            .body(())
            .unwrap()
    };
    group.bench_function("no_layer", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(echo.oneshot(client_request()).await.unwrap()) });
    });
    let observed = ServiceBuilder::new()
        .layer(
            ObserveClientLayer::new()
                .with_server("orders.internal", 8080)
                .tracing(false),
        )
        .service(echo);
    group.bench_function("observe_client_metrics", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(observed.clone().oneshot(client_request()).await.unwrap())
        });
    });
    let bare = ServiceBuilder::new()
        .layer(ObserveClientLayer::new().metrics(false).tracing(false))
        .service(echo);
    group.bench_function("observe_client_off", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.clone().oneshot(client_request()).await.unwrap()) });
    });
    group.finish();

    let mut group = c.benchmark_group("counter");
    group.bench_function("static_labels_macro", |b| {
        b.iter(|| {
            metrics::counter!("archon.retry.attempts", "archon.policy.name" => "orders", "archon.retry.outcome" => "retried")
                .increment(black_box(1));
        });
    });
    group.bench_function("red_labels_macro_5_labels", |b| {
        // What the client layer records per request: a label vector, then the recorder lookup.
        let address = metrics::SharedString::from_shared(std::sync::Arc::from("orders.internal"));
        b.iter(|| {
            let labels = vec![
                metrics::Label::from_static_parts("http.request.method", "GET"),
                metrics::Label::from_static_parts("url.scheme", "http"),
                metrics::Label::from_static_parts("http.response.status_code", "200"),
                metrics::Label::new("server.address", address.clone()),
                metrics::Label::from_static_parts("server.port", "8080"),
            ];
            metrics::histogram!("http.client.request.duration", labels).record(black_box(0.001));
        });
    });
    let bus = MessagingInstruments::new("nats", "orders.created");
    group.bench_function("messaging_record_sent_handle", |b| {
        b.iter(|| bus.record_sent(black_box(1)));
    });
    group.finish();
}

criterion_group!(red_overhead, benches);
criterion_main!(red_overhead);
