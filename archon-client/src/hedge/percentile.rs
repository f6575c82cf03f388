//! The observed latency percentile that adaptive hedging waits for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Hedge after the observed `percentile` latency of recent calls instead of a fixed delay.
///
/// Latencies go into a log-scale histogram (8 buckets per doubling, so a percentile is known
/// within 12.5 %; one lock and one counter per call, no allocation); the last one or two
/// windows of `window` calls count. Until `min_samples` calls are seen the hedge's fixed
/// `delay` is used; the percentile is kept between `min_delay` and `max_delay`.
///
/// ```
/// use archon_client::hedge::HedgeConfig;
/// let cfg: HedgeConfig = toml::from_str(r#"
///     delay = "50ms"   # until 100 calls are seen
///     [percentile]
///     percentile = 95.0
///     min_delay = "5ms"
///     max_delay = "1s"
/// "#).unwrap();
/// assert_eq!(cfg.percentile.unwrap().min_samples, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyPercentile {
    /// Which percentile to wait for (above 0, at most 100).
    pub percentile: f64,
    /// Calls per window: the estimate covers the current window and the one before.
    pub window: u32,
    /// Calls to see before the percentile replaces the fixed delay.
    pub min_samples: u32,
    /// The shortest delay (floor).
    #[serde(with = "archon_core::config::duration")]
    pub min_delay: Duration,
    /// The longest delay (ceiling).
    #[serde(with = "archon_core::config::duration")]
    pub max_delay: Duration,
}

impl Default for LatencyPercentile {
    fn default() -> Self {
        Self {
            percentile: 95.0,
            window: 1000,
            min_samples: 100,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl LatencyPercentile {
    /// Hedge after the `percentile` latency, other settings default.
    ///
    /// ```
    /// let p = archon_client::hedge::LatencyPercentile::new(99.0);
    /// assert_eq!(p.window, 1000);
    /// ```
    pub fn new(percentile: f64) -> Self {
        Self {
            percentile,
            ..Self::default()
        }
    }

    /// Why the settings cannot work, if they cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            return Some("hedge percentile must be above 0 and at most 100");
        }
        if self.window == 0 {
            return Some("hedge percentile window must be at least 1");
        }
        if self.min_delay > self.max_delay {
            return Some("hedge min_delay is above max_delay");
        }
        None
    }
}

/// Microseconds below this are their own bucket; above, 8 buckets per doubling.
const SUB: u64 = 8;
/// Enough buckets for 2^40 µs (12 days); longer latencies land in the last one.
const BUCKETS: usize = 8 + 37 * 8;

fn bucket(micros: u64) -> usize {
    if micros < SUB {
        return usize::try_from(micros).unwrap_or(0);
    }
    let msb = u64::from(63 - micros.leading_zeros());
    let sub = (micros >> (msb - 3)) & 7;
    usize::try_from(SUB + (msb - 3) * SUB + sub)
        .unwrap_or(BUCKETS - 1)
        .min(BUCKETS - 1)
}

/// The upper end of a bucket, in microseconds.
fn upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index + 1;
    }
    let msb = (index - SUB) / SUB + 3;
    let sub = (index - SUB) % SUB;
    (SUB + sub + 1) << (msb - 3)
}

#[derive(Debug)]
struct Windows {
    current: Vec<u32>,
    previous: Vec<u32>,
    in_current: u32,
    in_previous: u32,
    seen: u64,
}

/// Latencies of recent calls, and the delay they give.
#[derive(Debug)]
pub(crate) struct Estimator {
    config: LatencyPercentile,
    windows: Mutex<Windows>,
    /// The current delay in nanoseconds (0 = not enough samples yet).
    delay: AtomicU64,
}

impl Estimator {
    pub(crate) fn new(config: LatencyPercentile) -> Self {
        Self {
            config,
            windows: Mutex::new(Windows {
                current: vec![0; BUCKETS],
                previous: vec![0; BUCKETS],
                in_current: 0,
                in_previous: 0,
                seen: 0,
            }),
            delay: AtomicU64::new(0),
        }
    }

    /// The delay to hedge after, or `None` before `min_samples` calls.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut w = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if w.in_current >= self.config.window {
            let Windows {
                current, previous, ..
            } = &mut *w;
            std::mem::swap(current, previous);
            current.fill(0);
            w.in_previous = w.in_current;
            w.in_current = 0;
        }
        let b = bucket(micros);
        w.current[b] = w.current[b].saturating_add(1);
        w.in_current += 1;
        w.seen = w.seen.saturating_add(1);
        if w.seen < u64::from(self.config.min_samples) {
            return;
        }
        let total = u64::from(w.in_current) + u64::from(w.in_previous);
        // The smallest latency that at least `percentile` % of the calls did not exceed.
        let rank = ((self.config.percentile / 100.0 * total as f64).ceil() as u64).max(1);
        let mut below = 0u64;
        let mut at = BUCKETS - 1;
        for i in 0..BUCKETS {
            below += u64::from(w.current[i]) + u64::from(w.previous[i]);
            if below >= rank {
                at = i;
                break;
            }
        }
        drop(w);
        let delay =
            Duration::from_micros(upper(at)).clamp(self.config.min_delay, self.config.max_delay);
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.delay.store(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_within_an_eighth() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 30, 1 << 39, u64::MAX]) {
            let b = bucket(micros);
            assert!(b >= last || micros > 100_000, "{micros}");
            last = b;
            if micros < 1 << 39 {
                let up = upper(b);
                assert!(up > micros, "{micros} -> {up}");
                assert!(
                    up as f64 <= (micros as f64 * 1.125).max(micros as f64 + 1.0),
                    "{micros} -> {up}"
                );
            }
        }
    }
}
