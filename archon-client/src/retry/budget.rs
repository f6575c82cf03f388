//! A retry budget: retries may add at most a fixed fraction of extra load.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One retry costs this many micro-tokens. Deposits are `ratio * SCALE`, so ratios down to
/// one in a million are exact and nothing is lost to integer division.
const SCALE: i64 = 1_000_000;

/// A policy's deposits are moved into the budget this many at a time (per thread).
const FLUSH_EVERY: u32 = 16;

/// Deposits of this thread not yet in their budget.
struct Pending {
    budget: RetryBudget,
    count: u32,
    /// The budget's newest second when the first of them was made.
    second: u64,
}

impl Pending {
    fn flush(self) {
        let inner = &self.budget.inner;
        let now = self.budget.now_sec();
        // Still in the window: counted in the second of the first deposit.
        if self.second + inner.buckets.len() as u64 > now {
            let amount = inner.deposit.saturating_mul(i64::from(self.count));
            self.budget
                .bucket(self.second)
                .fetch_add(amount, Ordering::AcqRel);
            inner.balance.fetch_add(amount, Ordering::AcqRel);
        }
    }
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Settings of a [`RetryBudget`] (Finagle's and Envoy's defaults: 20 % extra load, 10 retries
/// per second always allowed, deposits kept 10 s).
///
/// ```
/// let cfg: archon_client::retry::RetryBudgetConfig =
///     toml::from_str("ratio = 0.1\nttl = '5s'").unwrap();
/// assert_eq!(cfg.min_per_second, 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per successful first attempt (0.2 = 20 % extra load).
    pub ratio: f64,
    /// Retries per second allowed whatever the traffic (so low-traffic clients can retry).
    pub min_per_second: u32,
    /// How long a deposit (and a withdrawal) counts.
    #[serde(with = "archon_core::config::duration")]
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

struct Inner {
    deposit: i64,
    reserve: i64,
    epoch: Instant,
    head: AtomicU64,
    buckets: Box<[AtomicI64]>,
    balance: AtomicI64,
}

/// Tokens earned by first attempts that did not need a retry, spent by retries, over a
/// sliding window of `ttl` seconds. Shared by clones.
///
/// Unlike tower's `TpsBudget` (tower issue 857, which rounds `1 / ratio` to an integer and so
/// turns 30 % into 33 %), amounts are kept in millionths of a retry: with `ratio = 0.3`, 1,000
/// successes buy exactly 300 retries (plus the per-second reserve).
///
/// ```
/// use std::time::Duration;
/// use archon_client::retry::{RetryBudget, RetryBudgetConfig};
/// let budget = RetryBudget::new(RetryBudgetConfig { ratio: 0.3, min_per_second: 0, ttl: Duration::from_secs(10) });
/// for _ in 0..1000 { budget.deposit(); }
/// let mut retries = 0;
/// while budget.withdraw() { retries += 1; }
/// assert_eq!(retries, 300);
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget with `config`. A negative or non-finite ratio counts as 0; the window is at
    /// least one second.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::{RetryBudget, RetryBudgetConfig};
    /// let budget = RetryBudget::new(RetryBudgetConfig { ratio: 0.2, min_per_second: 5, ttl: Duration::from_secs(10) });
    /// assert_eq!(budget.available(), 50); // the reserve: 5 per second over 10 s
    /// ```
    pub fn new(config: RetryBudgetConfig) -> Self {
        let ratio = if config.ratio.is_finite() && config.ratio > 0.0 {
            config.ratio
        } else {
            0.0
        };
        let seconds = config.ttl.as_secs().clamp(1, 3600);
        Self {
            inner: Arc::new(Inner {
                deposit: (ratio * SCALE as f64).round() as i64,
                reserve: i64::from(config.min_per_second)
                    .saturating_mul(seconds as i64)
                    .saturating_mul(SCALE),
                epoch: Instant::now(),
                head: AtomicU64::new(0),
                buckets: (0..seconds).map(|_| AtomicI64::new(0)).collect(),
                balance: AtomicI64::new(0),
            }),
        }
    }

    fn bucket(&self, second: u64) -> &AtomicI64 {
        let b = &self.inner.buckets;
        &b[(second % b.len() as u64) as usize]
    }

    fn now_sec(&self) -> u64 {
        self.second_of(Instant::now())
    }

    /// Moves the window to the second of `at` and returns that second.
    fn second_of(&self, at: Instant) -> u64 {
        let inner = &self.inner;
        let now = at.saturating_duration_since(inner.epoch).as_secs();
        let len = inner.buckets.len() as u64;
        let mut head = inner.head.load(Ordering::Acquire);
        while now > head {
            match inner
                .head
                .compare_exchange_weak(head, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let first = (head + 1).max(now.saturating_sub(len - 1));
                    for second in first..=now {
                        let old = self.bucket(second).swap(0, Ordering::AcqRel);
                        if old != 0 {
                            inner.balance.fetch_sub(old, Ordering::AcqRel);
                        }
                    }
                    break;
                }
                Err(actual) => head = actual,
            }
        }
        now
    }

    /// Earns tokens for one first attempt that needed no retry.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::{RetryBudget, RetryBudgetConfig};
    /// let budget = RetryBudget::new(RetryBudgetConfig { ratio: 0.5, min_per_second: 0, ttl: Duration::from_secs(10) });
    /// budget.deposit();
    /// assert_eq!(budget.available(), 0); // half a retry
    /// budget.deposit();
    /// assert_eq!(budget.available(), 1);
    /// ```
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Deposits as of `at` (a time the caller already read, to spare a clock reading).
    pub(crate) fn deposit_at(&self, at: Instant) {
        let amount = self.inner.deposit;
        if amount == 0 {
            return;
        }
        let now = self.second_of(at);
        self.bucket(now).fetch_add(amount, Ordering::AcqRel);
        self.inner.balance.fetch_add(amount, Ordering::AcqRel);
    }

    /// Deposits for one successful first attempt, as a policy does on every call that needed
    /// no retry. Deposits are gathered per thread and moved into the budget `FLUSH_EVERY` at a
    /// time (one clock reading, two shared additions), or before this thread withdraws from
    /// or reads the budget. They are counted in the second of the first deposit of the group,
    /// so they may expire early, never late: the budget other threads see can only be smaller
    /// than the exact one, by at most `FLUSH_EVERY - 1` deposits per thread.
    pub(crate) fn deposit_cheap(&self) {
        if self.inner.deposit == 0 {
            return;
        }
        let full = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            match &mut *p {
                Some(pending) if Arc::ptr_eq(&pending.budget.inner, &self.inner) => {
                    pending.count += 1;
                    (pending.count >= FLUSH_EVERY).then(|| p.take()).flatten()
                }
                other => other.replace(Pending {
                    budget: self.clone(),
                    count: 1,
                    second: self.inner.head.load(Ordering::Acquire),
                }),
            }
        });
        if let Some(pending) = full {
            pending.flush();
        }
    }

    /// Moves this thread's gathered deposits for this budget into it.
    fn flush_own(&self) {
        let own = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            match &*p {
                Some(pending) if Arc::ptr_eq(&pending.budget.inner, &self.inner) => p.take(),
                _ => None,
            }
        });
        if let Some(pending) = own {
            pending.flush();
        }
    }

    /// Spends one retry; `false` (and nothing spent) when the budget is exhausted.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::retry::{RetryBudget, RetryBudgetConfig};
    /// let budget = RetryBudget::new(RetryBudgetConfig { ratio: 0.2, min_per_second: 1, ttl: Duration::from_secs(2) });
    /// assert!(budget.withdraw());
    /// assert!(budget.withdraw());
    /// assert!(!budget.withdraw()); // the reserve of 2 is spent
    /// ```
    pub fn withdraw(&self) -> bool {
        self.flush_own();
        let now = self.now_sec();
        let inner = &self.inner;
        let before = inner.balance.fetch_sub(SCALE, Ordering::AcqRel);
        if before + inner.reserve < SCALE {
            inner.balance.fetch_add(SCALE, Ordering::AcqRel);
            return false;
        }
        self.bucket(now).fetch_sub(SCALE, Ordering::AcqRel);
        true
    }

    /// Retries that could be made now (rounded down).
    ///
    /// ```
    /// use archon_client::retry::{RetryBudget, RetryBudgetConfig};
    /// let budget = RetryBudget::new(RetryBudgetConfig::default());
    /// assert_eq!(budget.available(), 100);
    /// assert!(budget.withdraw());
    /// assert_eq!(budget.available(), 99);
    /// ```
    pub fn available(&self) -> u64 {
        self.flush_own();
        self.now_sec();
        let total = self.inner.balance.load(Ordering::Acquire) + self.inner.reserve;
        u64::try_from(total / SCALE).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ratio,
            min_per_second,
            ttl: Duration::from_secs(10),
        })
    }

    fn drain(b: &RetryBudget) -> u32 {
        let mut n = 0;
        while b.withdraw() {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_ratios_are_exact() {
        for (ratio, deposits, expected) in [
            (0.3, 1000, 300),
            (0.2, 1000, 200),
            (0.05, 1000, 50),
            (0.001, 1000, 1),
            (0.25, 10, 2),
            (1.5, 10, 15),
            (0.0, 1000, 0),
        ] {
            let b = budget(ratio, 0);
            for _ in 0..deposits {
                b.deposit();
            }
            assert_eq!(drain(&b), expected, "ratio {ratio}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_min_per_second_over_the_window() {
        let b = budget(0.2, 3);
        assert_eq!(b.available(), 30);
        assert_eq!(drain(&b), 30);
        // Withdrawals expire with the window, freeing the reserve again.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(drain(&b), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 0);
    }
}
