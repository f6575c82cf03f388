#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Retry policy against a scripted inner service under a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use archon_client::retry::{
    BudgetExhausted, ExponentialBackoff, RetryBudgetConfig, RetryConfig, RetryPolicy,
};
use archon_core::BoxError;
use tokio::time::Instant;
use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Resp = http::Response<()>;
/// One scripted answer: a status with headers, or a transport error.
type Step = Result<(u16, Vec<(&'static str, &'static str)>), &'static str>;

/// A service answering each call with the next scripted response (the last one repeats) and
/// counting calls.
fn scripted(
    script: Vec<Step>,
    policy: RetryPolicy,
) -> (
    tower::util::BoxCloneService<http::Request<()>, Resp, BoxError>,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let script = Arc::new(script);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(service_fn(move |_req: http::Request<()>| {
            let n = seen.fetch_add(1, Ordering::SeqCst) as usize;
            let step = script[n.min(script.len() - 1)].clone();
            async move {
                match step {
                    Ok((status, headers)) => {
                        let mut b = http::Response::builder().status(status);
                        for (k, v) in headers {
                            b = b.header(k, v);
                        }
                        Ok::<_, BoxError>(b.body(()).unwrap())
                    }
                    Err(msg) => Err(BoxError::from(msg)),
                }
            }
        }));
    (tower::util::BoxCloneService::new(svc), calls)
}

fn fast() -> RetryConfig {
    RetryConfig::default()
        .max_attempts(4)
        .backoff(ExponentialBackoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            2.0,
        ))
        .budget(None)
}

fn get() -> http::Request<()> {
    http::Request::get("http://x/").body(()).unwrap()
}

async fn run<S>(svc: &mut S, req: http::Request<()>) -> Result<Resp, BoxError>
where
    S: Service<http::Request<()>, Response = Resp, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn retries_transient_failures_until_success() {
    let (mut svc, calls) = scripted(
        vec![
            Ok((503, vec![])),
            Err("connection reset"),
            Ok((200, vec![])),
        ],
        RetryPolicy::new(&fast()),
    );
    assert_eq!(run(&mut svc, get()).await.unwrap().status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn stops_after_max_attempts() {
    let (mut svc, calls) = scripted(vec![Ok((503, vec![]))], RetryPolicy::new(&fast()));
    assert_eq!(run(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_501_are_not_retried() {
    for status in [400, 404, 501] {
        let (mut svc, calls) = scripted(vec![Ok((status, vec![]))], RetryPolicy::new(&fast()));
        run(&mut svc, get()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "status {status}");
    }
    for status in [408, 429, 500, 502, 503, 504] {
        let (mut svc, calls) = scripted(vec![Ok((status, vec![]))], RetryPolicy::new(&fast()));
        run(&mut svc, get()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4, "status {status}");
    }
}

#[tokio::test(start_paused = true)]
async fn only_idempotent_requests_are_retried() {
    let (mut svc, calls) = scripted(vec![Ok((503, vec![]))], RetryPolicy::new(&fast()));
    let post = http::Request::post("http://x/").body(()).unwrap();
    run(&mut svc, post).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (mut svc, calls) = scripted(vec![Ok((503, vec![]))], RetryPolicy::new(&fast()));
    let keyed = http::Request::post("http://x/")
        .header("Idempotency-Key", "order-42")
        .body(())
        .unwrap();
    run(&mut svc, keyed).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    for method in ["PUT", "DELETE", "HEAD", "OPTIONS"] {
        let (mut svc, calls) = scripted(vec![Ok((503, vec![]))], RetryPolicy::new(&fast()));
        let req = http::Request::builder()
            .method(method)
            .uri("http://x/")
            .body(())
            .unwrap();
        run(&mut svc, req).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_stay_within_the_full_jitter_bounds() {
    let (mut svc, calls) = scripted(vec![Ok((503, vec![]))], RetryPolicy::new(&fast()));
    let started = Instant::now();
    run(&mut svc, get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Three delays, each at most its ceiling: 10 + 20 + 40 ms.
    assert!(started.elapsed() <= Duration::from_millis(70));

    let backoff =
        ExponentialBackoff::new(Duration::from_millis(10), Duration::from_millis(100), 2.0);
    let mut max_seen = Duration::ZERO;
    for _ in 0..2000 {
        let d = backoff.delay(3);
        assert!(d <= Duration::from_millis(80));
        max_seen = max_seen.max(d);
    }
    assert!(
        max_seen > Duration::from_millis(40),
        "jitter spans the range"
    );
    assert_eq!(backoff.ceiling(10), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_capped() {
    let (mut svc, calls) = scripted(
        vec![Ok((503, vec![("retry-after", "7")])), Ok((200, vec![]))],
        RetryPolicy::new(&fast().max_elapsed(Duration::from_secs(60))),
    );
    let started = Instant::now();
    assert_eq!(run(&mut svc, get()).await.unwrap().status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), Duration::from_secs(7));

    // Asking for more than max_retry_after (30 s by default): not retried.
    let (mut svc, calls) = scripted(
        vec![Ok((429, vec![("retry-after", "120")])), Ok((200, vec![]))],
        RetryPolicy::new(&fast().max_elapsed(Duration::from_secs(600))),
    );
    assert_eq!(run(&mut svc, get()).await.unwrap().status(), 429);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_retries() {
    let (mut svc, calls) = scripted(
        vec![Ok((503, vec![("retry-after", "4")]))],
        RetryPolicy::new(
            &fast()
                .max_attempts(100)
                .max_elapsed(Duration::from_secs(10)),
        ),
    );
    run(&mut svc, get()).await.unwrap();
    // Attempts at 0, 4 and 8 s; a retry at 12 s would pass the 10 s limit.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn grpc_status_and_pushback_are_honoured() {
    let grpc = |code: &'static str, pushback: Option<&'static str>| {
        let mut h = vec![("grpc-status", code)];
        if let Some(p) = pushback {
            h.push(("grpc-retry-pushback-ms", p));
        }
        Ok((200, h))
    };
    // UNAVAILABLE is retried by default; INVALID_ARGUMENT is not.
    let (mut svc, calls) = scripted(vec![grpc("14", None)], RetryPolicy::new(&fast()));
    run(&mut svc, get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let (mut svc, calls) = scripted(vec![grpc("3", None)], RetryPolicy::new(&fast()));
    run(&mut svc, get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Pushback 250 ms: retried after exactly that.
    let (mut svc, calls) = scripted(
        vec![grpc("14", Some("250")), grpc("0", None)],
        RetryPolicy::new(&fast()),
    );
    let started = Instant::now();
    run(&mut svc, get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    // Negative or malformed pushback: do not retry.
    for bad in ["-1", "soon"] {
        let (mut svc, calls) = scripted(vec![grpc("14", Some(bad))], RetryPolicy::new(&fast()));
        run(&mut svc, get()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "pushback {bad}");
    }
    // Configured codes.
    let mut cfg = fast();
    cfg.grpc_retryable_codes = vec!["resource_exhausted".into()];
    let (mut svc, calls) = scripted(vec![grpc("8", None)], RetryPolicy::new(&cfg));
    run(&mut svc, get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn budget_caps_extra_load_during_an_outage() {
    let budget = RetryBudgetConfig {
        ratio: 0.2,
        min_per_second: 1,
        ttl: Duration::from_secs(10),
    };
    let policy = RetryPolicy::new(&fast().budget(Some(budget)));
    let (svc, calls) = scripted(vec![Ok((503, vec![]))], policy);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut s = svc.clone();
        tasks.push(tokio::spawn(async move { run(&mut s, get()).await }));
    }
    let mut marked = 0;
    for t in tasks {
        let resp = t.await.unwrap().unwrap();
        if resp.extensions().get::<BudgetExhausted>().is_some() {
            marked += 1;
        }
    }
    // 200 first attempts, and only the reserve (1/s over 10 s) for retries: no successes
    // earn anything during a total outage.
    assert_eq!(calls.load(Ordering::SeqCst), 200 + 10);
    assert!(
        marked >= 190,
        "responses say the budget stopped them ({marked})"
    );
}

#[tokio::test(start_paused = true)]
async fn budget_refills_from_successful_first_attempts() {
    let budget = RetryBudgetConfig {
        ratio: 0.1,
        min_per_second: 0,
        ttl: Duration::from_secs(10),
    };
    let policy = RetryPolicy::new(&fast().max_attempts(2).budget(Some(budget)));
    let b = policy.budget().unwrap().clone();
    let (mut ok_svc, _) = scripted(vec![Ok((200, vec![]))], policy.clone());
    for _ in 0..100 {
        run(&mut ok_svc, get()).await.unwrap();
    }
    assert_eq!(b.available(), 10);
    let (mut bad, calls) = scripted(vec![Err("refused")], policy);
    let mut exhausted = 0;
    for _ in 0..50 {
        let err = run(&mut bad, get()).await.unwrap_err();
        if let Some(e) = err.downcast_ref::<BudgetExhausted>() {
            exhausted += 1;
            assert!(
                std::error::Error::source(e)
                    .unwrap()
                    .to_string()
                    .contains("refused")
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 50 + 10);
    assert_eq!(exhausted, 40);
}
