//! Exponential backoff with full jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with "full jitter" (the gRPC retry design, gRFC A6): before retry `n`
/// (0-based) the delay is uniform in `[0, min(max_backoff, initial_backoff * multiplier^n)]`.
/// Randomising the whole range spreads retries of many clients best.
///
/// ```
/// use std::time::Duration;
/// use archon_client::retry::ExponentialBackoff;
/// let backoff = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1), 2.0);
/// for n in 0..10 {
///     assert!(backoff.delay(n) <= backoff.ceiling(n));
/// }
/// assert_eq!(backoff.ceiling(2), Duration::from_millis(400));
/// assert_eq!(backoff.ceiling(9), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExponentialBackoff {
    /// Ceiling of the first delay.
    #[serde(with = "archon_core::config::duration")]
    pub initial_backoff: Duration,
    /// Largest ceiling.
    #[serde(with = "archon_core::config::duration")]
    pub max_backoff: Duration,
    /// Growth of the ceiling per retry (>= 1).
    pub multiplier: f64,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10), 2.0)
    }
}

impl ExponentialBackoff {
    /// A backoff with these bounds. A multiplier below 1 (or not finite) is taken as 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::ExponentialBackoff;
    /// let backoff = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_millis(50), 0.5);
    /// assert_eq!(backoff.multiplier, 1.0); // below 1: taken as 1
    /// assert_eq!(backoff.max_backoff, Duration::from_millis(100)); // never below the first delay
    /// ```
    pub fn new(initial_backoff: Duration, max_backoff: Duration, multiplier: f64) -> Self {
        Self {
            initial_backoff,
            max_backoff: max_backoff.max(initial_backoff),
            multiplier: if multiplier.is_finite() && multiplier >= 1.0 {
                multiplier
            } else {
                1.0
            },
        }
    }

    /// The upper bound of the delay before retry `n` (0-based).
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::ExponentialBackoff;
    /// let backoff = ExponentialBackoff::new(Duration::from_millis(50), Duration::from_secs(1), 2.0);
    /// assert_eq!(backoff.ceiling(0), Duration::from_millis(50));
    /// assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
    /// assert_eq!(backoff.ceiling(10), Duration::from_secs(1)); // capped at max_backoff
    /// ```
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = i32::try_from(n).unwrap_or(i32::MAX);
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp);
        let max = self.max_backoff.as_secs_f64();
        if secs.is_finite() && secs < max {
            Duration::from_secs_f64(secs)
        } else {
            self.max_backoff
        }
    }

    /// A random delay in `[0, ceiling(n)]`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::ExponentialBackoff;
    /// let backoff = ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(10), 2.0);
    /// for _ in 0..100 {
    ///     assert!(backoff.delay(1) <= Duration::from_millis(200));
    /// }
    /// ```
    pub fn delay(&self, n: u32) -> Duration {
        self.ceiling(n).mul_f64(fastrand::f64())
    }
}
