//! Wall-clock milliseconds that follow tokio's clock (so paused-clock tests move durable timers).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: i64,
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            base_ms,
            base: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.base_ms + ms(self.base.elapsed())
    }

    pub(crate) fn instant_at(&self, at_ms: i64) -> Instant {
        let off = at_ms - self.base_ms;
        if off <= 0 {
            self.base
        } else {
            self.base + Duration::from_millis(off.unsigned_abs())
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
