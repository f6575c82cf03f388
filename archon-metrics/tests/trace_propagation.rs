//! One trace across real services: A (axum) -HTTP-> B (axum) -gRPC-> C (tonic) -event->
//! D (archon-events consumer), exported to an in-memory span exporter; a producer/consumer hand-off through event headers; invalid incoming
//! `traceparent` headers; log lines carrying the OpenTelemetry ids; spans flushed on shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use std::time::Duration;

use archon_core::config::{HealthConfig, LogConfig};
use archon_core::context::Metadata;
use archon_core::health::{CheckKind, GrpcHealth, HealthRegistry};
use archon_events::{Envelope, MemoryBus, Publisher as _, SubscribeOptions, Subscriber as _};
use archon_metrics::messaging::MessagingInstruments;
use archon_metrics::otel::Tracing;
use archon_metrics::{ObserveClientLayer, ObserveServerLayer};
use futures::StreamExt as _;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tower::{ServiceBuilder, ServiceExt as _};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Log lines written by Archon's logging layer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

struct Telemetry {
    tracing: Tracing,
    exporter: InMemorySpanExporter,
    logs: Logs,
}

/// One global subscriber for the whole test binary: Archon's JSON logs plus OpenTelemetry,
/// composed in one registry as the crate docs describe.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let service = archon_core::ServiceInfo::new("trace-test", "1.0.0");
        let exporter = InMemorySpanExporter::default();
        let tracing = Tracing::with_exporter(&service, exporter.clone());
        let logs = Logs::default();
        let subscriber = tracing_subscriber::registry()
            .with(archon_core::logging::layer(
                &service,
                &LogConfig::default(),
                logs.clone(),
            ))
            .with(tracing.layer());
        tracing::subscriber::set_global_default(subscriber).unwrap();
        Telemetry {
            tracing,
            exporter,
            logs,
        }
    })
}

fn spans_of(trace_id: TraceId) -> Vec<SpanData> {
    let t = telemetry();
    t.tracing.force_flush().unwrap();
    t.exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect()
}

fn all_spans() -> Vec<SpanData> {
    let t = telemetry();
    t.tracing.force_flush().unwrap();
    t.exporter.get_finished_spans().unwrap()
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// C: gRPC health. B: `/b` calls C. A: `/a/{n}` calls B. Returns A's address.
async fn start_services() -> SocketAddr {
    let c = support::spawn_grpc_health(ObserveServerLayer::new()).await;
    start_chain(c, "/a/{n}", "/b").await
}

/// B (`b_route`) calls the gRPC health service at `c`; A (`a_route`, one path parameter) calls B.
/// Returns A's address.
async fn start_chain(c: SocketAddr, a_route: &str, b_route: &'static str) -> SocketAddr {
    let channel = ServiceBuilder::new()
        .layer(ObserveClientLayer::new().with_server("127.0.0.1", c.port()))
        .service(support::channel(c).await);
    let b_app = axum::Router::new()
        .route(
            b_route,
            axum::routing::get(move || {
                let channel = channel.clone();
                async move {
                    tracing::info!("B calls C");
                    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                    let reply = health
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .unwrap();
                    format!("{}", reply.into_inner().status)
                }
            }),
        )
        .layer(ObserveServerLayer::new());
    let b = support::spawn_axum(b_app).await;
    let client = ServiceBuilder::new()
        .layer(ObserveClientLayer::new())
        .service(support::http_client());
    let a_app = axum::Router::new()
        .route(
            a_route,
            axum::routing::get(move || {
                let client = client.clone();
                async move {
                    let request = http::Request::get(format!("http://{b}{b_route}"))
                        .body(String::new())
                        .unwrap();
                    let response = client.oneshot(request).await.unwrap();
                    response.status().as_u16().to_string()
                }
            }),
        )
        .layer(ObserveServerLayer::new());
    support::spawn_axum(a_app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_http_and_grpc() {
    telemetry();
    let a = start_services().await;
    let response = reqwest::get(format!("http://{a}/a/7")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "200");

    // Find A's server span (the root), then everything in its trace.
    let roots: Vec<SpanData> = all_spans()
        .into_iter()
        .filter(|s| s.name == "GET /a/{n}")
        .collect();
    assert_eq!(roots.len(), 1, "one request to A: {roots:#?}");
    let root = &roots[0];
    assert_eq!(root.parent_span_id, SpanId::INVALID, "A starts the trace");
    let trace_id = root.span_context.trace_id();
    let spans = spans_of(trace_id);
    let by_name = |name: &str, kind: SpanKind| -> SpanData {
        let found: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.name == name && s.span_kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} span {name}: {spans:#?}");
        found[0].clone()
    };
    let a_server = by_name("GET /a/{n}", SpanKind::Server);
    let a_client = by_name("GET", SpanKind::Client);
    let b_server = by_name("GET /b", SpanKind::Server);
    let b_client = by_name("grpc.health.v1.Health/Check", SpanKind::Client);
    let c_server = by_name("grpc.health.v1.Health/Check", SpanKind::Server);
    assert_eq!(spans.len(), 5, "no stray spans in the trace: {spans:#?}");

    let id = |s: &SpanData| s.span_context.span_id();
    assert_eq!(
        a_client.parent_span_id,
        id(&a_server),
        "A's call is inside A's request"
    );
    assert_eq!(
        b_server.parent_span_id,
        id(&a_client),
        "B continues A's call (HTTP)"
    );
    assert!(b_server.parent_span_is_remote);
    assert_eq!(
        b_client.parent_span_id,
        id(&b_server),
        "B's call is inside B's request"
    );
    assert_eq!(
        c_server.parent_span_id,
        id(&b_client),
        "C continues B's call (gRPC)"
    );
    assert!(c_server.parent_span_is_remote);

    // Attributes on the way.
    assert_eq!(
        attr(&a_server, "http.route").map(|v| v.as_str().into_owned()),
        Some("/a/{n}".to_owned())
    );
    assert_eq!(
        attr(&b_server, "http.response.status_code").map(|v| v.as_str().into_owned()),
        Some("200".to_owned())
    );
    assert_eq!(
        attr(&c_server, "rpc.response.status_code").map(|v| v.as_str().into_owned()),
        Some("OK".to_owned())
    );
    assert_eq!(
        attr(&b_client, "rpc.system.name").map(|v| v.as_str().into_owned()),
        Some("grpc".to_owned())
    );

    // The correlation id minted by A reached C through HTTP and gRPC.
    let correlation = |s: &SpanData| attr(s, "correlation_id").map(|v| v.as_str().into_owned());
    let minted = correlation(&a_server).expect("A mints a correlation id");
    assert_eq!(correlation(&b_server).as_deref(), Some(minted.as_str()));
    assert_eq!(correlation(&c_server).as_deref(), Some(minted.as_str()));

    // B's log line carries the OpenTelemetry trace and span ids.
    let logs = String::from_utf8(telemetry().logs.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "B calls C" && l["trace_id"] == trace_id.to_string().as_str())
        .unwrap_or_else(|| panic!("no log line of this trace in:\n{logs}"));
    assert_eq!(line["span_id"], id(&b_server).to_string().as_str());
    assert_eq!(line["correlation_id"], minted.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_headers_carry_the_trace_from_producer_to_consumer() {
    telemetry();
    let producer = MessagingInstruments::new("memory", "orders.created");
    let consumer =
        MessagingInstruments::new("memory", "orders.created").with_consumer_group("billing");

    // Producer: inside some work, send with the event's headers as the carrier.
    let mut headers: HashMap<String, String> = HashMap::new();
    let work = tracing::info_span!("place order");
    let send = work.in_scope(|| producer.send_span(&mut headers));
    assert!(headers.contains_key("traceparent"), "{headers:?}");
    drop(send);
    drop(work);

    // The headers travel (as strings) to the consumer.
    let received: HashMap<String, String> = headers.clone();
    let process = consumer.process_span(&received);
    process.in_scope(|| tracing::info!("handling"));
    drop(process);

    let traceparent: archon_core::context::TraceParent = headers["traceparent"].parse().unwrap();
    let trace_id = TraceId::from(traceparent.trace_id_u128());
    let spans = spans_of(trace_id);
    let send = spans
        .iter()
        .find(|s| s.name == "send orders.created")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    let process = spans
        .iter()
        .find(|s| s.name == "process orders.created")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(
        u64::from_be_bytes(send.span_context.span_id().to_bytes()),
        traceparent.span_id_u64(),
        "the injected parent is the send span"
    );
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert!(process.parent_span_is_remote);
    let links: Vec<_> = process.links.iter().collect();
    assert_eq!(links.len(), 1, "process links to the producer");
    assert_eq!(links[0].span_context.span_id(), send.span_context.span_id());
    assert_eq!(
        attr(process, "messaging.consumer.group.name").map(|v| v.as_str().into_owned()),
        Some("billing".to_owned())
    );
}

/// C: the standard gRPC health service whose readiness check publishes an event to `bus` on
/// every `Check` (inside C's server span, as a real handler would). Returns C's address.
async fn spawn_publishing_c(bus: MemoryBus) -> SocketAddr {
    let registry = HealthRegistry::new(HealthConfig {
        cache_ttl: Duration::ZERO,
        ..HealthConfig::default()
    });
    registry.register("publishes", CheckKind::Readiness, move || {
        let bus = bus.clone();
        async move {
            let producer = MessagingInstruments::new("memory", "orders.checked");
            let mut headers: HashMap<String, String> = HashMap::new();
            let send = producer.send_span(&mut headers);
            let event = Envelope::builder("/c", "com.example.order.checked.v1")
                .metadata(&Metadata::extract(&headers))
                .build()?;
            bus.publish("orders.checked", event)
                .instrument(send)
                .await?;
            Ok(())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(ObserveServerLayer::new())
            .add_service(GrpcHealth::new(registry).into_server())
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_http_grpc_and_the_event_bus() {
    telemetry();
    let bus = MemoryBus::new();
    // D consumes from its own task: a consumer span continued from the event's context.
    let mut subscription = bus
        .subscribe("orders.checked", SubscribeOptions::group("d"))
        .await
        .unwrap();
    let (handled, was_handled) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let consumer =
            MessagingInstruments::new("memory", "orders.checked").with_consumer_group("d");
        let delivery = subscription.next().await.unwrap().unwrap();
        let mut headers: HashMap<String, String> = HashMap::new();
        delivery.envelope().metadata().inject(&mut headers);
        let process = consumer.process_span(&headers);
        process.in_scope(|| tracing::info!("D handles the event"));
        drop(process);
        delivery.ack().await.unwrap();
        handled.send(()).unwrap();
    });
    let c = spawn_publishing_c(bus.clone()).await;
    let a = start_chain(c, "/order/{n}", "/check").await;

    let response = reqwest::get(format!("http://{a}/order/9")).await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), was_handled)
        .await
        .unwrap()
        .unwrap();

    let roots: Vec<SpanData> = all_spans()
        .into_iter()
        .filter(|s| s.name == "GET /order/{n}")
        .collect();
    assert_eq!(roots.len(), 1, "one request to A: {roots:#?}");
    let trace_id = roots[0].span_context.trace_id();
    let spans = spans_of(trace_id);
    let by_name = |name: &str, kind: SpanKind| -> SpanData {
        let found: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.name == name && s.span_kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} span {name}: {spans:#?}");
        found[0].clone()
    };
    let id = |s: &SpanData| s.span_context.span_id();
    let a_server = by_name("GET /order/{n}", SpanKind::Server);
    let a_client = by_name("GET", SpanKind::Client);
    let b_server = by_name("GET /check", SpanKind::Server);
    let b_client = by_name("grpc.health.v1.Health/Check", SpanKind::Client);
    let c_server = by_name("grpc.health.v1.Health/Check", SpanKind::Server);
    let c_send = by_name("send orders.checked", SpanKind::Producer);
    let d_process = by_name("process orders.checked", SpanKind::Consumer);
    assert_eq!(
        a_server.parent_span_id,
        SpanId::INVALID,
        "A starts the trace"
    );
    assert_eq!(a_client.parent_span_id, id(&a_server));
    assert_eq!(b_server.parent_span_id, id(&a_client), "HTTP hop");
    assert_eq!(b_client.parent_span_id, id(&b_server));
    assert_eq!(c_server.parent_span_id, id(&b_client), "gRPC hop");
    assert_eq!(
        c_send.parent_span_id,
        id(&c_server),
        "C publishes inside its call"
    );
    assert_eq!(d_process.parent_span_id, id(&c_send), "event hop");
    assert!(d_process.parent_span_is_remote);
    let links: Vec<_> = d_process.links.iter().collect();
    assert_eq!(links.len(), 1, "D links to the producer");
    assert_eq!(links[0].span_context.span_id(), id(&c_send));
    assert_eq!(
        attr(&d_process, "messaging.consumer.group.name").map(|v| v.as_str().into_owned()),
        Some("d".to_owned())
    );

    // The correlation id minted by A crossed HTTP, gRPC and the bus.
    let correlation = |s: &SpanData| attr(s, "correlation_id").map(|v| v.as_str().into_owned());
    let minted = correlation(&a_server).expect("A mints a correlation id");
    assert_eq!(correlation(&d_process).as_deref(), Some(minted.as_str()));

    // D's log line carries the trace.
    let logs = String::from_utf8(telemetry().logs.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "D handles the event")
        .unwrap_or_else(|| panic!("no log line from D in:\n{logs}"));
    assert_eq!(line["trace_id"], trace_id.to_string().as_str());
    assert_eq!(line["span_id"], id(&d_process).to_string().as_str());
}

#[test]
fn inject_current_writes_the_span_into_tonic_metadata_and_reqwest_headers() {
    use archon_metrics::propagation::{self, MetadataMapCarrier};
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    telemetry();
    let span = tracing::info_span!("outgoing");
    let _entered = span.enter();
    let expected = span.context().span().span_context().clone();
    assert!(expected.is_valid());

    // tonic: request metadata.
    let mut request = tonic::Request::new(());
    propagation::inject_current(&mut MetadataMapCarrier(request.metadata_mut()));
    let back = propagation::extract(&MetadataMapCarrier(request.metadata_mut()));
    assert_eq!(back.span().span_context().trace_id(), expected.trace_id());
    assert_eq!(back.span().span_context().span_id(), expected.span_id());

    // reqwest: an http::HeaderMap handed to `RequestBuilder::headers`.
    let mut headers = http::HeaderMap::new();
    propagation::inject_current(&mut headers);
    let built = reqwest::Client::new()
        .get("http://127.0.0.1:9/")
        .headers(headers)
        .build()
        .unwrap();
    let back = propagation::extract(built.headers());
    assert_eq!(back.span().span_context().span_id(), expected.span_id());
}

#[test]
fn saga_steps_are_children_of_the_saga_span() {
    telemetry();
    let saga = archon_metrics::policy::SagaMetrics::new("checkout-trace-test");
    let span = saga.span("saga-1");
    span.in_scope(|| {
        saga.step_span("reserve").in_scope(|| {});
        saga.step_span("charge").in_scope(|| {});
    });
    span.record("archon.saga.outcome", "completed");
    drop(span);
    let spans: Vec<SpanData> = all_spans()
        .into_iter()
        .filter(|s| s.name.starts_with("saga checkout-trace-test"))
        .collect();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let root = spans
        .iter()
        .find(|s| s.name == "saga checkout-trace-test")
        .unwrap();
    assert_eq!(
        attr(root, "archon.saga.outcome").map(|v| v.as_str().into_owned()),
        Some("completed".to_owned())
    );
    for step in ["reserve", "charge"] {
        let s = spans
            .iter()
            .find(|s| s.name == format!("saga checkout-trace-test {step}"))
            .unwrap();
        assert_eq!(s.parent_span_id, root.span_context.span_id());
        assert_eq!(s.span_context.trace_id(), root.span_context.trace_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_traceparent_starts_a_new_trace() {
    telemetry();
    let app = axum::Router::new()
        .route("/t/{case}", axum::routing::get(|| async { "ok" }))
        .layer(ObserveServerLayer::new());
    let addr = support::spawn_axum(app).await;
    let garbage = [
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra-in-v00",
        "\u{1F600}\u{1F600}\u{1F600}",
    ];
    let client = reqwest::Client::new();
    for (case, value) in garbage.iter().enumerate() {
        let response = client
            .get(format!("http://{addr}/t/{case}"))
            .header("traceparent", *value)
            .header("tracestate", "a=b,,,=")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "case {case}: {value:?}");
    }
    // Raw bytes that are not even UTF-8, straight into the layer.
    let svc = tower::Layer::layer(
        &ObserveServerLayer::new(),
        tower::service_fn(|_req: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }),
    );
    let mut request = http::Request::new(String::new());
    request.headers_mut().insert(
        "traceparent",
        http::HeaderValue::from_bytes(b"00-\xff\xfe").unwrap(),
    );
    assert_eq!(svc.oneshot(request).await.unwrap().status(), 200);

    let spans: Vec<SpanData> = all_spans()
        .into_iter()
        .filter(|s| s.name == "GET /t/{case}")
        .collect();
    assert_eq!(spans.len(), garbage.len());
    let forged = "4bf92f3577b34da6a3ce929d0e0e4736";
    for span in &spans {
        assert!(span.span_context.is_valid());
        assert_eq!(
            span.parent_span_id,
            SpanId::INVALID,
            "a new root: {span:#?}"
        );
        assert_ne!(span.span_context.trace_id().to_string(), forged);
    }
    let mut trace_ids: Vec<TraceId> = spans.iter().map(|s| s.span_context.trace_id()).collect();
    trace_ids.sort_by_key(|t| t.to_string());
    trace_ids.dedup();
    assert_eq!(
        trace_ids.len(),
        garbage.len(),
        "each request its own new trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_traceparent_is_continued() {
    telemetry();
    let app = axum::Router::new()
        .route("/continue", axum::routing::get(|| async { "ok" }))
        .layer(ObserveServerLayer::new());
    let addr = support::spawn_axum(app).await;
    let parent = archon_core::context::TraceParent::new_root();
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/continue"))
        .header("traceparent", parent.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spans = spans_of(TraceId::from(parent.trace_id_u128()));
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(
        spans[0].parent_span_id,
        SpanId::from(parent.span_id_u64()),
        "the caller's span is the parent"
    );
}

#[test]
fn shutdown_flushes_queued_spans() {
    /// Keeps what it was given, even after shutdown (the SDK's in-memory exporter clears).
    #[derive(Debug, Clone, Default)]
    struct Keep(Arc<Mutex<Vec<SpanData>>>);
    impl opentelemetry_sdk::trace::SpanExporter for Keep {
        async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }
    let exporter = Keep::default();
    let tracing = Tracing::with_exporter(
        &archon_core::ServiceInfo::new("svc", "1.0.0"),
        exporter.clone(),
    );
    let subscriber = tracing_subscriber::registry().with(tracing.layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("unflushed work").in_scope(|| {});
    });
    // Nothing forced the batch out yet; shutdown must.
    tracing.shutdown().unwrap();
    let spans = exporter.0.lock().unwrap().clone();
    assert!(
        spans.iter().any(|s| s.name == "unflushed work"),
        "{spans:#?}"
    );
}
