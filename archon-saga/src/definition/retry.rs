//! Retry policies for steps and compensations.

use std::time::Duration;

/// How often and how fast a failing step (or compensation) is tried again.
///
/// Delays grow exponentially from `initial` by `multiplier`, capped at `max_delay`, with
/// "full jitter" taken as `delay * (1 - jitter * random)`; defaults follow Resilience4j
/// (3 attempts, 500 ms, x1.5, randomization 0.5). Retry timers are durable: the wake-up time is
/// written to the store, so a retry waiting 10 minutes survives a restart.
///
/// ```
/// use std::time::Duration;
/// use archon_saga::RetryPolicy;
/// let p = RetryPolicy::exponential(5, Duration::from_millis(100)).max_delay(Duration::from_secs(10));
/// assert_eq!(p.max_attempts(), Some(5));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: Option<u32>,
    initial: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Some(3),
            initial: Duration::from_millis(500),
            multiplier: 1.5,
            max_delay: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure counts.
    ///
    /// ```
    /// assert_eq!(archon_saga::RetryPolicy::none().max_attempts(), Some(1));
    /// ```
    pub fn none() -> Self {
        Self {
            max_attempts: Some(1),
            ..Self::default()
        }
    }

    /// Up to `max_attempts` attempts (including the first), starting at `initial`, x2 each time.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = archon_saga::RetryPolicy::exponential(4, Duration::from_secs(1));
    /// ```
    pub fn exponential(max_attempts: u32, initial: Duration) -> Self {
        Self {
            max_attempts: Some(max_attempts.max(1)),
            initial,
            multiplier: 2.0,
            ..Self::default()
        }
    }

    /// Fixed delay between up to `max_attempts` attempts, no jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = archon_saga::RetryPolicy::fixed(3, Duration::from_secs(600));
    /// assert_eq!(p.delay(2), Duration::from_secs(600));
    /// ```
    pub fn fixed(max_attempts: u32, delay: Duration) -> Self {
        Self {
            max_attempts: Some(max_attempts.max(1)),
            initial: delay,
            multiplier: 1.0,
            max_delay: delay,
            jitter: 0.0,
        }
    }

    /// Retry without limit (until success or an operator acts).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = archon_saga::RetryPolicy::fixed(1, Duration::from_secs(1)).forever();
    /// assert_eq!(p.max_attempts(), None);
    /// ```
    pub fn forever(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// Cap on a single delay.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = archon_saga::RetryPolicy::default().max_delay(Duration::from_secs(5));
    /// ```
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Randomization factor in `0.0..=1.0` (0 = no jitter).
    ///
    /// ```
    /// let p = archon_saga::RetryPolicy::default().jitter(0.0);
    /// ```
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Maximum attempts including the first (`None` = unlimited).
    ///
    /// ```
    /// assert_eq!(archon_saga::RetryPolicy::default().max_attempts(), Some(3));
    /// ```
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// True if another attempt is allowed after `failed_attempts` failures.
    pub(crate) fn allows_another(&self, failed_attempts: u32) -> bool {
        self.max_attempts.is_none_or(|max| failed_attempts < max)
    }

    /// The delay before the attempt that follows failure number `failed_attempts` (from 1).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = archon_saga::RetryPolicy::exponential(5, Duration::from_millis(100)).jitter(0.0);
    /// assert_eq!(p.delay(1), Duration::from_millis(100));
    /// assert_eq!(p.delay(3), Duration::from_millis(400));
    /// ```
    pub fn delay(&self, failed_attempts: u32) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = base.min(self.max_delay.as_secs_f64()).max(0.0);
        let jittered = capped * (1.0 - self.jitter * fastrand::f64());
        Duration::from_secs_f64(jittered)
    }
}
