//! The clock that times calls for slow-call detection.
//!
//! A call is timed with two clock readings (when its permit is taken and when its outcome is
//! recorded). tokio's clock (`tokio::time::Instant`, the precise monotonic clock) costs 25-40
//! ns a reading on our 2-vCPU VM; the coarse monotonic clock (Linux `CLOCK_MONOTONIC_COARSE`:
//! the time of the last timer tick, read from the vDSO without reading the TSC) costs about
//! a third of that, but only moves once per tick (1-10 ms; 4 ms here). So a breaker uses the
//! coarse clock when the slow-call duration is long enough for the tick not to matter: at
//! least [`COARSE_FROM`] (10 s) and at least 1,000 ticks (an error of at most 0.1 %), which
//! includes the default of 60 s. Shorter durations, and systems without a coarse clock, use
//! tokio's clock.
//!
//! The coarse clock does not follow tokio's paused test clock (`tokio::time::pause`,
//! `advance`): to test slow-call detection under a paused clock, use a slow-call duration
//! below 10 s.

use std::time::Duration;

use tokio::time::Instant;

/// Slow-call durations from which the coarse clock may be used.
pub(crate) const COARSE_FROM: Duration = Duration::from_secs(10);

/// How a breaker times its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlowClock {
    /// Slow-call detection off: no clock is read.
    Off,
    /// tokio's clock (follows a paused test clock).
    Tokio,
    /// The coarse monotonic clock.
    Coarse,
}

/// When a call becomes slow, as read from its breaker's [`SlowClock`] at its start.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SlowAt {
    /// Not timed (detection off, or the deadline overflows: never slow).
    Never,
    Tokio(Instant),
    /// Nanoseconds of the coarse clock.
    Coarse(u64),
}

impl SlowClock {
    /// The clock for a slow-call duration of `slow` (zero: off).
    pub(crate) fn for_duration(slow: Duration) -> Self {
        if slow.is_zero() {
            Self::Off
        } else if slow >= COARSE_FROM
            && coarse_resolution().is_some_and(|tick| tick.saturating_mul(1000) <= slow)
        {
            Self::Coarse
        } else {
            Self::Tokio
        }
    }

    /// When a call starting now becomes slow.
    #[inline]
    pub(crate) fn slow_at(self, slow: Duration) -> SlowAt {
        match self {
            Self::Off => SlowAt::Never,
            Self::Tokio => Instant::now()
                .checked_add(slow)
                .map_or(SlowAt::Never, SlowAt::Tokio),
            Self::Coarse => {
                let slow = u64::try_from(slow.as_nanos()).unwrap_or(u64::MAX);
                coarse_nanos()
                    .checked_add(slow)
                    .map_or(SlowAt::Never, SlowAt::Coarse)
            }
        }
    }
}

impl SlowAt {
    /// Whether the call is slow, ending now; with tokio's clock also the reading (which
    /// gives a time window its second without reading the clock again).
    #[inline]
    pub(crate) fn check(self) -> (bool, Option<Instant>) {
        match self {
            Self::Never => (false, None),
            Self::Tokio(at) => {
                let now = Instant::now();
                (now >= at, Some(now))
            }
            Self::Coarse(at) => (coarse_nanos() >= at, None),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse_resolution() -> Option<Duration> {
    use std::sync::OnceLock;
    static TICK: OnceLock<Option<Duration>> = OnceLock::new();
    *TICK.get_or_init(|| {
        let res = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
        let tick = Duration::new(
            u64::try_from(res.tv_sec).ok()?,
            u32::try_from(res.tv_nsec).ok()?,
        );
        (!tick.is_zero()).then_some(tick)
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn coarse_resolution() -> Option<Duration> {
    None
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // A monotonic clock counts from boot: both fields are small and non-negative.
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn coarse_nanos() -> u64 {
    // Never used: `for_duration` picks the coarse clock only where it exists.
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_use_tokio_and_zero_turns_timing_off() {
        assert_eq!(SlowClock::for_duration(Duration::ZERO), SlowClock::Off);
        assert_eq!(
            SlowClock::for_duration(Duration::from_secs(2)),
            SlowClock::Tokio
        );
        assert!(matches!(
            SlowClock::Tokio.slow_at(Duration::MAX),
            SlowAt::Never
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn long_durations_use_the_coarse_clock_on_linux() {
        assert_eq!(
            SlowClock::for_duration(Duration::from_secs(60)),
            SlowClock::Coarse
        );
        let at = SlowClock::Coarse.slow_at(Duration::from_secs(60));
        assert!(!at.check().0);
        let past = SlowClock::Coarse.slow_at(Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(30));
        assert!(past.check().0);
    }
}
