//! The example service over real sockets: HTTP probes, gRPC health (Check and Watch), shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use archon_core::health::CheckKind;
use hello_service::{Config, load_config, start};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn test_config() -> Config {
    let mut config = load_config(None).unwrap();
    config.server.http = "127.0.0.1:0".parse().unwrap();
    config.server.grpc = "127.0.0.1:0".parse().unwrap();
    config.health.cache_ttl = Duration::from_millis(20);
    config.shutdown.drain_timeout = Duration::from_secs(5);
    config
}

fn serving(status: i32) -> ServingStatus {
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_a_failing_check_over_http_and_grpc() {
    let app = start(&test_config()).await.unwrap();
    let (http, grpc) = (app.http_addr, app.grpc_addr);
    let dependency_up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&dependency_up);
    app.health
        .register("database", CheckKind::Readiness, move || {
            let up = flag.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".into())
                }
            }
        });
    let shutdown = app.shutdown.clone();
    let server = tokio::spawn(app.run());

    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{http}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "up");
    assert_eq!(body["checks"][0]["name"], "database");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    let status = health.check(check("")).await.unwrap().into_inner().status;
    assert_eq!(serving(status), ServingStatus::Serving);
    let status = health
        .check(check("database"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(serving(status), ServingStatus::Serving);
    let unknown = health.check(check("no-such-service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(serving(first.status), ServingStatus::Serving);

    // The dependency fails: readiness 503 naming the check, gRPC NOT_SERVING, Watch pushes it.
    dependency_up.store(false, Ordering::SeqCst);
    let changed = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(
        serving(changed.unwrap().unwrap().status),
        ServingStatus::NotServing
    );
    let not_ready = client
        .get(format!("http://{http}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: serde_json::Value = not_ready.json().await.unwrap();
    assert_eq!(body["status"], "down");
    assert_eq!(body["checks"][0]["name"], "database");
    assert_eq!(body["checks"][0]["error"], "connection refused");
    let status = health
        .check(check("database"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(serving(status), ServingStatus::NotServing);
    // Liveness does not depend on readiness checks.
    let live = client
        .get(format!("http://{http}/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    // It recovers, and Watch says so.
    dependency_up.store(true, Ordering::SeqCst);
    let changed = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(
        serving(changed.unwrap().unwrap().status),
        ServingStatus::Serving
    );

    // Shutdown: Watch sees NOT_SERVING before the servers go away; the app exits cleanly.
    shutdown.trigger();
    let changed = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(
        serving(changed.unwrap().unwrap().status),
        ServingStatus::NotServing
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert!(
        ended.is_none(),
        "Watch ends after reporting draining, releasing the server"
    );
    let report = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.cut, 0);
    assert!(
        reqwest::get(format!("http://{http}/livez")).await.is_err(),
        "HTTP listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_during_shutdown() {
    let mut config = test_config();
    config.shutdown.readiness_delay = Duration::from_millis(200);
    let app = start(&config).await.unwrap();
    let http = app.http_addr;
    // A readiness check slow enough that the request is in flight when shutdown starts.
    app.health.register("slow", CheckKind::Liveness, || async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    });
    let shutdown = app.shutdown.clone();
    let server = tokio::spawn(app.run());
    let request = tokio::spawn(reqwest::get(format!("http://{http}/livez")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.trigger();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the in-flight request completed");
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.cut, 0);
}

#[tokio::test]
async fn a_taken_port_is_a_bind_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config();
    config.server.http = taken.local_addr().unwrap();
    match start(&config).await {
        Err(archon_core::Error::Bind { addr, .. }) => assert_eq!(addr, config.server.http),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[test]
fn embedded_defaults_load() {
    let config = load_config(None).unwrap();
    assert_eq!(config.service.name, "hello-service");
    assert_eq!(config.server.http.port(), 8080);
}
