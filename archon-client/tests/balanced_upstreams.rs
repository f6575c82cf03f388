#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Balanced HTTP upstreams and gRPC channels from configuration, against two real servers on
//! 127.0.0.1:0, one of them failing: its breaker opens, it leaves the set, traffic goes to the
//! healthy one, and it comes back after recovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::balance::{BalanceConfig, DnsConfig};
use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitState};
use archon_client::{ErrorKind, ResiliencePolicy};

fn ejection() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .count_window(4)
        .minimum_calls(4)
        .wait_in_open(Duration::from_millis(800))
        .permitted_calls_in_half_open(1)
}

#[cfg(feature = "http")]
mod http_upstreams {
    use super::*;
    use archon_client::http::{HttpClient, HttpClientConfig, UpstreamConfig};
    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;

    struct Server {
        status: AtomicU16,
        hang: AtomicBool,
        /// Milliseconds each answer takes.
        delay_ms: AtomicU64,
        hits: AtomicUsize,
    }

    async fn start(status: u16) -> (String, Arc<Server>) {
        let state = Arc::new(Server {
            status: AtomicU16::new(status),
            hang: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                "/api/items",
                get(|State(s): State<Arc<Server>>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    if s.hang.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let delay = s.delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap()
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr.to_string(), state)
    }

    fn client(toml_text: &str) -> HttpClient {
        let cfg: HttpClientConfig = toml::from_str(toml_text).unwrap();
        HttpClient::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn failing_endpoint_is_ejected_from_the_upstream_and_comes_back_after_recovery() {
        let (good_addr, good) = start(200).await;
        let (bad_addr, bad) = start(503).await;
        // The base URL's host is never called: requests go to the endpoints.
        let client = client(&format!(
            r#"
            [upstreams.inventory]
            base_url = "http://inventory.invalid/api"
            [upstreams.inventory.balance]
            endpoints = ["{good_addr}", "{bad_addr}"]
            ejection = {{ window_size = 4, minimum_calls = 4, wait_in_open = "800ms", permitted_calls_in_half_open = 1 }}
            "#
        ));
        let breakers = client.endpoint_breakers("inventory");
        assert_eq!(breakers.len(), 2);
        let bad_breaker = breakers
            .iter()
            .find(|(ep, _)| *ep == bad_addr)
            .unwrap()
            .1
            .clone();

        let mut failures = 0;
        for _ in 0..100 {
            let resp = client.get("inventory", "/items").send_raw().await.unwrap();
            if resp.status() != 200 {
                failures += 1;
            }
        }
        // Exactly the 4 calls that filled the bad endpoint's window reached it.
        assert_eq!(bad.hits.load(Ordering::SeqCst), 4);
        assert_eq!(failures, 4);
        assert_eq!(good.hits.load(Ordering::SeqCst), 96);
        assert_eq!(bad_breaker.state(), CircuitState::Open);

        // It recovers; after the wait a half-open probe succeeds and it takes traffic again.
        bad.status.store(200, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(900)).await;
        for _ in 0..100 {
            client.get("inventory", "/items").send().await.unwrap();
        }
        assert_eq!(bad_breaker.state(), CircuitState::Closed);
        let back = bad.hits.load(Ordering::SeqCst) - 4;
        assert!(
            back >= 20,
            "the recovered endpoint took only {back} of 100 calls"
        );
        assert_eq!(good.hits.load(Ordering::SeqCst) + back, 196);
    }

    #[tokio::test]
    async fn hanging_endpoint_times_out_per_attempt_and_is_ejected() {
        let (good_addr, good) = start(200).await;
        let (slow_addr, slow) = start(200).await;
        slow.hang.store(true, Ordering::SeqCst);
        let up = UpstreamConfig::new(
            "http://inventory.invalid/api",
            ResiliencePolicy::default().timeout(Duration::from_millis(100)),
        )
        .balance(BalanceConfig::endpoints([&good_addr, &slow_addr]).ejection(ejection()));
        let client =
            HttpClient::new(&HttpClientConfig::default().upstream("inventory", up)).unwrap();
        let mut timeouts = 0;
        for _ in 0..40 {
            match client.get("inventory", "/items").send().await {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
                    timeouts += 1;
                }
            }
        }
        // The endpoint's breaker saw the timeouts (the timeout is below the balancer).
        assert_eq!(timeouts, 4);
        assert_eq!(slow.hits.load(Ordering::SeqCst), 4);
        assert_eq!(good.hits.load(Ordering::SeqCst), 36);
    }

    #[tokio::test]
    async fn every_endpoint_ejected_fails_fast_with_circuit_open() {
        let (a_addr, a) = start(503).await;
        let (b_addr, b) = start(503).await;
        let up = UpstreamConfig::new("http://inventory.invalid", ResiliencePolicy::default())
            .balance(BalanceConfig::endpoints([&a_addr, &b_addr]).ejection(ejection()));
        let client =
            HttpClient::new(&HttpClientConfig::default().upstream("inventory", up)).unwrap();
        for _ in 0..8 {
            let err = client
                .get("inventory", "/api/items")
                .send()
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Status(503));
        }
        let started = std::time::Instant::now();
        let err = client
            .get("inventory", "/api/items")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
        assert!(err.circuit_open().unwrap().remaining_wait().is_some());
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(
            a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
            8
        );
    }

    /// Opens `breaker` by hand (its window of 4 fails), waits `ejection()`'s wait, and takes
    /// its only half-open probe slot: a probe in flight.
    async fn half_open_with_probe_out(
        breaker: &archon_client::circuit_breaker::CircuitBreakerHandle,
    ) -> archon_client::circuit_breaker::Permit {
        for _ in 0..4 {
            breaker
                .try_acquire()
                .unwrap()
                .record(archon_client::Outcome::Failure);
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(850)).await;
        let probe = breaker.try_acquire().unwrap();
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(!breaker.admits_now());
        probe
    }

    #[tokio::test]
    async fn half_open_endpoint_with_its_probe_out_is_routed_around_then_taken_back() {
        let (a_addr, a) = start(200).await;
        let (b_addr, b) = start(200).await;
        // A is slow, so B (no calls pending) is always the less loaded of the two.
        a.delay_ms.store(150, Ordering::SeqCst);
        let up = UpstreamConfig::new("http://inventory.invalid/api", ResiliencePolicy::default())
            .balance(BalanceConfig::endpoints([&a_addr, &b_addr]).ejection(ejection()));
        let client =
            HttpClient::new(&HttpClientConfig::default().upstream("inventory", up)).unwrap();
        let b_breaker = client
            .endpoint_breakers("inventory")
            .into_iter()
            .find(|(ep, _)| *ep == b_addr)
            .unwrap()
            .1;
        let probe = half_open_with_probe_out(&b_breaker).await;

        let calls = (0..40).map(|_| client.get("inventory", "/items").send());
        let results = futures::future::join_all(calls).await;
        let rejected = results.iter().filter(|r| r.is_err()).count();
        // B would reject every call (its only probe slot is taken): p2c must not pick it.
        assert_eq!(rejected, 0, "{:?}", results.iter().find(|r| r.is_err()));
        assert_eq!(b.hits.load(Ordering::SeqCst), 0);
        assert_eq!(a.hits.load(Ordering::SeqCst), 40);

        // The probe succeeds: B closes and, being the faster one, takes calls again at once.
        probe.record(archon_client::Outcome::Success);
        assert_eq!(b_breaker.state(), CircuitState::Closed);
        let calls = (0..40).map(|_| client.get("inventory", "/items").send());
        for result in futures::future::join_all(calls).await {
            result.unwrap();
        }
        let back = b.hits.load(Ordering::SeqCst);
        assert!(back >= 10, "B took only {back} of 40 calls after closing");
        assert_eq!(a.hits.load(Ordering::SeqCst) + back, 80);
    }

    #[tokio::test]
    async fn no_endpoint_admitting_a_call_fails_fast() {
        let (a_addr, a) = start(200).await;
        let (b_addr, b) = start(200).await;
        let up = UpstreamConfig::new("http://inventory.invalid/api", ResiliencePolicy::default())
            .balance(BalanceConfig::endpoints([&a_addr, &b_addr]).ejection(ejection()));
        let client =
            HttpClient::new(&HttpClientConfig::default().upstream("inventory", up)).unwrap();
        let breakers = client.endpoint_breakers("inventory");
        // A is forced open; B is half-open with its only probe out.
        breakers
            .iter()
            .find(|(ep, _)| *ep == a_addr)
            .unwrap()
            .1
            .force_open();
        let b_breaker = &breakers.iter().find(|(ep, _)| *ep == b_addr).unwrap().1;
        let probe = half_open_with_probe_out(b_breaker).await;

        let started = std::time::Instant::now();
        // Bounded: a balancer that only waits for B's probe would hang here.
        let err = tokio::time::timeout(
            Duration::from_secs(2),
            client.get("inventory", "/items").send(),
        )
        .await
        .expect("the call waited instead of failing fast")
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
        assert_eq!(
            err.circuit_open().unwrap().state(),
            CircuitState::HalfOpen,
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(
            a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
            0
        );
        drop(probe);
    }

    #[tokio::test]
    async fn dns_balanced_upstream_reaches_the_resolved_server() {
        let (addr, server) = start(200).await;
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        let up = UpstreamConfig::new("http://inventory.invalid/api", ResiliencePolicy::default())
            .balance(BalanceConfig::dns(
                DnsConfig::new("127.0.0.1", port).every(Duration::from_secs(60)),
            ));
        let client =
            HttpClient::new(&HttpClientConfig::default().upstream("inventory", up)).unwrap();
        for _ in 0..5 {
            client.get("inventory", "/items").send().await.unwrap();
        }
        assert_eq!(server.hits.load(Ordering::SeqCst), 5);
        let endpoints = client.endpoint_breakers("inventory");
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].0, addr);
    }

    #[tokio::test]
    async fn dns_name_without_addresses_fails_with_no_endpoints() {
        let up =
            UpstreamConfig::new("http://inventory.invalid", ResiliencePolicy::default()).balance(
                BalanceConfig::dns(DnsConfig::new("does-not-exist.invalid", 80)),
            );
        let client =
            HttpClient::new(&HttpClientConfig::default().upstream("inventory", up)).unwrap();
        let err = client.get("inventory", "/").send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoEndpoints, "{err}");
    }

    #[test]
    fn invalid_balance_is_a_config_error() {
        for bad in [
            "[upstreams.x]\nbase_url = 'http://x'\n[upstreams.x.balance]\n",
            "[upstreams.x]\nbase_url = 'http://x'\n[upstreams.x.balance]\nendpoints = ['no-port']\n",
            "[upstreams.x]\nbase_url = 'http://x'\n[upstreams.x.balance]\nendpoints = ['a:1']\ndns = { host = 'a', port = 1 }\n",
        ] {
            let cfg: HttpClientConfig = toml::from_str(bad).unwrap();
            let err = HttpClient::new(&cfg).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }
}

#[cfg(feature = "grpc")]
mod grpc_channels {
    use super::*;
    use archon_client::grpc::{GrpcConfig, channel};
    use tonic::{Request, Response, Status};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::health_server::{Health, HealthServer};
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    #[derive(Default)]
    struct Server {
        failing: AtomicBool,
        calls: AtomicUsize,
    }

    #[derive(Clone)]
    struct Svc(Arc<Server>);

    #[tonic::async_trait]
    impl Health for Svc {
        async fn check(
            &self,
            _req: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            if self.0.failing.load(Ordering::SeqCst) {
                return Err(Status::unavailable("down"));
            }
            Ok(Response::new(HealthCheckResponse { status: 1 }))
        }

        type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

        async fn watch(
            &self,
            _req: Request<HealthCheckRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            Err(Status::unimplemented("watch"))
        }
    }

    async fn start(failing: bool) -> (String, Arc<Server>) {
        let state = Arc::new(Server {
            failing: AtomicBool::new(failing),
            calls: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = HealthServer::new(Svc(state.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (addr.to_string(), state)
    }

    #[tokio::test]
    async fn unavailable_endpoint_is_ejected_from_the_channel_and_comes_back_after_recovery() {
        let (good_addr, good) = start(false).await;
        let (bad_addr, bad) = start(true).await;
        let cfg: GrpcConfig = toml::from_str(&format!(
            r#"
            endpoint = "http://inventory.invalid"
            [policy]
            timeout = "2s"
            [balance]
            endpoints = ["{good_addr}", "{bad_addr}"]
            ejection = {{ window_size = 4, minimum_calls = 4, wait_in_open = "800ms", permitted_calls_in_half_open = 1 }}
            "#
        ))
        .unwrap();
        let mut client = HealthClient::new(channel(&cfg).await.unwrap());
        let mut failures = 0;
        for _ in 0..40 {
            if let Err(status) = client.check(HealthCheckRequest::default()).await {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                failures += 1;
            }
        }
        assert_eq!(failures, 4);
        assert_eq!(bad.calls.load(Ordering::SeqCst), 4);
        assert_eq!(good.calls.load(Ordering::SeqCst), 36);

        bad.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(900)).await;
        for _ in 0..60 {
            client.check(HealthCheckRequest::default()).await.unwrap();
        }
        let back = bad.calls.load(Ordering::SeqCst) - 4;
        assert!(
            back >= 10,
            "the recovered endpoint took only {back} of 60 calls"
        );
        assert_eq!(good.calls.load(Ordering::SeqCst) + back, 96);
    }
}
