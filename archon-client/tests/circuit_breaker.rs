#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Circuit breaker behaviour against a scripted inner service under a paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use archon_client::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerError, CircuitBreakerHandle, CircuitBreakerLayer,
    CircuitBreakerRegistry, CircuitState,
};
use archon_client::{Classifier, DefaultClassifier, Outcome};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// What the scripted inner service does for one request.
#[derive(Clone, Copy)]
struct Script {
    status: u16,
    delay: Duration,
}

fn ok() -> Script {
    Script {
        status: 200,
        delay: Duration::ZERO,
    }
}

fn fail() -> Script {
    Script {
        status: 503,
        delay: Duration::ZERO,
    }
}

type Svc = tower::util::BoxCloneService<
    Script,
    http::Response<()>,
    CircuitBreakerError<std::convert::Infallible>,
>;

fn service(cfg: CircuitBreakerConfig) -> (Svc, CircuitBreakerHandle) {
    let layer = CircuitBreakerLayer::new("test", cfg).unwrap();
    let handle = layer.handle().clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|s: Script| async move {
            if !s.delay.is_zero() {
                tokio::time::sleep(s.delay).await;
            }
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(s.status).body(()).unwrap(),
            )
        }));
    (tower::util::BoxCloneService::new(svc), handle)
}

async fn call(
    svc: &mut Svc,
    s: Script,
) -> Result<u16, CircuitBreakerError<std::convert::Infallible>> {
    svc.ready()
        .await
        .unwrap()
        .call(s)
        .await
        .map(|r| r.status().as_u16())
}

fn small() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .count_window(10)
        .minimum_calls(10)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(3)
}

#[tokio::test(start_paused = true)]
async fn opens_after_failure_rate_once_minimum_calls_reached() {
    let (mut svc, breaker) = service(small());
    for _ in 0..4 {
        call(&mut svc, fail()).await.unwrap();
    }
    for _ in 0..5 {
        call(&mut svc, ok()).await.unwrap();
    }
    // 9 calls, 4 failures: below the minimum of 10 calls.
    assert_eq!(breaker.state(), CircuitState::Closed);
    call(&mut svc, fail()).await.unwrap();
    // 10 calls, 5 failures = 50 %.
    assert_eq!(breaker.state(), CircuitState::Open);
    let err = call(&mut svc, ok()).await.unwrap_err();
    let open = err.as_open().expect("rejected by the breaker");
    assert_eq!(open.remaining_wait(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_threshold() {
    let (mut svc, breaker) = service(small());
    for i in 0..100 {
        let s = if i % 3 == 0 { fail() } else { ok() };
        call(&mut svc, s).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    let m = breaker.metrics();
    assert_eq!(m.calls, 10);
}

/// The scenario where tower-resilience 0.13 needs 1,000 failures: its "count window" counts
/// every call since the last state change. A true ring of 100 opens after 50.
#[tokio::test(start_paused = true)]
async fn ring_window_opens_after_50_failures_following_1000_successes() {
    let cfg = CircuitBreakerConfig::default()
        .count_window(100)
        .minimum_calls(100)
        .failure_rate_threshold(50.0);
    let (mut svc, breaker) = service(cfg);
    for _ in 0..1000 {
        call(&mut svc, ok()).await.unwrap();
    }
    let mut failures = 0;
    while breaker.state() == CircuitState::Closed {
        call(&mut svc, fail()).await.unwrap();
        failures += 1;
        assert!(failures <= 1000, "never opened");
    }
    assert_eq!(failures, 50);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn rejection_reports_remaining_wait_then_half_open_admits_exactly_n_probes() {
    let (mut svc, breaker) = service(small());
    for _ in 0..10 {
        call(&mut svc, fail()).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(4)).await;
    let err = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(
        err.as_open().unwrap().remaining_wait(),
        Some(Duration::from_secs(6))
    );
    tokio::time::advance(Duration::from_secs(6)).await;

    // Three slow probes in flight: a fourth call is rejected.
    let slow = Script {
        status: 200,
        delay: Duration::from_secs(1),
    };
    let probes: Vec<_> = (0..3)
        .map(|_| {
            let mut s = svc.clone();
            tokio::spawn(async move { call(&mut s, slow).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    let err = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(err.as_open().unwrap().state(), CircuitState::HalfOpen);
    for p in probes {
        assert_eq!(p.await.unwrap().unwrap(), 200);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().calls, 0, "window is reset on closing");
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_with_growing_wait() {
    let cfg = small().growing_wait(2.0, Duration::from_secs(25));
    let (mut svc, breaker) = service(cfg);
    for _ in 0..10 {
        call(&mut svc, fail()).await.unwrap();
    }
    let waits = [10, 20, 25, 25];
    for (i, wait) in waits.into_iter().enumerate() {
        let open = call(&mut svc, ok()).await.unwrap_err();
        assert_eq!(
            open.as_open().unwrap().remaining_wait(),
            Some(Duration::from_secs(wait)),
            "opening {i}"
        );
        tokio::time::advance(Duration::from_secs(wait)).await;
        // Two probes fail, one succeeds: 66 % failures, back to open.
        call(&mut svc, fail()).await.unwrap();
        call(&mut svc, fail()).await.unwrap();
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        call(&mut svc, ok()).await.unwrap();
        assert_eq!(breaker.state(), CircuitState::Open);
    }
    // Closing resets the growth.
    tokio::time::advance(Duration::from_secs(25)).await;
    for _ in 0..3 {
        call(&mut svc, ok()).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    for _ in 0..10 {
        call(&mut svc, fail()).await.unwrap();
    }
    let open = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(
        open.as_open().unwrap().remaining_wait(),
        Some(Duration::from_secs(10))
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let cfg = small().slow_calls(50.0, Duration::from_secs(2));
    let (mut svc, breaker) = service(cfg);
    let slow = Script {
        status: 200,
        delay: Duration::from_secs(3),
    };
    for _ in 0..5 {
        call(&mut svc, ok()).await.unwrap();
    }
    for _ in 0..4 {
        call(&mut svc, slow).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().slow_calls, 4);
    call(&mut svc, slow).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.metrics().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn zero_slow_call_duration_turns_slow_call_detection_off() {
    let cfg = small().slow_calls(50.0, Duration::ZERO);
    let (mut svc, breaker) = service(cfg);
    let slow = Script {
        status: 200,
        delay: Duration::from_secs(3),
    };
    for _ in 0..20 {
        call(&mut svc, slow).await.unwrap();
    }
    assert_eq!(breaker.metrics().slow_calls, 0);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_seconds_that_roll_out() {
    let cfg = CircuitBreakerConfig::default()
        .time_window(10)
        .minimum_calls(10)
        .failure_rate_threshold(50.0);
    let (mut svc, breaker) = service(cfg);
    // Second 0: 5 failures.
    for _ in 0..5 {
        call(&mut svc, fail()).await.unwrap();
    }
    // 11 s later they are out of the window: 5 successes and 4 failures stay below minimum.
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..5 {
        call(&mut svc, ok()).await.unwrap();
    }
    for _ in 0..4 {
        call(&mut svc, fail()).await.unwrap();
    }
    assert_eq!(breaker.metrics().calls, 9);
    assert_eq!(breaker.state(), CircuitState::Closed);
    // Spread over several seconds, still in the window.
    tokio::time::advance(Duration::from_secs(3)).await;
    call(&mut svc, fail()).await.unwrap();
    assert_eq!(breaker.metrics().calls, 10);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn results_from_an_earlier_generation_are_dropped() {
    let (mut svc, breaker) = service(small());
    let slow_fail = Script {
        status: 503,
        delay: Duration::from_secs(5),
    };
    // A slow failure starts while closed...
    let mut s = svc.clone();
    let late = tokio::spawn(async move { call(&mut s, slow_fail).await });
    tokio::task::yield_now().await;
    // ...the breaker is forced open and reset meanwhile (two generations later)...
    breaker.force_open();
    breaker.reset();
    let generation = breaker.generation();
    late.await.unwrap().unwrap();
    // ...so the late failure is not counted in the new closed state.
    assert_eq!(breaker.metrics().calls, 0);
    assert_eq!(breaker.generation(), generation);
    call(&mut svc, ok()).await.unwrap();
    assert_eq!(breaker.metrics().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_count_neither_way_and_free_probe_slots() {
    let (mut svc, breaker) = service(small());
    let hang = Script {
        status: 200,
        delay: Duration::from_secs(3600),
    };
    // Cancelled in closed: not recorded at all.
    let fut = svc.ready().await.unwrap().call(hang);
    drop(fut);
    assert_eq!(breaker.metrics().calls, 0);

    for _ in 0..10 {
        call(&mut svc, fail()).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    // Three probes taken and cancelled: slots come back.
    for _ in 0..3 {
        let fut = svc.ready().await.unwrap().call(hang);
        tokio::task::yield_now().await;
        drop(fut);
    }
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    for _ in 0..3 {
        call(&mut svc, ok()).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn max_wait_in_half_open_reopens_a_stuck_breaker() {
    let cfg = small().max_wait_in_half_open(Duration::from_secs(30));
    let (mut svc, breaker) = service(cfg);
    for _ in 0..10 {
        call(&mut svc, fail()).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let hang = Script {
        status: 200,
        delay: Duration::from_secs(3600),
    };
    let stuck: Vec<_> = (0..3)
        .map(|_| {
            let mut s = svc.clone();
            tokio::spawn(async move { call(&mut s, hang).await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(call(&mut svc, ok()).await.is_err());
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    tokio::time::advance(Duration::from_secs(1)).await;
    let err = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(err.as_open().unwrap().state(), CircuitState::Open);
    assert_eq!(breaker.state(), CircuitState::Open);
    for s in stuck {
        s.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn admits_now_tells_whether_a_call_would_pass_without_taking_a_probe_slot() {
    let cfg = small()
        .permitted_calls_in_half_open(2)
        .max_wait_in_half_open(Duration::from_secs(30));
    let breaker = CircuitBreakerHandle::new("peek", cfg).unwrap();
    assert!(breaker.admits_now());
    for _ in 0..10 {
        breaker.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert!(!breaker.admits_now());
    tokio::time::advance(Duration::from_secs(10)).await;
    // The wait is over: the next call would be a probe. Asking takes no slot.
    assert!(breaker.admits_now());
    assert!(breaker.admits_now());
    let first = breaker.try_acquire().unwrap();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert!(breaker.admits_now());
    let second = breaker.try_acquire().unwrap();
    assert!(!breaker.admits_now());
    // A cancelled probe frees its slot.
    drop(second);
    assert!(breaker.admits_now());
    let second = breaker.try_acquire().unwrap();
    assert!(!breaker.admits_now());
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    // Stuck past max_wait_in_half_open: asking moves it to open, as a call would.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!breaker.admits_now());
    assert_eq!(breaker.state(), CircuitState::Open);
    drop((first, second));
    breaker.force_open();
    assert!(!breaker.admits_now());
    breaker.disable();
    assert!(breaker.admits_now());
}

#[tokio::test(start_paused = true)]
async fn forced_open_disabled_and_metrics_only() {
    let (mut svc, breaker) = service(small());
    breaker.force_open();
    let err = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(err.as_open().unwrap().state(), CircuitState::ForcedOpen);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(
        call(&mut svc, ok()).await.is_err(),
        "forced open never expires"
    );

    breaker.disable();
    for _ in 0..50 {
        call(&mut svc, fail()).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Disabled);
    assert_eq!(breaker.metrics().calls, 0);

    breaker.metrics_only();
    for _ in 0..50 {
        call(&mut svc, fail()).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::MetricsOnly);
    assert_eq!(breaker.metrics().failures, 10);

    breaker.reset();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn transitions_reach_the_callback_in_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handle = CircuitBreakerHandle::new("cb", small())
        .unwrap()
        .on_transition(move |t| log.lock().unwrap().push((t.from, t.to, t.generation)));
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::from_handle(handle))
        .service(service_fn(|fail: bool| async move {
            let status = if fail { 500 } else { 200 };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(status).body(()).unwrap(),
            )
        }));
    for _ in 0..10 {
        svc.ready().await.unwrap().call(true).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..3 {
        svc.ready().await.unwrap().call(false).await.unwrap();
    }
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Closed, Open, 1),
            (Open, HalfOpen, 2),
            (HalfOpen, Closed, 3)
        ]
    );
}

#[test]
fn default_classifier_follows_the_documented_rules() {
    let classify = |status: u16, grpc: Option<&str>| {
        let mut b = http::Response::builder().status(status);
        if let Some(code) = grpc {
            b = b.header("grpc-status", code);
        }
        Classifier::<_, ()>::classify(&DefaultClassifier, &Ok(b.body(()).unwrap()))
    };
    assert_eq!(classify(200, None), Outcome::Success);
    assert_eq!(classify(404, None), Outcome::Success);
    assert_eq!(classify(400, None), Outcome::Success);
    assert_eq!(classify(429, None), Outcome::Failure);
    assert_eq!(classify(500, None), Outcome::Failure);
    assert_eq!(classify(501, None), Outcome::Success);
    assert_eq!(classify(503, None), Outcome::Failure);
    for code in ["2", "4", "8", "13", "14", "15"] {
        assert_eq!(classify(200, Some(code)), Outcome::Failure, "grpc {code}");
    }
    for code in ["0", "3", "5", "7", "16"] {
        assert_eq!(classify(200, Some(code)), Outcome::Success, "grpc {code}");
    }
    let err: Result<http::Response<()>, &str> = Err("connection refused");
    assert_eq!(DefaultClassifier.classify(&err), Outcome::Failure);
}

#[tokio::test(start_paused = true)]
async fn registry_gives_one_breaker_per_key() {
    let registry = CircuitBreakerRegistry::<String>::new("host", small(), 8).unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(registry.layer(|req: &(String, bool)| req.0.clone()))
        .service(service_fn(|(_, fail): (String, bool)| async move {
            let status = if fail { 503 } else { 200 };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(status).body(()).unwrap(),
            )
        }));
    for _ in 0..10 {
        svc.ready()
            .await
            .unwrap()
            .call(("a".into(), true))
            .await
            .unwrap();
    }
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(("a".into(), false))
            .await
            .is_err()
    );
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(("b".into(), false))
            .await
            .is_ok()
    );
    assert_eq!(registry.get(&"a".into()).state(), CircuitState::Open);
    assert_eq!(registry.get(&"b".into()).state(), CircuitState::Closed);
    for i in 0..20 {
        registry.get(&format!("k{i}"));
    }
    assert_eq!(registry.len(), 8);
}

#[test]
fn invalid_settings_are_typed_errors() {
    for (cfg, field) in [
        (
            CircuitBreakerConfig::default().failure_rate_threshold(0.0),
            "failure_rate_threshold",
        ),
        (
            CircuitBreakerConfig::default().failure_rate_threshold(101.0),
            "failure_rate_threshold",
        ),
        (
            CircuitBreakerConfig::default().count_window(0),
            "window_size",
        ),
        (
            CircuitBreakerConfig::default().permitted_calls_in_half_open(0),
            "permitted_calls_in_half_open",
        ),
        (
            CircuitBreakerConfig::default().minimum_calls(0),
            "minimum_calls",
        ),
    ] {
        assert_eq!(
            CircuitBreakerHandle::new("x", cfg).unwrap_err().field(),
            field
        );
    }
}
