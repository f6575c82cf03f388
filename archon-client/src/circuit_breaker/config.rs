//! Circuit breaker settings, with Resilience4j's defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::window::MAX_COUNT;

/// Which sliding window the breaker computes its rates over.
///
/// ```
/// use archon_client::circuit_breaker::WindowType;
/// let w: WindowType = serde_json::from_str("\"time\"").unwrap();
/// assert_eq!(w, WindowType::Time);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    /// The last `window_size` calls (a true ring: the oldest outcome is evicted by the newest).
    #[default]
    Count,
    /// The calls of the last `window_size` seconds (one bucket per second).
    Time,
}

/// How a circuit breaker decides to open, how long it stays open and how it probes.
///
/// Defaults are Resilience4j's: failure rate 50 %, slow-call rate 100 % with slow calls over
/// 60 s, 60 s open, 10 probes in half-open, 100 calls minimum, count window of 100.
/// In configuration files durations are written as text (`"30s"`, `"250ms"`).
///
/// ```
/// use std::time::Duration;
/// use archon_client::circuit_breaker::{CircuitBreakerConfig, WindowType};
///
/// let cfg: CircuitBreakerConfig = toml::from_str(r#"
///     failure_rate_threshold = 25.0
///     window_type = "time"
///     window_size = 30
///     wait_in_open = "5s"
/// "#).unwrap();
/// assert_eq!(cfg.window_type, WindowType::Time);
/// assert_eq!(cfg.wait_in_open, Duration::from_secs(5));
/// assert_eq!(cfg.minimum_calls, 100); // default
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Failure rate in percent (0 < x <= 100) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Slow-call rate in percent (0 < x <= 100) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow. Zero turns slow-call detection off: calls
    /// are then not timed at all (with a count window the breaker reads no clock per call).
    /// From 10 s up, calls are timed with the coarse monotonic clock on Linux (resolution
    /// one timer tick, at most 0.1 % of the duration), which does not follow tokio's paused
    /// test clock; below 10 s, with tokio's clock.
    #[serde(with = "archon_core::config::duration")]
    pub slow_call_duration: Duration,
    /// Count or time window.
    pub window_type: WindowType,
    /// Calls (count window) or seconds (time window) in the window.
    pub window_size: u32,
    /// Rates are evaluated only once this many calls are in the window (capped at the window
    /// size for a count window).
    pub minimum_calls: u32,
    /// How long the breaker stays open before it lets probes through.
    #[serde(with = "archon_core::config::duration")]
    pub wait_in_open: Duration,
    /// Each consecutive opening (without closing in between) multiplies the wait by this
    /// (1.0 = constant wait).
    pub wait_multiplier: f64,
    /// Upper bound of the growing wait.
    #[serde(with = "archon_core::config::duration")]
    pub max_wait_in_open: Duration,
    /// Probe calls admitted in half-open; their outcome decides between closed and open.
    pub permitted_calls_in_half_open: u32,
    /// Longest stay in half-open before the breaker opens again (zero = until the probes
    /// finish).
    #[serde(with = "archon_core::config::duration")]
    pub max_wait_in_half_open: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(60),
            window_type: WindowType::Count,
            window_size: 100,
            minimum_calls: 100,
            wait_in_open: Duration::from_secs(60),
            wait_multiplier: 1.0,
            max_wait_in_open: Duration::from_secs(60),
            permitted_calls_in_half_open: 10,
            max_wait_in_half_open: Duration::ZERO,
        }
    }
}

/// A setting that cannot work, found by [`CircuitBreakerConfig::validate`].
///
/// ```
/// use archon_client::circuit_breaker::CircuitBreakerConfig;
/// let cfg = CircuitBreakerConfig::default().count_window(0);
/// assert!(cfg.validate().unwrap_err().to_string().contains("window_size"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid circuit breaker setting `{field}`: {reason}")]
pub struct InvalidConfig {
    pub(crate) field: &'static str,
    pub(crate) reason: &'static str,
}

impl InvalidConfig {
    /// The name of the offending setting.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerConfig;
    /// let err = CircuitBreakerConfig::default().failure_rate_threshold(150.0).validate().unwrap_err();
    /// assert_eq!(err.field(), "failure_rate_threshold");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl CircuitBreakerConfig {
    /// Checks every setting.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::circuit_breaker::CircuitBreakerConfig;
    /// assert!(CircuitBreakerConfig::default().validate().is_ok());
    /// // A growing wait capped below the initial wait (60 s by default):
    /// let cfg = CircuitBreakerConfig::default().growing_wait(2.0, Duration::from_secs(10));
    /// assert_eq!(cfg.validate().unwrap_err().field(), "max_wait_in_open");
    /// ```
    ///
    /// # Errors
    /// [`InvalidConfig`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field, reason| Err(InvalidConfig { field, reason });
        let pct = |x: f64| x > 0.0 && x <= 100.0;
        if !pct(self.failure_rate_threshold) {
            return bad("failure_rate_threshold", "must be in (0, 100]");
        }
        if !pct(self.slow_call_rate_threshold) {
            return bad("slow_call_rate_threshold", "must be in (0, 100]");
        }
        if self.window_size == 0 || u64::from(self.window_size) > MAX_COUNT {
            return bad("window_size", "must be between 1 and 2,097,151");
        }
        if self.window_type == WindowType::Time && self.window_size > 3600 {
            return bad("window_size", "a time window is at most 3600 seconds");
        }
        if self.minimum_calls == 0 {
            return bad("minimum_calls", "must be at least 1");
        }
        if self.permitted_calls_in_half_open == 0 || self.permitted_calls_in_half_open > 0xFFFF {
            return bad(
                "permitted_calls_in_half_open",
                "must be between 1 and 65,535",
            );
        }
        if !(self.wait_multiplier >= 1.0 && self.wait_multiplier.is_finite()) {
            return bad("wait_multiplier", "must be a finite number >= 1.0");
        }
        if self.max_wait_in_open < self.wait_in_open {
            return bad("max_wait_in_open", "must be at least wait_in_open");
        }
        Ok(())
    }

    /// Sets the failure rate threshold in percent.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerConfig;
    /// let cfg = CircuitBreakerConfig::default().failure_rate_threshold(25.0);
    /// assert_eq!(cfg.failure_rate_threshold, 25.0);
    /// assert!(cfg.validate().is_ok());
    /// assert!(cfg.failure_rate_threshold(0.0).validate().is_err());
    /// ```
    #[must_use]
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.failure_rate_threshold = percent;
        self
    }

    /// Sets the slow-call rate threshold in percent and the duration that makes a call slow
    /// (zero: no call is slow, and calls are not timed).
    ///
    /// ```
    /// use std::time::Duration;
    /// let off = archon_client::circuit_breaker::CircuitBreakerConfig::default()
    ///     .slow_calls(100.0, Duration::ZERO);
    /// assert!(off.validate().is_ok());
    /// ```
    #[must_use]
    pub fn slow_calls(mut self, percent: f64, duration: Duration) -> Self {
        self.slow_call_rate_threshold = percent;
        self.slow_call_duration = duration;
        self
    }

    /// Uses a ring of the last `calls` calls.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, WindowType};
    /// let cfg = CircuitBreakerConfig::default().time_window(30).count_window(20);
    /// assert_eq!((cfg.window_type, cfg.window_size), (WindowType::Count, 20));
    /// ```
    #[must_use]
    pub fn count_window(mut self, calls: u32) -> Self {
        self.window_type = WindowType::Count;
        self.window_size = calls;
        self
    }

    /// Uses per-second buckets over the last `seconds` seconds.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, WindowType};
    /// let cfg = CircuitBreakerConfig::default().time_window(60);
    /// assert_eq!((cfg.window_type, cfg.window_size), (WindowType::Time, 60));
    /// // A time window covers at most an hour.
    /// assert!(cfg.time_window(7200).validate().is_err());
    /// ```
    #[must_use]
    pub fn time_window(mut self, seconds: u32) -> Self {
        self.window_type = WindowType::Time;
        self.window_size = seconds;
        self
    }

    /// Sets the minimum number of calls before rates are evaluated.
    ///
    /// ```
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let cfg = CircuitBreakerConfig::default().count_window(10).minimum_calls(3);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// for _ in 0..2 {
    ///     breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// }
    /// assert_eq!(breaker.state(), CircuitState::Closed); // 100 % failures, but only 2 calls
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// assert_eq!(breaker.state(), CircuitState::Open);
    /// ```
    #[must_use]
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Sets the wait in open (and raises the maximum wait to at least it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::circuit_breaker::CircuitBreakerConfig;
    /// let cfg = CircuitBreakerConfig::default().wait_in_open(Duration::from_secs(120));
    /// assert_eq!(cfg.wait_in_open, Duration::from_secs(120));
    /// assert_eq!(cfg.max_wait_in_open, Duration::from_secs(120)); // raised from 60 s
    /// assert!(cfg.validate().is_ok());
    /// ```
    #[must_use]
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.wait_in_open = wait;
        self.max_wait_in_open = self.max_wait_in_open.max(wait);
        self
    }

    /// Grows the wait by `multiplier` on each consecutive opening, up to `max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::circuit_breaker::CircuitBreakerConfig;
    /// // 10 s, then 20 s, 40 s... up to 5 minutes while the breaker keeps reopening.
    /// let cfg = CircuitBreakerConfig::default()
    ///     .wait_in_open(Duration::from_secs(10))
    ///     .growing_wait(2.0, Duration::from_secs(300));
    /// assert_eq!(cfg.wait_multiplier, 2.0);
    /// assert_eq!(cfg.max_wait_in_open, Duration::from_secs(300));
    /// assert!(cfg.validate().is_ok());
    /// ```
    #[must_use]
    pub fn growing_wait(mut self, multiplier: f64, max: Duration) -> Self {
        self.wait_multiplier = multiplier;
        self.max_wait_in_open = max;
        self
    }

    /// Sets the number of probe calls in half-open.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let cfg = CircuitBreakerConfig::default()
    ///     .count_window(1)
    ///     .wait_in_open(Duration::ZERO)
    ///     .permitted_calls_in_half_open(2);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure); // opens; the wait is over at once
    /// let probes = [breaker.try_acquire().unwrap(), breaker.try_acquire().unwrap()];
    /// assert_eq!(breaker.state(), CircuitState::HalfOpen);
    /// assert!(breaker.try_acquire().is_err()); // both probe slots are taken
    /// # drop(probes);
    /// ```
    #[must_use]
    pub fn permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.permitted_calls_in_half_open = calls;
        self
    }

    /// Sets the longest stay in half-open.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let cfg = CircuitBreakerConfig::default()
    ///     .count_window(1)
    ///     .wait_in_open(Duration::from_secs(1))
    ///     .permitted_calls_in_half_open(1)
    ///     .max_wait_in_half_open(Duration::from_secs(5));
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// tokio::time::advance(Duration::from_secs(1)).await;
    /// let _stuck_probe = breaker.try_acquire().unwrap(); // half-open; the probe never finishes
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// assert!(breaker.try_acquire().is_err());
    /// assert_eq!(breaker.state(), CircuitState::Open); // open again rather than stuck
    /// # }
    /// ```
    #[must_use]
    pub fn max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.max_wait_in_half_open = wait;
        self
    }

    /// The wait before the `n`-th consecutive opening (1-based) ends.
    pub(crate) fn wait_for_opening(&self, n: u32) -> Duration {
        if n <= 1 || self.wait_multiplier <= 1.0 {
            return self.wait_in_open;
        }
        let exp = i32::try_from(n - 1).unwrap_or(i32::MAX);
        let secs = self.wait_in_open.as_secs_f64() * self.wait_multiplier.powi(exp);
        let max = self.max_wait_in_open.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// Minimum calls, capped at the window size for a count window.
    pub(crate) fn effective_minimum_calls(&self) -> u64 {
        match self.window_type {
            WindowType::Count => u64::from(self.minimum_calls.min(self.window_size)),
            WindowType::Time => u64::from(self.minimum_calls),
        }
    }
}
