//! The RED layers against scripted inner services, each under its own local Prometheus
//! recorder: gRPC status from trailers, cardinality guards, cancellation, transport errors, and
//! the `names` table against what the exporter really renders.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::future::Future;

use archon_metrics::names::{self, InstrumentKind};
use archon_metrics::{
    MetricsConfig, MetricsHandle, ObserveClientLayer, ObserveServerLayer, build_recorder,
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use tower::{Layer as _, ServiceExt as _};

/// Runs `f` to completion with a fresh local recorder and returns the exposition.
fn recorded<F: Future>(f: impl FnOnce() -> F) -> String {
    let config = MetricsConfig::new(&archon_core::ServiceInfo::new("svc", "1.0.0"));
    let (recorder, handle) = build_recorder(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        MetricsHandle::describe_all();
        rt.block_on(f());
    });
    handle.render()
}

fn grpc_request(path: &str) -> http::Request<String> {
    http::Request::builder()
        .uri(path)
        .header("content-type", "application/grpc")
        .body(String::new())
        .unwrap()
}

type Frames = StreamBody<
    futures::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
>;

/// A gRPC response whose status comes in the trailers, after one data frame.
fn grpc_response_with_trailers(code: u8) -> http::Response<Frames> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(u16::from(code)));
    let frames = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    http::Response::new(StreamBody::new(futures::stream::iter(frames)))
}

#[test]
fn grpc_status_is_read_from_the_trailers() {
    let text = recorded(|| async {
        let svc = ObserveServerLayer::new().layer(tower::service_fn(|_req| async {
            Ok::<_, Infallible>(grpc_response_with_trailers(14))
        }));
        let response = svc
            .oneshot(grpc_request("/shop.Orders/Place"))
            .await
            .unwrap();
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_some());
    });
    assert!(
        text.contains(r#"rpc_method="shop.Orders/Place",rpc_response_status_code="UNAVAILABLE",error_type="UNAVAILABLE""#),
        "{text}"
    );
}

#[test]
fn unimplemented_grpc_methods_do_not_become_series() {
    let text = recorded(|| async {
        for path in ["/made.Up/One", "/made.Up/Two", "/x/y"] {
            let svc = ObserveServerLayer::new().layer(tower::service_fn(|_req| async {
                // Trailers-only response, as tonic sends for an unknown method.
                let response = http::Response::builder()
                    .header("grpc-status", "12")
                    .body(String::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            }));
            svc.oneshot(grpc_request(path)).await.unwrap();
        }
    });
    assert!(!text.contains("made.Up"), "{text}");
    assert!(
        text.contains(r#"rpc_method="_OTHER",rpc_response_status_code="UNIMPLEMENTED""#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"rpc_server_call_duration_seconds_count{service_name="svc",service_version="1.0.0""#
        ),
        "{text}"
    );
    let count_line = text
        .lines()
        .find(|l| l.starts_with("rpc_server_call_duration_seconds_count"))
        .unwrap();
    assert!(count_line.ends_with(" 3"), "{count_line}");
}

#[test]
fn a_grpc_call_dropped_before_its_status_is_cancelled() {
    let text = recorded(|| async {
        let svc = ObserveServerLayer::new().layer(tower::service_fn(|_req| async {
            Ok::<_, Infallible>(grpc_response_with_trailers(0))
        }));
        let response = svc
            .oneshot(grpc_request("/shop.Orders/Watch"))
            .await
            .unwrap();
        drop(response); // the client went away mid-stream
    });
    assert!(
        text.contains(r#"rpc_method="shop.Orders/Watch",rpc_response_status_code="CANCELLED""#),
        "{text}"
    );
}

#[test]
fn client_transport_errors_are_other() {
    let text = recorded(|| async {
        let svc = ObserveClientLayer::new()
            .with_server("db.internal", 5432)
            .layer(tower::service_fn(|_req: http::Request<String>| async {
                Err::<http::Response<String>, _>(std::io::Error::other("connection refused"))
            }));
        let request = http::Request::post("http://ignored/")
            .body(String::new())
            .unwrap();
        assert!(svc.oneshot(request).await.is_err());
    });
    assert!(
        text.contains(r#"http_request_method="POST",url_scheme="http",server_address="db.internal",server_port="5432",error_type="_OTHER""#),
        "{text}"
    );
}

#[test]
fn client_takes_the_peer_from_the_uri() {
    let text = recorded(|| async {
        let svc = ObserveClientLayer::new().layer(tower::service_fn(
            |_req: http::Request<String>| async {
                let response = http::Response::builder()
                    .status(503)
                    .body(String::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            },
        ));
        let request = http::Request::get("https://[::1]/x")
            .body(String::new())
            .unwrap();
        svc.oneshot(request).await.unwrap();
    });
    assert!(
        text.contains(r#"http_request_method="GET",url_scheme="https",http_response_status_code="503",server_address="::1",server_port="443",error_type="503""#),
        "{text}"
    );
}

#[test]
fn metrics_can_be_turned_off() {
    let text = recorded(|| async {
        let svc = ObserveServerLayer::new()
            .metrics(false)
            .layer(tower::service_fn(|_req: http::Request<String>| async {
                Ok::<_, Infallible>(http::Response::new(String::new()))
            }));
        svc.oneshot(http::Request::new(String::new()))
            .await
            .unwrap();
    });
    assert!(
        !text.contains("http_server_request_duration_seconds_count"),
        "{text}"
    );
}

#[test]
fn every_name_renders_as_documented() {
    let text = recorded(|| async {
        for i in names::ALL {
            match i.kind {
                InstrumentKind::Counter => metrics::counter!(i.name).increment(1),
                InstrumentKind::Gauge => metrics::gauge!(i.name).set(1.0),
                InstrumentKind::Histogram => metrics::histogram!(i.name).record(0.1),
            }
        }
    });
    for i in names::ALL {
        let kind = match i.kind {
            InstrumentKind::Counter => "counter",
            InstrumentKind::Gauge => "gauge",
            InstrumentKind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {} {kind}\n", i.prometheus)),
            "{} should render as {} ({kind}):\n{text}",
            i.name,
            i.prometheus
        );
        assert!(
            text.contains(&format!("# HELP {} {}\n", i.prometheus, i.description)),
            "help for {}",
            i.name
        );
    }
    for i in names::ALL {
        for key in i.attributes {
            let label = names::prometheus_label(key);
            assert!(
                label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{label}"
            );
        }
    }
}

#[test]
fn invalid_buckets_and_labels_are_config_errors() {
    let service = archon_core::ServiceInfo::new("svc", "1.0.0");
    for buckets in [&[][..], &[0.5, 0.1][..], &[0.1, f64::NAN][..]] {
        let err = build_recorder(&MetricsConfig::new(&service).with_buckets(buckets)).unwrap_err();
        assert!(
            matches!(
                err,
                archon_metrics::Error::Config {
                    key: "metrics.buckets",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err =
        build_recorder(&MetricsConfig::new(&service).with_label("bad-label", "x")).unwrap_err();
    assert!(
        matches!(
            err,
            archon_metrics::Error::Config {
                key: "metrics.labels",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn policy_metrics_render_with_their_labels() {
    use archon_metrics::policy::*;
    let text = recorded(|| async {
        let breaker = CircuitBreakerMetrics::new("payments");
        breaker.transition(BreakerState::Closed, BreakerState::Open);
        breaker.rejected();
        let bulkhead = BulkheadMetrics::new("db", 8);
        bulkhead.acquired();
        bulkhead.acquired();
        bulkhead.released();
        let retry = RetryMetrics::new("orders-api");
        retry.retried();
        retry.budget_rejected();
        let saga = SagaMetrics::new("checkout");
        saga.step("reserve", SagaOutcome::Completed, 0.01);
        saga.finished(SagaOutcome::Compensated, 0.3);
        OutboxMetrics::new("orders").set(4, 1.5);
    });
    for line in [
        r#"archon_circuit_breaker_state{service_name="svc",service_version="1.0.0",archon_policy_name="payments",archon_circuit_breaker_state="open"} 1"#,
        r#"archon_circuit_breaker_state{service_name="svc",service_version="1.0.0",archon_policy_name="payments",archon_circuit_breaker_state="closed"} 0"#,
        r#"archon_circuit_breaker_transitions_total{service_name="svc",service_version="1.0.0",archon_policy_name="payments",archon_circuit_breaker_from_state="closed",archon_circuit_breaker_to_state="open"} 1"#,
        r#"archon_circuit_breaker_rejected_calls_total{service_name="svc",service_version="1.0.0",archon_policy_name="payments"} 1"#,
        r#"archon_bulkhead_permits_in_use{service_name="svc",service_version="1.0.0",archon_policy_name="db"} 1"#,
        r#"archon_bulkhead_permits_limit{service_name="svc",service_version="1.0.0",archon_policy_name="db"} 8"#,
        r#"archon_retry_attempts_total{service_name="svc",service_version="1.0.0",archon_policy_name="orders-api",archon_retry_outcome="retried"} 1"#,
        r#"archon_retry_budget_rejections_total{service_name="svc",service_version="1.0.0",archon_policy_name="orders-api"} 1"#,
        r#"archon_saga_executions_total{service_name="svc",service_version="1.0.0",archon_saga_name="checkout",archon_saga_outcome="compensated"} 1"#,
        r#"archon_saga_step_duration_seconds_count{service_name="svc",service_version="1.0.0",archon_saga_name="checkout",archon_saga_step_name="reserve",archon_saga_outcome="completed"} 1"#,
        r#"archon_outbox_lag_seconds{service_name="svc",service_version="1.0.0",archon_policy_name="orders"} 1.5"#,
        r#"archon_outbox_pending_messages{service_name="svc",service_version="1.0.0",archon_policy_name="orders"} 4"#,
    ] {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap();
        let labels = labels.trim_end_matches('}');
        let found = text.lines().any(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.ends_with(&format!(" {value}"))
                && labels
                    .split(',')
                    .filter(|kv| !kv.starts_with("service_"))
                    .all(|kv| l.contains(kv))
        });
        assert!(found, "missing {line} in:\n{text}");
    }
}
