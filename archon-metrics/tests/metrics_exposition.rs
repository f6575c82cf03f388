//! `/metrics`, scraped over real HTTP after real HTTP and gRPC traffic, parsed by an independent
//! parser (and `promtool check metrics` when installed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;

use archon_metrics::messaging::MessagingInstruments;
use archon_metrics::names::{self, value::messaging_system};
use archon_metrics::{MetricsConfig, ObserveClientLayer, ObserveServerLayer};
use prometheus_parse::{Sample, Scrape, Value};
use tower::{ServiceBuilder, ServiceExt as _};

const BUCKETS: [f64; 5] = [0.005, 0.05, 0.5, 2.5, 10.0];

fn label_keys(sample: &Sample) -> BTreeSet<&str> {
    sample.labels.keys().map(String::as_str).collect()
}

fn keys(expected: &[&'static str]) -> BTreeSet<&'static str> {
    let mut set: BTreeSet<&str> = expected.iter().copied().collect();
    set.extend(["service_name", "service_version", "service_instance_id"]);
    set
}

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

fn one<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    let found = find(scrape, metric, labels);
    assert_eq!(
        found.len(),
        1,
        "expected one {metric} series with {labels:?}, got {found:#?}"
    );
    found[0]
}

/// The value of the one series of `metric` whose line carries every `key="value"` pair.
fn series_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one {metric} series with {labels:?}: {lines:#?}"
    );
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

fn histogram_count(sample: &Sample) -> (Vec<f64>, f64) {
    let Value::Histogram(counts) = &sample.value else {
        panic!("{} is not a histogram: {:?}", sample.metric, sample.value);
    };
    let bounds = counts.iter().map(|c| c.less_than).collect();
    let total = counts.last().map(|c| c.count).unwrap_or_default();
    (bounds, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_follow_the_conventions() {
    let service = archon_core::ServiceInfo::new("orders", "1.2.3").with_instance_id("orders-0");
    let metrics = archon_metrics::install(
        &MetricsConfig::new(&service)
            .with_buckets(&BUCKETS)
            .with_label("region", "eu-test"),
    )
    .unwrap();

    // A real HTTP server behind the server layer, with /metrics beside it.
    let app = axum::Router::new()
        .route("/users/{id}", axum::routing::any(|| async { "user" }))
        .route(
            "/boom",
            axum::routing::get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .merge(metrics.router())
        // Last, so that it also sees requests no route matched.
        .layer(ObserveServerLayer::new());
    let http_addr = support::spawn_axum(app).await;

    // HTTP traffic through the client layer.
    let client = ServiceBuilder::new()
        .layer(ObserveClientLayer::new())
        .service(support::http_client());
    for (method, path) in [
        ("GET", "/users/1"),
        ("GET", "/users/2"),
        ("PURGE", "/users/3"),
        ("GET", "/boom"),
        ("GET", "/missing/route"),
    ] {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{http_addr}{path}"))
            .body(String::new())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert!(response.status().as_u16() >= 200);
    }

    // gRPC traffic: a real tonic server and client, both observed.
    let grpc_addr = support::spawn_grpc_health(ObserveServerLayer::new()).await;
    let channel = ServiceBuilder::new()
        .layer(ObserveClientLayer::new().with_server("127.0.0.1", grpc_addr.port()))
        .service(support::channel(grpc_addr).await);
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Messaging hooks, as archon-events will call them.
    let bus = MessagingInstruments::new(messaging_system::NATS, "orders.created")
        .with_consumer_group("billing");
    bus.record_sent(2);
    bus.record_consumed(1);
    bus.start_process().success();
    bus.start_process().failure("handler_error");

    // Scrape over real HTTP.
    let response = reqwest::get(format!("http://{http_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let text = response.text().await.unwrap();
    if std::env::var_os("DUMP_METRICS").is_some() {
        eprintln!("{text}");
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

    // promtool, when the OS package is installed.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}\n---\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!("promtool not installed: skipping `promtool check metrics`"),
    }

    // Every Archon name we recorded is exposed under its documented Prometheus name, with help.
    for instrument in [
        names::HTTP_SERVER_REQUEST_DURATION,
        names::HTTP_CLIENT_REQUEST_DURATION,
        names::RPC_SERVER_CALL_DURATION,
        names::RPC_CLIENT_CALL_DURATION,
        names::MESSAGING_CLIENT_SENT_MESSAGES,
        names::MESSAGING_CLIENT_CONSUMED_MESSAGES,
        names::MESSAGING_PROCESS_DURATION,
    ] {
        assert!(
            text.contains(&format!("# HELP {} ", instrument.prometheus)),
            "no help line for {}:\n{text}",
            instrument.prometheus
        );
        let kind = match instrument.kind {
            names::InstrumentKind::Counter => "counter",
            names::InstrumentKind::Gauge => "gauge",
            names::InstrumentKind::Histogram => "histogram",
        };
        assert!(
            text.contains(&format!("# TYPE {} {kind}", instrument.prometheus)),
            "{} is not a {kind}:\n{text}",
            instrument.prometheus
        );
    }

    // HTTP server: route templates, not raw paths; `_OTHER` for unknown methods; error.type on 5xx.
    let common = [
        ("service_name", "orders"),
        ("service_version", "1.2.3"),
        ("service_instance_id", "orders-0"),
        ("region", "eu-test"),
    ];
    let server = "http_server_request_duration_seconds";
    // prometheus-parse's sample regex stops at the first `}`, so it cannot read series whose
    // label values contain braces (`/users/{id}`); promtool above read them. Check those series
    // on the text itself, and the full label set and buckets through the parser on `/boom`.
    let users_get = series_value(
        &text,
        "http_server_request_duration_seconds_count",
        &[
            ("http_request_method", "GET"),
            ("http_route", "/users/{id}"),
            ("http_response_status_code", "200"),
        ],
    );
    assert_eq!(
        users_get, 2.0,
        "two GET /users/{{id}} requests under one route template"
    );
    let users_other = series_value(
        &text,
        "http_server_request_duration_seconds_count",
        &[
            ("http_request_method", "_OTHER"),
            ("http_route", "/users/{id}"),
        ],
    );
    assert_eq!(users_other, 1.0, "PURGE is counted as _OTHER");
    let boom = one(&scrape, server, &[("http_route", "/boom")]);
    assert_eq!(
        label_keys(boom),
        keys(&[
            "http_request_method",
            "http_route",
            "http_response_status_code",
            "error_type",
            "region"
        ])
    );
    for (k, v) in common {
        assert_eq!(boom.labels.get(k), Some(v), "common label {k}");
    }
    assert_eq!(boom.labels.get("error_type"), Some("500"));
    assert_eq!(boom.labels.get("http_response_status_code"), Some("500"));
    assert_eq!(boom.labels.get("http_request_method"), Some("GET"));
    let (bounds, count) = histogram_count(boom);
    let mut expected_bounds = BUCKETS.to_vec();
    expected_bounds.push(f64::INFINITY);
    assert_eq!(bounds, expected_bounds, "configured buckets, then +Inf");
    assert_eq!(count, 1.0);
    let missing = one(&scrape, server, &[("http_response_status_code", "404")]);
    assert_eq!(
        missing.labels.get("http_route"),
        None,
        "no route matched: no raw path either"
    );
    assert!(
        !text.contains("/missing/route"),
        "raw paths never become labels"
    );
    assert!(!text.contains("/users/1"), "raw paths never become labels");

    // HTTP client: peer address and port, scheme, error.type on 4xx/5xx.
    let client_ok = one(
        &scrape,
        "http_client_request_duration_seconds",
        &[
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
        ],
    );
    assert_eq!(
        label_keys(client_ok),
        keys(&[
            "http_request_method",
            "http_response_status_code",
            "server_address",
            "server_port",
            "url_scheme",
            "region"
        ])
    );
    assert_eq!(client_ok.labels.get("server_address"), Some("127.0.0.1"));
    assert_eq!(
        client_ok.labels.get("server_port"),
        Some(http_addr.port().to_string().as_str())
    );
    let client_404 = one(
        &scrape,
        "http_client_request_duration_seconds",
        &[("http_response_status_code", "404")],
    );
    assert_eq!(client_404.labels.get("error_type"), Some("404"));

    // gRPC server and client: fully qualified method, status code names.
    let rpc_ok = one(
        &scrape,
        "rpc_server_call_duration_seconds",
        &[
            ("rpc_method", "grpc.health.v1.Health/Check"),
            ("rpc_response_status_code", "OK"),
        ],
    );
    assert_eq!(
        label_keys(rpc_ok),
        keys(&[
            "rpc_system_name",
            "rpc_method",
            "rpc_response_status_code",
            "region"
        ])
    );
    assert_eq!(rpc_ok.labels.get("rpc_system_name"), Some("grpc"));
    let rpc_not_found = one(
        &scrape,
        "rpc_server_call_duration_seconds",
        &[("rpc_response_status_code", "NOT_FOUND")],
    );
    assert_eq!(
        rpc_not_found.labels.get("error_type"),
        None,
        "NOT_FOUND is the caller's fault"
    );
    let rpc_client = one(
        &scrape,
        "rpc_client_call_duration_seconds",
        &[
            ("rpc_method", "grpc.health.v1.Health/Check"),
            ("rpc_response_status_code", "NOT_FOUND"),
        ],
    );
    assert_eq!(rpc_client.labels.get("error_type"), Some("NOT_FOUND"));
    assert_eq!(
        rpc_client.labels.get("server_port"),
        Some(grpc_addr.port().to_string().as_str())
    );
    one(
        &scrape,
        "rpc_client_call_duration_seconds",
        &[("rpc_response_status_code", "OK")],
    );

    // Messaging.
    let sent = one(&scrape, "messaging_client_sent_messages_total", &[]);
    assert_eq!(sent.value, Value::Counter(2.0));
    assert_eq!(
        label_keys(sent),
        keys(&[
            "messaging_system",
            "messaging_destination_name",
            "messaging_operation_name",
            "region"
        ])
    );
    assert_eq!(sent.labels.get("messaging_system"), Some("nats"));
    let consumed = one(&scrape, "messaging_client_consumed_messages_total", &[]);
    assert_eq!(
        consumed.labels.get("messaging_consumer_group_name"),
        Some("billing")
    );
    let processed: HashMap<Option<&str>, f64> =
        find(&scrape, "messaging_process_duration_seconds", &[])
            .into_iter()
            .map(|s| (s.labels.get("error_type"), histogram_count(s).1))
            .collect();
    assert_eq!(processed.get(&None), Some(&1.0));
    assert_eq!(processed.get(&Some("handler_error")), Some(&1.0));
}
