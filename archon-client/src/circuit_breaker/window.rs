//! Sliding windows of call outcomes: a ring of the last N calls, or per-second buckets over the
//! last N seconds. Both are O(1) per call, allocate nothing after construction and use only
//! atomics.
//!
//! Counts are packed into one `u64` (three 21-bit fields: calls, failures, slow calls), so one
//! `fetch_add` of a (wrapping) delta updates all three at once. Removing an outcome is adding its
//! negated packed value; since the fields never go below zero once every in-flight update has
//! landed, the packed sum is always exact after the last update.
//!
//! # Stripes
//!
//! Each thread (up to the number of stripes; see [`thread_index`]) owns a [`Stripe`] on its
//! own cache line, written by that thread only, so recording takes no lock. Successes gather
//! in the stripe and move into the shared window in batches of up to [`BATCH`] calls (one
//! atomic per eight outcomes plus two additions to the shared cursor and totals); a failure or
//! a slow call moves at once, together with the batch before it. So a healthy closed path
//! writes no cache line that another thread writes too. Threads past the last stripe record
//! straight into the shared window.
//!
//! What a call is judged by (the decision to open): a failure or slow call moves its
//! thread's batch and itself into the ring and is judged by the ring's new totals; a success
//! cannot raise a rate, so it is judged (by the ring's totals plus its thread's batch) only
//! while the window is still filling, when it may bring the window up to `minimum_calls`.
//!
//! - all calls recorded by one thread (e.g. a current-thread runtime), or by threads taking
//!   turns where each turn ends with a failure or a full batch: exactly the last N calls;
//! - several threads recording at once: every failure and slow call is in the ring from the
//!   moment it is recorded. Up to `BATCH - 1` recent successes of each *other* thread are not
//!   yet in it, and since the ring orders outcomes by when they moved in, a batch of
//!   successes can land after newer outcomes of other threads: the window is the last N calls
//!   up to `(threads - 1) * (BATCH - 1)` places of reordering.
//!
//! `snapshot` (the breaker's `metrics()`) counts every thread's batch as if it moved in now,
//! so once no thread is recording it is exact in the same sense.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

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

    /// A failure or a slow call.
    fn is_bad(self) -> bool {
        self.0 & 0b110 != 0
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

    /// `self + add - sub`, field by field, never below zero.
    fn adjust(self, add: u64, sub: u64) -> Self {
        let (a, s) = (Self::unpack(add), Self::unpack(sub));
        Self {
            calls: (self.calls + a.calls).saturating_sub(s.calls),
            failures: (self.failures + a.failures).saturating_sub(s.failures),
            slow: (self.slow + a.slow).saturating_sub(s.slow),
        }
    }
}

/// Outcomes gathered per stripe before they move into the shared window.
pub(crate) const BATCH: usize = 64;

/// Most stripes a breaker has.
pub(crate) const MAX_STRIPES: usize = 64;

/// One thread's batch of outcomes not yet in the shared window. Written only by the thread
/// that owns the stripe's index (see [`thread_index`]); read (racily, for metrics) by anyone.
#[derive(Debug)]
pub(crate) struct Stripe {
    /// The breaker word (state and generation) the batch belongs to.
    word: AtomicU64,
    /// Outcomes in the batch.
    len: AtomicU64,
    /// Time window: the second of the batch.
    at: AtomicU64,
    /// Time window: packed totals of the batch.
    pending: AtomicU64,
    /// Count window: the breaker word for which this thread saw the ring full (a full ring
    /// stays full until the state changes, and then successes need no decision).
    full: AtomicU64,
    codes: [AtomicU8; BATCH],
}

impl Stripe {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(u64::MAX),
            len: AtomicU64::new(0),
            at: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            full: AtomicU64::new(u64::MAX),
            codes: [const { AtomicU8::new(0) }; BATCH],
        }
    }
}

/// A thread's index, unique among the live threads (an exiting thread gives it back and the
/// next new thread takes the smallest free one). Stripe `i` is written only by the thread of
/// index `i`, so recording needs no lock; threads with an index past the last stripe record
/// straight into the shared window.
#[inline]
pub(crate) fn thread_index() -> usize {
    let cached = CACHED_INDEX.try_with(Cell::get).unwrap_or(NO_INDEX);
    if cached != NO_INDEX {
        return cached;
    }
    first_thread_index()
}

const NO_INDEX: usize = usize::MAX;

thread_local! {
    /// A copy of this thread's index that needs no lazy-initialisation check on every call.
    static CACHED_INDEX: Cell<usize> = const { Cell::new(NO_INDEX) };
}

/// The first call on this thread (or its locals are being destroyed: no stripe).
#[cold]
#[inline(never)]
fn first_thread_index() -> usize {
    static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    struct Index(usize);

    impl Index {
        fn take() -> Self {
            let reused = FREE.lock().ok().and_then(|mut free| {
                let (at, _) = free.iter().enumerate().min_by_key(|(_, i)| **i)?;
                Some(free.swap_remove(at))
            });
            Self(reused.unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed)))
        }
    }

    impl Drop for Index {
        fn drop(&mut self) {
            // From now on (other thread locals being destroyed) this thread has no stripe.
            let _ = CACHED_INDEX.try_with(|c| c.set(NO_INDEX));
            if let Ok(mut free) = FREE.lock() {
                free.push(self.0);
            }
        }
    }

    thread_local! {
        static INDEX: Index = Index::take();
    }
    let index = INDEX.try_with(|i| i.0).unwrap_or(NO_INDEX);
    if index != NO_INDEX {
        let _ = CACHED_INDEX.try_with(|c| c.set(index));
    }
    index
}

/// Packed totals of the (up to eight) one-byte codes in `word`.
fn packed_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    u64::from((word & ONES).count_ones())
        | (u64::from((word & (ONES << 1)).count_ones()) << FIELD_BITS)
        | (u64::from((word & (ONES << 2)).count_ones()) << (2 * FIELD_BITS))
}

/// The ring's shared counters.
#[derive(Debug)]
struct RingHead {
    /// Outcomes moved into the ring so far.
    cursor: AtomicU64,
    /// Packed totals of the ring's slots.
    totals: AtomicU64,
}

/// A true ring of the last `size` outcomes plus packed running totals.
#[derive(Debug)]
pub(crate) struct CountWindow {
    /// Outcomes moved into the ring so far.
    /// The cursor and the totals share one cache line: a batch moving in writes both.
    head: Padded<RingHead>,
    /// The ring: slot `i` is byte `i % 8` of word `i / 8` (so a batch moves in with one
    /// atomic operation per eight outcomes).
    slots: Box<[AtomicU64]>,
    size: u64,
    /// Largest batch: `BATCH`, or the ring size if smaller (a batch never laps the ring).
    batch: u64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_COUNT as u32);
        Self {
            head: Padded(RingHead {
                cursor: AtomicU64::new(0),
                totals: AtomicU64::new(0),
            }),
            slots: (0..size.div_ceil(8)).map(|_| AtomicU64::new(0)).collect(),
            size: u64::from(size),
            batch: (BATCH as u64).min(u64::from(size)),
        }
    }

    fn len(&self) -> u64 {
        self.size
    }

    /// The code in slot `i` (`i < size`).
    fn slot(&self, i: u64) -> Code {
        // `i / 8 < slots.len()` by construction.
        let word = self.slots[(i >> 3) as usize].load(Ordering::Relaxed);
        Code((word >> ((i & 7) * 8)) as u8)
    }

    /// Writes the bytes of `word` selected by `mask` into slot word `w`; returns the packed
    /// change of the totals. Bytes that already hold these codes are not written: in a run of
    /// successes the ring already holds successes, so the threads sharing a breaker read its
    /// cache lines and never take them from each other.
    fn store_word(&self, w: u64, mask: u64, word: u64) -> u64 {
        // `w < slots.len()` by construction.
        let slot = &self.slots[w as usize];
        match slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
            (x & mask != word).then_some((x & !mask) | word)
        }) {
            Ok(old) => packed_word(word).wrapping_sub(packed_word(old & mask)),
            Err(_) => 0,
        }
    }

    /// Moves `codes` into the ring (in order, replacing the oldest) and returns the new packed
    /// totals. Out of line: once per batch, and it keeps `record` small enough to inline.
    #[inline(never)]
    fn commit(&self, codes: impl ExactSizeIterator<Item = Code>) -> u64 {
        let n = self.len();
        let mut i = self
            .head
            .cursor
            .fetch_add(codes.len() as u64, Ordering::Relaxed)
            % n;
        let mut delta = 0u64;
        let (mut w, mut mask, mut word) = (i >> 3, 0u64, 0u64);
        for code in codes {
            if i >> 3 != w {
                delta = delta.wrapping_add(self.store_word(w, mask, word));
                (w, mask, word) = (i >> 3, 0, 0);
            }
            let shift = (i & 7) * 8;
            mask |= 0xFF << shift;
            word |= u64::from(code.0) << shift;
            i += 1;
            if i == n {
                i = 0;
            }
        }
        if mask != 0 {
            delta = delta.wrapping_add(self.store_word(w, mask, word));
        }
        if delta == 0 {
            // Nothing changed (successes over successes): read, do not write, the shared line.
            return self.head.totals.load(Ordering::Acquire);
        }
        self.head
            .totals
            .fetch_add(delta, Ordering::AcqRel)
            .wrapping_add(delta)
    }

    /// Records one outcome of the breaker state `word` through `stripe` (owned by the calling
    /// thread; `None`: straight into the ring). Returns the totals the outcome is judged by,
    /// or `None` when it cannot open the breaker (see the module docs).
    #[inline]
    pub(crate) fn record(
        &self,
        stripe: Option<&Stripe>,
        word: u64,
        code: Code,
    ) -> Option<Snapshot> {
        let Some(stripe) = stripe else {
            return Some(Snapshot::unpack(self.commit(std::iter::once(code))));
        };
        // Below `batch` by construction (the clamp keeps indexing in bounds regardless).
        let mut len = stripe.len.load(Ordering::Relaxed).min(self.batch - 1);
        if len != 0 && stripe.word.load(Ordering::Relaxed) != word {
            // A batch of an earlier state (generation): dropped.
            len = 0;
        }
        if len == 0 {
            stripe.word.store(word, Ordering::Relaxed);
        }
        stripe.codes[len as usize].store(code.0, Ordering::Relaxed);
        len += 1;
        // A failure or slow call is moved at once (with the batch before it), so every
        // thread's next decision sees it; successes wait for a full batch.
        if len >= self.batch || code.is_bad() {
            let codes = stripe.codes[..len as usize]
                .iter()
                .map(|c| Code(c.load(Ordering::Relaxed)));
            let totals = self.commit(codes);
            stripe.len.store(0, Ordering::Relaxed);
            return Some(Snapshot::unpack(totals));
        }
        stripe.len.store(len, Ordering::Relaxed);
        // The batch holds successes only. A success cannot raise a rate, so it can open the
        // breaker only by bringing the window up to `minimum_calls`, i.e. while the window is
        // still filling: then the slots the batch will take are empty and the totals are the
        // ring's plus the batch's calls. Once the window is full, no decision is needed.
        if stripe.full.load(Ordering::Relaxed) == word {
            return None;
        }
        let totals = Snapshot::unpack(self.head.totals.load(Ordering::Acquire));
        if totals.calls >= self.len() {
            stripe.full.store(word, Ordering::Relaxed);
        }
        let calls = totals.calls + len;
        (calls <= self.len()).then_some(Snapshot { calls, ..totals })
    }

    /// The totals of the last N calls of the state `word`, as if every stripe's batch (in
    /// stripe order) were moved into the ring now. Exact once no thread is recording.
    pub(crate) fn snapshot(&self, stripes: &[Padded<Stripe>], word: u64) -> Snapshot {
        let n = self.len();
        // The batches' codes, in stripe order.
        let mut appended = [0u8; MAX_STRIPES * BATCH];
        let mut v = 0usize;
        for stripe in stripes.iter().take(MAX_STRIPES) {
            if stripe.word.load(Ordering::Acquire) != word {
                continue;
            }
            let len = (stripe.len.load(Ordering::Acquire) as usize).min(BATCH);
            for code in &stripe.codes[..len] {
                appended[v] = code.load(Ordering::Relaxed);
                v += 1;
            }
        }
        let count = |codes: &[u8]| {
            codes
                .iter()
                .fold(0u64, |acc, c| acc.wrapping_add(Code(*c).packed()))
        };
        if v as u64 >= n {
            // The batches alone fill the window.
            return Snapshot::unpack(count(&appended[v - n as usize..v]));
        }
        let cursor = self.head.cursor.load(Ordering::Acquire);
        let totals = self.head.totals.load(Ordering::Acquire);
        // The `v` oldest ring slots make room for the batches.
        let evicted = (0..v as u64).fold(0u64, |acc, k| {
            acc.wrapping_add(self.slot((cursor + k) % n).packed())
        });
        let mut snap = Snapshot::unpack(totals).adjust(count(&appended[..v]), evicted);
        snap.calls = snap.calls.min(n);
        snap
    }

    pub(crate) fn reset(&self) {
        for slot in &*self.slots {
            let old = slot.swap(0, Ordering::AcqRel);
            if old != 0 {
                self.head
                    .totals
                    .fetch_sub(packed_word(old), Ordering::AcqRel);
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

    /// Adds the packed outcomes `packed` of second `sec`, unless that second already left the
    /// window.
    fn add(&self, sec: u64, packed: u64) {
        if sec + self.len() > self.head.load(Ordering::Acquire) {
            let s = Snapshot::unpack(packed);
            self.bucket(sec).fetch_add(packed, Ordering::AcqRel);
            self.calls.fetch_add(s.calls, Ordering::AcqRel);
            let bad = s.failures | (s.slow << 32);
            if bad != 0 {
                self.bad.fetch_add(bad, Ordering::AcqRel);
            }
        }
    }

    /// Records one outcome of the breaker state `word` at second `now_sec` through `stripe`;
    /// returns the totals the outcome is judged by (see the module docs).
    #[inline(never)]
    pub(crate) fn record(
        &self,
        stripe: Option<&Stripe>,
        word: u64,
        code: Code,
        now_sec: u64,
    ) -> Snapshot {
        self.advance(now_sec);
        let Some(stripe) = stripe else {
            self.add(now_sec, code.packed());
            return self.totals();
        };
        let mut len = stripe.len.load(Ordering::Relaxed);
        let mut pending = stripe.pending.load(Ordering::Relaxed);
        let same_word = stripe.word.load(Ordering::Relaxed) == word;
        if len == 0 || !same_word || stripe.at.load(Ordering::Relaxed) != now_sec {
            if len > 0 && same_word {
                self.add(stripe.at.load(Ordering::Relaxed), pending);
            }
            stripe.word.store(word, Ordering::Relaxed);
            stripe.at.store(now_sec, Ordering::Relaxed);
            len = 0;
            pending = 0;
        }
        pending += code.packed();
        len += 1;
        let snap = if len >= BATCH as u64 || code.is_bad() {
            self.add(now_sec, pending);
            len = 0;
            pending = 0;
            self.totals()
        } else {
            self.totals().adjust(pending, 0)
        };
        stripe.len.store(len, Ordering::Relaxed);
        stripe.pending.store(pending, Ordering::Relaxed);
        snap
    }

    fn totals(&self) -> Snapshot {
        let bad = self.bad.load(Ordering::Acquire);
        Snapshot {
            calls: self.calls.load(Ordering::Acquire),
            failures: bad & 0xFFFF_FFFF,
            slow: bad >> 32,
        }
    }

    /// The totals of the last N seconds of the state `word` at `now_sec`, batches included.
    pub(crate) fn snapshot(&self, stripes: &[Padded<Stripe>], word: u64, now_sec: u64) -> Snapshot {
        self.advance(now_sec);
        let mut snap = self.totals();
        for stripe in stripes {
            let sec = stripe.at.load(Ordering::Acquire);
            if stripe.word.load(Ordering::Acquire) == word
                && stripe.len.load(Ordering::Acquire) > 0
                && sec <= now_sec
                && sec + self.len() > now_sec
            {
                snap = snap.adjust(stripe.pending.load(Ordering::Acquire), 0);
            }
        }
        snap
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
    pub(crate) fn snapshot(&self, stripes: &[Padded<Stripe>], word: u64, now_sec: u64) -> Snapshot {
        match self {
            Self::Count(w) => w.snapshot(stripes, word),
            Self::Time(w) => w.snapshot(stripes, word, now_sec),
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

    fn stripes(n: usize) -> Vec<Padded<Stripe>> {
        (0..n).map(|_| Padded(Stripe::new())).collect()
    }

    #[test]
    fn ring_counts_exactly_the_last_n_calls() {
        let st = stripes(1);
        let w = CountWindow::new(3);
        let snap = |w: &CountWindow| {
            let s = w.snapshot(&st, 0);
            (s.calls, s.failures, s.slow)
        };
        w.record(Some(&st[0]), 0, Code::new(true, false));
        w.record(Some(&st[0]), 0, Code::new(true, true));
        // While the window fills, a success is judged (it may bring it to `minimum_calls`).
        let s = w.record(Some(&st[0]), 0, Code::new(false, false)).unwrap();
        assert_eq!((s.calls, s.failures, s.slow), (3, 2, 1));
        assert_eq!(snap(&w), (3, 2, 1));
        // Evicts the first failure; a success in a full window cannot open the breaker.
        assert_eq!(w.record(Some(&st[0]), 0, Code::new(false, false)), None);
        assert_eq!(snap(&w), (3, 1, 1));
        w.record(Some(&st[0]), 0, Code::new(false, false));
        assert_eq!(snap(&w), (3, 0, 0));
        // A failure is judged over exactly the last 3 calls.
        let s = w.record(Some(&st[0]), 0, Code::new(true, false)).unwrap();
        assert_eq!((s.calls, s.failures, s.slow), (3, 1, 0));
        w.reset();
        assert_eq!(w.snapshot(&st, 1), Snapshot::default());
    }

    #[test]
    fn batches_and_the_ring_agree_with_a_model_when_stripes_take_turns() {
        let st = stripes(3);
        let w = CountWindow::new(100);
        let mut model = std::collections::VecDeque::new();
        let mut turn = 0;
        for i in 0..1_000u64 {
            let failed = (i * 7919) % 11 < 4;
            // Threads taking turns, each turn ending with a failure.
            let judged = w.record(Some(&st[turn % 3]), 5, Code::new(failed, false));
            if failed {
                turn += 1;
            }
            model.push_back(failed);
            if model.len() > 100 {
                model.pop_front();
            }
            let expected = (
                model.len() as u64,
                model.iter().filter(|f| **f).count() as u64,
            );
            let s = w.snapshot(&st, 5);
            assert_eq!((s.calls, s.failures), expected, "call {i}");
            // A failure, or any call while the window fills, is judged over the exact window.
            if failed || i < 100 {
                let s = judged.unwrap();
                assert_eq!((s.calls, s.failures), expected, "call {i}");
            } else {
                assert_eq!(judged, None, "call {i}");
            }
        }
    }

    #[test]
    fn time_window_drops_seconds_that_leave_the_window() {
        let st = stripes(1);
        let w = TimeWindow::new(3);
        w.record(Some(&st[0]), 0, Code::new(true, false), 0);
        w.record(Some(&st[0]), 0, Code::new(false, true), 1);
        let s = w.record(Some(&st[0]), 0, Code::new(false, false), 2);
        assert_eq!((s.calls, s.failures, s.slow), (3, 1, 1));
        // Second 3 pushes second 0 out.
        let s = w.record(Some(&st[0]), 0, Code::new(false, false), 3);
        assert_eq!((s.calls, s.failures, s.slow), (3, 0, 1));
        // A long pause empties the window.
        assert_eq!(w.snapshot(&st, 0, 100), Snapshot::default());
        let s = w.record(Some(&st[0]), 0, Code::new(true, false), 100);
        assert_eq!((s.calls, s.failures), (1, 1));
    }

    #[test]
    fn time_window_counts_many_calls_per_second() {
        let st = stripes(2);
        let w = TimeWindow::new(2);
        for i in 0..100_000 {
            w.record(Some(&st[i % 2]), 0, Code::new(false, false), 5);
        }
        assert_eq!(w.snapshot(&st, 0, 5).calls, 100_000);
        assert_eq!(w.snapshot(&st, 0, 6).calls, 100_000);
        assert_eq!(w.snapshot(&st, 0, 7).calls, 0);
    }
}
