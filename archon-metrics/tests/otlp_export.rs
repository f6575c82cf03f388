//! `Tracing::from_env` exports over OTLP as the standard `OTEL_*` variables say, to a collector
//! stand-in on 127.0.0.1:0, and `shutdown` flushes. Each case runs in a child process (this same
//! test binary) so that it gets its own environment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "otlp")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use archon_metrics::otel::Tracing;
use bytes::Bytes;
use http_body_util::StreamBody;
use tracing_subscriber::layer::SubscriberExt as _;

const CHILD: &str = "ARCHON_OTLP_CHILD";

type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A stand-in collector: keeps every request body, answers OTLP/HTTP with an empty protobuf and
/// OTLP/gRPC with an empty message and `grpc-status: 0`.
async fn collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let keep = received.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let keep = keep.clone();
        async move {
            let path = request.uri().path().to_owned();
            let grpc = request
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            keep.lock().unwrap().push((path, body));
            if grpc {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let frames = vec![
                    Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                    Ok(http_body::Frame::trailers(trailers)),
                ];
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(axum::body::Body::new(StreamBody::new(
                        futures::stream::iter(frames),
                    )))
                    .unwrap()
            } else {
                http::Response::builder()
                    .header("content-type", "application/x-protobuf")
                    .body(axum::body::Body::empty())
                    .unwrap()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

/// In the child: build from the environment, make one span, shut down (which must flush).
fn child_exports() {
    let service = archon_core::ServiceInfo::new("ignored-name", "1.0.0");
    let run = || {
        let tracing = Tracing::from_env(&service).unwrap();
        let subscriber = tracing_subscriber::registry().with(tracing.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("exported work").in_scope(|| {});
        });
        tracing.shutdown().unwrap();
    };
    if std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() == Ok("grpc") {
        // The tonic exporter needs a Tokio runtime to be built in and to run on.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        run();
    } else {
        run();
    }
}

fn export_with(protocol: &str, test_name: &str) -> Vec<(String, Bytes)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (addr, received) = rt.block_on(collector());
    let endpoint = if protocol == "grpc" {
        format!("http://{addr}")
    } else {
        format!("http://{addr}/v1/traces")
    };
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", "otlp-child")
        .env_remove("OTEL_TRACES_EXPORTER")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let received = received.lock().unwrap().clone();
    drop(rt);
    received
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn otlp_http_protobuf_export_reaches_the_collector() {
    if std::env::var_os(CHILD).is_some() {
        return child_exports();
    }
    let received = export_with(
        "http/protobuf",
        "otlp_http_protobuf_export_reaches_the_collector",
    );
    assert!(!received.is_empty(), "nothing reached the collector");
    let (path, body) = &received[0];
    assert_eq!(path, "/v1/traces");
    assert!(contains(body, b"exported work"), "span name in the export");
    assert!(
        contains(body, b"otlp-child"),
        "OTEL_SERVICE_NAME wins for service.name"
    );
}

#[test]
fn otlp_grpc_export_reaches_the_collector() {
    if std::env::var_os(CHILD).is_some() {
        return child_exports();
    }
    let received = export_with("grpc", "otlp_grpc_export_reaches_the_collector");
    assert!(!received.is_empty(), "nothing reached the collector");
    let (path, body) = &received[0];
    assert_eq!(
        path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert!(contains(body, b"exported work"), "span name in the export");
}

#[test]
fn unknown_traces_exporter_is_a_config_error() {
    if std::env::var_os(CHILD).is_some() {
        // Child of this case: only OTEL_TRACES_EXPORTER is set.
        let err = Tracing::from_env(&archon_core::ServiceInfo::new("svc", "1.0.0")).unwrap_err();
        assert!(
            matches!(
                err,
                archon_metrics::Error::Config {
                    key: "OTEL_TRACES_EXPORTER",
                    ..
                }
            ),
            "{err}"
        );
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unknown_traces_exporter_is_a_config_error",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("OTEL_TRACES_EXPORTER", "zipkin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the case: {stdout}"
    );
}

#[test]
fn grpc_export_outside_a_runtime_is_an_error_not_a_panic() {
    if std::env::var_os(CHILD).is_some() {
        let err = Tracing::from_env(&archon_core::ServiceInfo::new("svc", "1.0.0")).unwrap_err();
        assert!(matches!(err, archon_metrics::Error::Exporter(_)), "{err}");
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "grpc_export_outside_a_runtime_is_an_error_not_a_panic",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("OTEL_TRACES_EXPORTER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the case: {stdout}"
    );
}
