#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hedging after the observed latency percentile, under a paused clock with a scripted inner
//! service.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use archon_client::ResiliencePolicy;
use archon_client::hedge::{HedgeConfig, HedgeLayer, LatencyPercentile};
use archon_client::retry::{RetryBudget, RetryBudgetConfig};
use archon_core::BoxError;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// Each call takes the next latency of the script (then the last one again); counts calls.
#[derive(Clone)]
struct Script(Arc<Mutex<(Vec<Duration>, usize)>>);

impl Script {
    fn new(latencies: Vec<Duration>) -> Self {
        Self(Arc::new(Mutex::new((latencies, 0))))
    }

    fn push(&self, latencies: impl IntoIterator<Item = Duration>) {
        self.0.lock().unwrap().0.extend(latencies);
    }

    fn calls(&self) -> usize {
        self.0.lock().unwrap().1
    }

    fn service(
        &self,
    ) -> impl Service<http::Request<()>, Response = Duration, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        let script = self.clone();
        service_fn(move |_: http::Request<()>| {
            let latency = {
                let mut s = script.0.lock().unwrap();
                let i = s.1;
                s.1 += 1;
                s.0.get(i).or(s.0.last()).copied().unwrap()
            };
            async move {
                tokio::time::sleep(latency).await;
                Ok::<_, BoxError>(latency)
            }
        })
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn percentile(p: f64) -> LatencyPercentile {
    LatencyPercentile {
        percentile: p,
        window: 1000,
        min_samples: 100,
        min_delay: ms(1),
        max_delay: Duration::from_secs(1),
    }
}

#[tokio::test(start_paused = true)]
async fn hedges_after_the_observed_p95_once_enough_calls_are_seen() {
    // 1 ms, 2 ms, ... 100 ms: the 95th percentile is 95 ms.
    let script = Script::new((1..=100).map(ms).collect());
    let layer = HedgeLayer::new(HedgeConfig::percentile(percentile(95.0), ms(500)), None);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(script.service());
    for i in 0..100 {
        // The fixed delay until 100 calls are seen.
        assert_eq!(layer.current_delay(), ms(500), "call {i}");
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(script.calls(), 100, "no call was hedged");
    // 95 ms rounded up to its histogram bucket (within 12.5 %).
    let delay = layer.current_delay();
    assert_eq!(delay, Duration::from_micros(98_304));

    // A stuck call is hedged after that delay; the hedge answers in 10 ms.
    script.push([Duration::from_secs(60), ms(10)]);
    let started = Instant::now();
    let answer = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(answer, ms(10));
    // (tokio's timer rounds each sleep up to the next millisecond)
    let took = started.elapsed();
    assert!(took >= delay + ms(10) && took <= delay + ms(12), "{took:?}");
    assert_eq!(script.calls(), 102);
}

#[tokio::test(start_paused = true)]
async fn the_estimate_follows_the_recent_window() {
    let mut p = percentile(50.0);
    p.window = 50;
    p.min_samples = 50;
    let script = Script::new(vec![ms(10); 100]);
    let layer = HedgeLayer::new(HedgeConfig::percentile(p, Duration::from_secs(5)), None);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(script.service());
    for _ in 0..100 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(layer.current_delay(), Duration::from_micros(10_240));
    // The upstream slows down to 200 ms: two windows later only 200 ms calls count.
    script.push(vec![ms(200); 100]);
    for _ in 0..100 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    // 200 ms rounded up to its bucket.
    assert_eq!(layer.current_delay(), Duration::from_micros(212_992));
}

#[tokio::test(start_paused = true)]
async fn the_delay_stays_between_floor_and_ceiling() {
    let mut p = percentile(95.0);
    p.min_delay = ms(20);
    p.min_samples = 10;
    let fast = Script::new(vec![ms(1)]);
    let layer = HedgeLayer::new(HedgeConfig::percentile(p, ms(500)), None);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(fast.service());
    for _ in 0..10 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(layer.current_delay(), ms(20));

    let slow = Script::new(vec![Duration::from_secs(5)]);
    let layer = HedgeLayer::new(HedgeConfig::percentile(p, Duration::from_secs(60)), None);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(slow.service());
    for _ in 0..10 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(layer.current_delay(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn percentile_hedges_draw_from_the_retry_budget() {
    let budget = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.0,
        min_per_second: 1,
        ttl: Duration::from_secs(2),
    });
    let mut p = percentile(90.0);
    p.min_samples = 10;
    let script = Script::new(vec![ms(10); 10]);
    let layer = HedgeLayer::new(
        HedgeConfig::percentile(p, Duration::from_secs(60)),
        Some(budget.clone()),
    );
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(script.service());
    for _ in 0..10 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    let delay = layer.current_delay();
    assert_eq!(delay, Duration::from_micros(10_240));
    // Slow primaries: the reserve pays for two hedges, then none.
    for _ in 0..3 {
        script.push([Duration::from_secs(30), ms(5)]);
    }
    for _ in 0..2 {
        let answer = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(answer, ms(5));
    }
    assert_eq!(budget.available(), 0);
    let before = script.calls();
    let answer = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(
        answer,
        Duration::from_secs(30),
        "no budget: the slow call finishes alone"
    );
    assert_eq!(script.calls() - before, 1);
}

#[test]
fn out_of_range_percentile_is_an_invalid_policy() {
    for bad in [
        "[hedge.percentile]\npercentile = 0.0\n",
        "[hedge.percentile]\npercentile = 101.0\n",
        "[hedge.percentile]\nwindow = 0\n",
        "[hedge.percentile]\nmin_delay = '2s'\nmax_delay = '1s'\n",
    ] {
        let policy: ResiliencePolicy = toml::from_str(bad).unwrap();
        assert!(policy.build("x").is_err(), "{bad}");
    }
    let ok: ResiliencePolicy =
        toml::from_str("[hedge]\ndelay = '20ms'\n[hedge.percentile]\npercentile = 99.0\n").unwrap();
    assert!(ok.build("x").is_ok());
}
