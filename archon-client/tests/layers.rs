#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bulkhead, deadline, grpc-timeout, rate limit and fallback against scripted services.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use archon_client::bulkhead::{BulkheadConfig, BulkheadFull, BulkheadLayer};
use archon_client::fallback::FallbackLayer;
use archon_client::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimited};
use archon_client::retry::{ExponentialBackoff, RetryConfig, RetryPolicy};
use archon_client::timeout::{DeadlineExceeded, DeadlineLayer, GrpcTimeoutLayer};
use archon_core::BoxError;
use tokio::time::Instant;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

fn sleeper(
    gauge: Arc<Gauge>,
    sleep: Duration,
) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static {
    service_fn(move |_: ()| {
        let gauge = gauge.clone();
        async move {
            let n = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.max.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(sleep).await;
            gauge.now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn bulkhead_caps_concurrency_and_rejects_at_once_without_wait() {
    let gauge = Arc::new(Gauge::default());
    let layer = BulkheadLayer::new(
        "t",
        BulkheadConfig {
            max_concurrent: 3,
            max_wait: Duration::ZERO,
        },
    );
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(sleeper(gauge.clone(), Duration::from_secs(1)));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = svc.clone();
            tokio::spawn(async move { s.oneshot(()).await })
        })
        .collect();
    let mut full = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert!(e.is::<BulkheadFull>());
            full += 1;
        }
    }
    assert_eq!(full, 7);
    assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
    assert_eq!(layer.available_permits(), 3);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_waits_up_to_max_wait_for_a_slot() {
    let gauge = Arc::new(Gauge::default());
    let layer = BulkheadLayer::new(
        "t",
        BulkheadConfig {
            max_concurrent: 2,
            max_wait: Duration::from_millis(1500),
        },
    );
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(sleeper(gauge.clone(), Duration::from_secs(1)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let s = svc.clone();
            tokio::spawn(async move { (s.oneshot(()).await, Instant::now()) })
        })
        .collect();
    let mut ok = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            (Ok(()), _) => ok += 1,
            (Err(e), at) => {
                assert!(e.is::<BulkheadFull>());
                assert_eq!(at - started, Duration::from_millis(1500));
                full += 1;
            }
        }
    }
    // Two run at once, two more get a slot after 1 s, the last two give up at 1.5 s.
    assert_eq!((ok, full), (4, 2));
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn deadline_spans_all_retries_and_grpc_timeout_shrinks() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let policy = RetryPolicy::new(
        &RetryConfig::default()
            .max_attempts(10)
            .budget(None)
            .backoff(ExponentialBackoff::new(
                Duration::from_millis(1),
                Duration::from_millis(1),
                1.0,
            )),
    );
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(RetryLayer::new(policy))
        .layer(GrpcTimeoutLayer::new(None))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            300,
        )))
        .service(service_fn(move |req: http::Request<()>| {
            log.lock()
                .unwrap()
                .push(req.headers()["grpc-timeout"].to_str().unwrap().to_owned());
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(http::Response::new(()))
            }
        }));
    let started = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("http://x/").body(()).unwrap())
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let seen = seen.lock().unwrap();
    // Attempts at ~0, ~301, ~602, ~903 ms: each is told the time left.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0], "1000000u");
    let nanos: Vec<u64> = seen
        .iter()
        .map(|s| {
            let (n, unit) = s.split_at(s.len() - 1);
            let n: u64 = n.parse().unwrap();
            n * match unit {
                "n" => 1,
                "u" => 1_000,
                "m" => 1_000_000,
                other => panic!("unexpected unit {other}"),
            }
        })
        .collect();
    assert!(nanos.windows(2).all(|w| w[1] < w[0]), "{seen:?}");
    assert!(nanos[3] < 100_000_000, "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_fails_fast_when_no_time_is_left() {
    use archon_client::timeout::DeadlineRequest;
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    let mut svc = ServiceBuilder::new()
        .layer(GrpcTimeoutLayer::new(Some(Duration::from_secs(5))))
        .service(service_fn(move |_: http::Request<()>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(()) }
        }));
    let mut req = http::Request::new(());
    req.set_deadline(Instant::now());
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rate_limit_rejects_or_waits() {
    let gauge = Arc::new(Gauge::default());
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(RateLimitConfig {
                per_second: 20,
                burst: 2,
                max_wait: Duration::ZERO,
            })
            .unwrap(),
        )
        .service(sleeper(gauge.clone(), Duration::ZERO));
    let mut limited = 0;
    for _ in 0..5 {
        if let Err(e) = svc.ready().await.unwrap().call(()).await {
            let rl = e.downcast_ref::<RateLimited>().unwrap();
            assert!(rl.retry_after() <= Duration::from_millis(50));
            limited += 1;
        }
    }
    assert_eq!(limited, 3);

    let mut waiting = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(RateLimitConfig {
                per_second: 50,
                burst: 1,
                max_wait: Duration::from_secs(1),
            })
            .unwrap(),
        )
        .service(sleeper(gauge, Duration::ZERO));
    for _ in 0..5 {
        waiting.ready().await.unwrap().call(()).await.unwrap();
    }
}

#[tokio::test]
async fn fallback_replaces_only_selected_errors() {
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(|e: &BoxError| {
            e.is::<BulkheadFull>().then_some("fallback")
        }))
        .service(service_fn(|fail: u8| async move {
            match fail {
                0 => Ok("real"),
                1 => Err(BoxError::from(BulkheadFull::new())),
                _ => Err(BoxError::from("other")),
            }
        }));
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), "real");
    assert_eq!(
        svc.ready().await.unwrap().call(1).await.unwrap(),
        "fallback"
    );
    assert!(svc.ready().await.unwrap().call(2).await.is_err());
}

mod hedging {
    use super::*;
    use archon_client::hedge::{HedgeConfig, HedgeLayer};
    use archon_client::retry::{RetryBudget, RetryBudgetConfig};

    /// Odd calls take 10 s, even calls 10 ms; counts calls.
    fn slow_then_fast(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<http::Request<()>, Response = &'static str, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        service_fn(move |_: http::Request<()>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n.is_multiple_of(2) {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    Ok::<_, BoxError>("slow")
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok("fast")
                }
            }
        })
    }

    fn layer(budget: Option<RetryBudget>) -> HedgeLayer {
        HedgeLayer::new(
            HedgeConfig {
                delay: Duration::from_millis(100),
                ..HedgeConfig::default()
            },
            budget,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn hedge_after_the_delay_and_the_first_answer_wins() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(layer(None))
            .service(slow_then_fast(calls.clone()));
        let started = Instant::now();
        let answer = svc.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(answer, "fast");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(started.elapsed(), Duration::from_millis(110));
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_draw_from_the_budget_and_stop_when_it_is_empty() {
        let budget = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.0,
            min_per_second: 1,
            ttl: Duration::from_secs(2),
        });
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(layer(Some(budget.clone())))
            .service(slow_then_fast(calls.clone()));
        // The reserve allows two hedges in the 2 s window...
        for _ in 0..2 {
            let answer = svc.clone().oneshot(http::Request::new(())).await.unwrap();
            assert_eq!(answer, "fast");
        }
        assert_eq!(budget.available(), 0);
        // ...then the slow first attempt has to finish on its own.
        let before = calls.load(Ordering::SeqCst);
        let answer = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(answer, "slow");
        assert_eq!(calls.load(Ordering::SeqCst) - before, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_requests_are_never_hedged() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(layer(None))
            .service(slow_then_fast(calls.clone()));
        let post = http::Request::post("http://x/").body(()).unwrap();
        assert_eq!(svc.oneshot(post).await.unwrap(), "slow");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
