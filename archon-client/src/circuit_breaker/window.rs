//! Sliding windows of call outcomes: a ring of the last N calls, or per-second buckets over the
//! last N seconds. Both are O(1) per call, allocate nothing after construction and use only
//! atomics.
//!
//! Counts are packed into one `u64` (three 21-bit fields: calls, failures, slow calls), so one
//! `fetch_add` of a (wrapping) delta updates all three at once. Removing an outcome is adding its
//! negated packed value; since the fields never go below zero once every in-flight update has
//! landed, the packed sum is always exact after the last update.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
/// Largest count a window (or one second of a time window) can hold.
pub(crate) const MAX_COUNT: u64 = FIELD_MASK;

/// Keeps a hot atomic on its own cache line(s), so that writes to it do not slow down reads of
/// its neighbours (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One recorded outcome: bit 0 = recorded, bit 1 = failure, bit 2 = slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Code(pub(crate) u8);

impl Code {
    pub(crate) fn new(failure: bool, slow: bool) -> Self {
        Self(1 | (u8::from(failure) << 1) | (u8::from(slow) << 2))
    }

    fn packed(self) -> u64 {
        let c = u64::from(self.0);
        (c & 1) | (((c >> 1) & 1) << FIELD_BITS) | (((c >> 2) & 1) << (2 * FIELD_BITS))
    }
}

/// Totals of a window at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Snapshot {
    fn unpack(v: u64) -> Self {
        Self {
            calls: v & FIELD_MASK,
            failures: (v >> FIELD_BITS) & FIELD_MASK,
            slow: (v >> (2 * FIELD_BITS)) & FIELD_MASK,
        }
    }
}

/// A true ring of the last `size` outcomes plus packed running totals.
#[derive(Debug)]
pub(crate) struct CountWindow {
    next: Padded<AtomicU64>,
    slots: Box<[AtomicU8]>,
    totals: Padded<AtomicU64>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_COUNT as u32);
        Self {
            next: Padded(AtomicU64::new(0)),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            totals: Padded(AtomicU64::new(0)),
        }
    }

    pub(crate) fn record(&self, code: Code) -> Snapshot {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64;
        // `i < slots.len()` by construction.
        let old = Code(self.slots[i as usize].swap(code.0, Ordering::AcqRel));
        let delta = code.packed().wrapping_sub(old.packed());
        let prev = self.totals.fetch_add(delta, Ordering::AcqRel);
        Snapshot::unpack(prev.wrapping_add(delta))
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot::unpack(self.totals.load(Ordering::Acquire))
    }

    pub(crate) fn reset(&self) {
        for slot in &*self.slots {
            let old = Code(slot.swap(0, Ordering::AcqRel));
            if old.0 != 0 {
                self.totals.fetch_sub(old.packed(), Ordering::AcqRel);
            }
        }
    }
}

/// Per-second buckets over the last `seconds` seconds plus running totals.
///
/// `head` is the newest second seen. The caller that moves it forward clears the buckets of the
/// seconds that fell out of the window (at most `seconds` of them, each second cleared once, so
/// the cost stays O(1) amortised whatever the call rate).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    head: AtomicU64,
    buckets: Box<[AtomicU64]>,
    /// Calls in the window (not packed, so it is not limited to 2^21).
    calls: AtomicU64,
    /// Failures in the low 32 bits, slow calls in the high 32 bits.
    bad: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(seconds: u32) -> Self {
        let seconds = seconds.max(1);
        Self {
            head: AtomicU64::new(0),
            buckets: (0..seconds).map(|_| AtomicU64::new(0)).collect(),
            calls: AtomicU64::new(0),
            bad: AtomicU64::new(0),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn bucket(&self, second: u64) -> &AtomicU64 {
        // The index is `< len` by construction.
        &self.buckets[(second % self.len()) as usize]
    }

    fn subtract(&self, packed: u64) {
        let s = Snapshot::unpack(packed);
        if s.calls != 0 {
            self.calls.fetch_sub(s.calls, Ordering::AcqRel);
        }
        let bad = s.failures | (s.slow << 32);
        if bad != 0 {
            self.bad.fetch_sub(bad, Ordering::AcqRel);
        }
    }

    fn advance(&self, now_sec: u64) {
        let mut head = self.head.load(Ordering::Acquire);
        while now_sec > head {
            match self.head.compare_exchange_weak(
                head,
                now_sec,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let first = (head + 1).max(now_sec.saturating_sub(self.len() - 1));
                    for second in first..=now_sec {
                        let old = self.bucket(second).swap(0, Ordering::AcqRel);
                        if old != 0 {
                            self.subtract(old);
                        }
                    }
                    return;
                }
                Err(actual) => head = actual,
            }
        }
    }

    pub(crate) fn record(&self, code: Code, now_sec: u64) -> Snapshot {
        self.advance(now_sec);
        let head = self.head.load(Ordering::Acquire);
        if now_sec + self.len() > head {
            self.bucket(now_sec)
                .fetch_add(code.packed(), Ordering::AcqRel);
            let calls = self.calls.fetch_add(1, Ordering::AcqRel) + 1;
            let add = u64::from((code.0 >> 1) & 1) | (u64::from((code.0 >> 2) & 1) << 32);
            let bad = if add == 0 {
                self.bad.load(Ordering::Acquire)
            } else {
                self.bad.fetch_add(add, Ordering::AcqRel) + add
            };
            return Self::snap(calls, bad);
        }
        self.snapshot(now_sec)
    }

    fn snap(calls: u64, bad: u64) -> Snapshot {
        Snapshot {
            calls,
            failures: bad & 0xFFFF_FFFF,
            slow: bad >> 32,
        }
    }

    pub(crate) fn snapshot(&self, now_sec: u64) -> Snapshot {
        self.advance(now_sec);
        Self::snap(
            self.calls.load(Ordering::Acquire),
            self.bad.load(Ordering::Acquire),
        )
    }

    pub(crate) fn reset(&self) {
        for bucket in &*self.buckets {
            let old = bucket.swap(0, Ordering::AcqRel);
            if old != 0 {
                self.subtract(old);
            }
        }
    }
}

/// Either window, dispatched by `match` (no trait object, no allocation).
#[derive(Debug)]
// The count window is large on purpose (cache-line padding); there is one per breaker.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn snapshot(&self, now_sec: u64) -> Snapshot {
        match self {
            Self::Count(w) => w.snapshot(),
            Self::Time(w) => w.snapshot(now_sec),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Self::Count(w) => w.reset(),
            Self::Time(w) => w.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_counts_exactly_the_last_n_calls() {
        let w = CountWindow::new(3);
        w.record(Code::new(true, false));
        w.record(Code::new(true, true));
        let s = w.record(Code::new(false, false));
        assert_eq!((s.calls, s.failures, s.slow), (3, 2, 1));
        // Evicts the first failure.
        let s = w.record(Code::new(false, false));
        assert_eq!((s.calls, s.failures, s.slow), (3, 1, 1));
        let s = w.record(Code::new(false, false));
        assert_eq!((s.calls, s.failures, s.slow), (3, 0, 0));
        w.reset();
        assert_eq!(w.snapshot(), Snapshot::default());
    }

    #[test]
    fn time_window_drops_seconds_that_leave_the_window() {
        let w = TimeWindow::new(3);
        w.record(Code::new(true, false), 0);
        w.record(Code::new(false, true), 1);
        let s = w.record(Code::new(false, false), 2);
        assert_eq!((s.calls, s.failures, s.slow), (3, 1, 1));
        // Second 3 pushes second 0 out.
        let s = w.record(Code::new(false, false), 3);
        assert_eq!((s.calls, s.failures, s.slow), (3, 0, 1));
        // A long pause empties the window.
        assert_eq!(w.snapshot(100), Snapshot::default());
        let s = w.record(Code::new(true, false), 100);
        assert_eq!((s.calls, s.failures), (1, 1));
    }

    #[test]
    fn time_window_counts_many_calls_per_second() {
        let w = TimeWindow::new(2);
        for _ in 0..100_000 {
            w.record(Code::new(false, false), 5);
        }
        assert_eq!(w.snapshot(5).calls, 100_000);
        assert_eq!(w.snapshot(6).calls, 100_000);
        assert_eq!(w.snapshot(7).calls, 0);
    }
}
