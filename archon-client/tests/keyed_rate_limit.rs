#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The keyed rate limiter from a `ResiliencePolicy`: a quota per header value, path or host,
//! with a bounded number of keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::ResiliencePolicy;
use archon_client::rate_limit::{KeyedRateLimitLayer, RateLimitConfig, RateLimited};
use archon_core::BoxError;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn request(tenant: Option<&str>, path: &str) -> http::Request<()> {
    let mut req = http::Request::get(format!("http://svc{path}"));
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    req.body(()).unwrap()
}

async fn call<S>(svc: &mut S, req: http::Request<()>) -> Result<(), BoxError>
where
    S: Service<http::Request<()>, Response = http::Response<()>, Error = BoxError>,
{
    svc.ready().await?.call(req).await.map(drop)
}

#[tokio::test(start_paused = true)]
async fn policy_limits_each_tenant_header_separately() {
    let policy: ResiliencePolicy = toml::from_str(
        r#"
        [keyed_rate_limit]
        per_second = 1
        burst = 2
        key = { header = "x-tenant" }
        "#,
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let mut svc = policy
        .build("svc")
        .unwrap()
        .wrap(service_fn(move |_: http::Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(http::Response::new(())) }
        }));
    for _ in 0..2 {
        call(&mut svc, request(Some("acme"), "/")).await.unwrap();
    }
    let err = call(&mut svc, request(Some("acme"), "/"))
        .await
        .unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert!(
        limited.retry_after() > Duration::ZERO && limited.retry_after() <= Duration::from_secs(1)
    );
    // Another tenant, and requests without the header, have their own quotas.
    for _ in 0..2 {
        call(&mut svc, request(Some("globex"), "/")).await.unwrap();
        call(&mut svc, request(None, "/")).await.unwrap();
    }
    assert!(call(&mut svc, request(None, "/")).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    // One second later acme has one call again (1 per second), not two.
    tokio::time::advance(Duration::from_secs(1)).await;
    call(&mut svc, request(Some("acme"), "/")).await.unwrap();
    assert!(call(&mut svc, request(Some("acme"), "/")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn policy_keyed_by_path_waits_up_to_max_wait() {
    let policy: ResiliencePolicy = toml::from_str(
        r#"
        [keyed_rate_limit]
        per_second = 10
        burst = 1
        max_wait = "150ms"
        key = "path"
        "#,
    )
    .unwrap();
    let mut svc = policy
        .build("svc")
        .unwrap()
        .wrap(service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::new(()))
        }));
    let start = tokio::time::Instant::now();
    call(&mut svc, request(None, "/a")).await.unwrap();
    call(&mut svc, request(None, "/b")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "two paths, two quotas");
    // The second call on /a waits its turn (100 ms), within max_wait.
    call(&mut svc, request(None, "/a")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[test]
fn zero_rate_is_an_invalid_policy() {
    let policy: ResiliencePolicy =
        toml::from_str("[keyed_rate_limit]\nper_second = 0\nkey = \"host\"\n").unwrap();
    let err = policy.build("svc").unwrap_err();
    assert!(err.to_string().contains("keyed_rate_limit"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn key_count_is_bounded_and_overflow_keys_share_one_quota() {
    let cfg = RateLimitConfig {
        per_second: 1,
        burst: 1,
        max_wait: Duration::ZERO,
    };
    let layer = KeyedRateLimitLayer::new(cfg, |k: &&'static str| *k)
        .unwrap()
        .max_keys(2);
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: &'static str| async {
            Ok::<_, BoxError>(())
        }));
    let mut try_call = async |k: &'static str| svc.ready().await.unwrap().call(k).await.is_ok();
    assert!(try_call("a").await);
    assert!(try_call("b").await);
    assert_eq!(layer.keys(), 2);
    // Full, and a and b are busy: c and d share the overflow quota (one call).
    assert!(try_call("c").await);
    assert!(!try_call("d").await);
    assert!(!try_call("c").await);
    assert_eq!(layer.keys(), 2);
    // a and b kept their own quotas.
    assert!(!try_call("a").await);
    // Once a and b are idle again they are forgotten and e gets its own quota.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(try_call("e").await);
    assert!(!try_call("e").await);
    assert!(try_call("f").await);
    assert!(layer.keys() <= 2);
}

#[cfg(feature = "http")]
#[tokio::test]
async fn http_client_policy_limits_per_path() {
    use archon_client::ErrorKind;
    use archon_client::http::{HttpClient, HttpClientConfig, UpstreamConfig};
    use archon_client::rate_limit::{KeyedRateLimitConfig, RateLimitKey};
    let app = axum::Router::new().route("/{item}", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut keyed = KeyedRateLimitConfig::new(1, RateLimitKey::Path);
    keyed.burst = 2;
    let policy = ResiliencePolicy::default().keyed_rate_limit(keyed);
    let client = HttpClient::new(
        &HttpClientConfig::default()
            .upstream("svc", UpstreamConfig::new(format!("http://{addr}"), policy)),
    )
    .unwrap();
    for _ in 0..2 {
        client.get("svc", "/a").send().await.unwrap();
    }
    let err = client.get("svc", "/a").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    client.get("svc", "/b").send().await.unwrap();
}
