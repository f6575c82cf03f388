//! Delays between attempts.

use std::time::Duration;

/// Exponential backoff with a cap and a randomization factor (Resilience4j's defaults:
/// 500 ms, multiplier 1.5, randomization 0.5; see REFERENCE.md).
///
/// ```
/// use std::time::Duration;
/// use archon_events::router::Backoff;
/// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.0);
/// assert_eq!(b.delay(1), Duration::from_millis(100));
/// assert_eq!(b.delay(2), Duration::from_millis(200));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            multiplier: 1.5,
            max: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Doubling from `initial` up to `max`, randomization 0.5.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max,
            jitter: 0.5,
        }
    }
    /// The same delay every time, no randomization.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            initial: delay,
            multiplier: 1.0,
            max: delay,
            jitter: 0.0,
        }
    }
    /// Sets the multiplier (at least 1).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier.max(1.0);
        self
    }
    /// Sets the randomization factor, 0 to 1: the delay is drawn from `d * (1 ± factor)`.
    #[must_use]
    pub fn with_jitter(mut self, factor: f64) -> Self {
        self.jitter = factor.clamp(0.0, 1.0);
        self
    }
    /// The delay after failed attempt `attempt` (1 = after the first failure).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp.min(1024));
        let capped = base.min(self.max.as_secs_f64());
        let factor = if self.jitter > 0.0 {
            1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0)
        } else {
            1.0
        };
        Duration::try_from_secs_f64((capped * factor).max(0.0)).unwrap_or(self.max)
    }
}
