//! The shared breaker: state machine, windows, probes, events.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::clock::{SlowAt, SlowClock};
use super::config::{CircuitBreakerConfig, InvalidConfig, WindowType};
use super::error::CircuitOpen;
use super::window::{
    Code, CountWindow, MAX_STRIPES, Padded, Snapshot, Stripe, TimeWindow, Window, thread_index,
};
use crate::classify::Outcome;

/// The state of a circuit breaker.
///
/// ```
/// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitState};
/// let breaker = CircuitBreakerHandle::new("inventory", Default::default()).unwrap();
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// breaker.force_open();
/// assert_eq!(breaker.state(), CircuitState::ForcedOpen);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls flow; outcomes are recorded and may open the breaker.
    Closed,
    /// Calls are rejected until the wait is over.
    Open,
    /// A fixed number of probe calls decide between closed and open.
    HalfOpen,
    /// Always rejects, until reset by hand.
    ForcedOpen,
    /// Always admits and records nothing.
    Disabled,
    /// Always admits and records, but never opens.
    MetricsOnly,
}

impl CircuitState {
    const ALL: [Self; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::ForcedOpen,
        Self::Disabled,
        Self::MetricsOnly,
    ];

    const fn code(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
            Self::ForcedOpen => 3,
            Self::Disabled => 4,
            Self::MetricsOnly => 5,
        }
    }

    fn from_code(code: u64) -> Self {
        Self::ALL
            .get((code & STATE_MASK) as usize)
            .copied()
            .unwrap_or(Self::Closed)
    }

    /// Lower-case name (`"half_open"`), as used in metrics and logs.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitState;
    /// assert_eq!(CircuitState::HalfOpen.as_str(), "half_open");
    /// assert_eq!(CircuitState::ForcedOpen.to_string(), "forced_open"); // `Display` is the same
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, as given to the [`on_transition`](CircuitBreakerHandle::on_transition)
/// callback.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitState};
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let breaker = CircuitBreakerHandle::new("db", Default::default())
///     .unwrap()
///     .on_transition(move |t| log.lock().unwrap().push((t.from, t.to)));
/// breaker.force_open();
/// assert_eq!(*seen.lock().unwrap(), [(CircuitState::Closed, CircuitState::ForcedOpen)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateTransition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
    /// The generation of the new state (it grows by one on every transition).
    pub generation: u64,
}

type Callback = Arc<dyn Fn(&StateTransition) + Send + Sync>;

const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// Half-open probe counters packed into one word: admitted, completed, failures, slow (16 bits
/// each).
const PROBE_ADMITTED: u64 = 1;
const PROBE_COMPLETED: u64 = 1 << 16;
const PROBE_FAILED: u64 = 1 << 32;
const PROBE_SLOW: u64 = 1 << 48;

/// Whether the state in `word` admits every call without further checks (closed, disabled,
/// metrics only).
#[inline]
fn admits_every_call(word: u64) -> bool {
    const CLOSED: u64 = CircuitState::Closed.code();
    const DISABLED: u64 = CircuitState::Disabled.code();
    const METRICS_ONLY: u64 = CircuitState::MetricsOnly.code();
    matches!(word & STATE_MASK, CLOSED | DISABLED | METRICS_ONLY)
}

fn probe_field(word: u64, unit: u64) -> u64 {
    (word / unit) & 0xFFFF
}

fn percent_to_ppm(percent: f64) -> u64 {
    // Validated to (0, 100], so the result is in (0, 1_000_000].
    (percent * 10_000.0).round() as u64
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

struct Shared {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    failure_ppm: u64,
    slow_ppm: u64,
    /// A call is slow when it takes at least this long; zero: slow-call detection off.
    slow_duration: Duration,
    /// The clock that times calls (see the clock module).
    slow_clock: SlowClock,
    minimum_calls: u64,
    /// State in the low 3 bits, generation above. Read on every call, written on transitions
    /// only: kept away from the window's counters.
    word: Padded<AtomicU64>,
    window: Window,
    /// Per-thread-group batches of outcomes (see the window module).
    stripes: Box<[Padded<Stripe>]>,
    probes: AtomicU64,
    /// Nanoseconds since `epoch` when the current state was entered.
    since: AtomicU64,
    /// Nanoseconds the current open state lasts.
    open_for: AtomicU64,
    /// Consecutive openings without closing in between.
    openings: AtomicU32,
    epoch: Instant,
    transition_lock: Mutex<()>,
    callback: OnceLock<Callback>,
    /// Tasks waiting for the breaker to admit again (see `wake_on_change`): woken on every
    /// transition and whenever a half-open probe slot is freed. Cold paths only.
    waiters: Mutex<Vec<std::task::Waker>>,
    metrics: Metrics,
}

struct Metrics {
    success: metrics::Counter,
    failure: metrics::Counter,
    slow: metrics::Counter,
    ignored: metrics::Counter,
    rejected: metrics::Counter,
    /// One gauge per state, indexed by its code.
    states: [metrics::Gauge; CircuitState::ALL.len()],
}

impl Metrics {
    fn new(name: &Arc<str>) -> Self {
        use crate::metric_names as n;
        let calls = |outcome: &'static str| {
            metrics::counter!(
                n::BREAKER_CALLS,
                n::POLICY_NAME => name.to_string(),
                n::BREAKER_OUTCOME => outcome
            )
        };
        Self {
            success: calls("success"),
            failure: calls("failure"),
            slow: calls("slow"),
            ignored: calls("ignored"),
            rejected: metrics::counter!(n::BREAKER_REJECTED_CALLS, n::POLICY_NAME => name.to_string()),
            states: CircuitState::ALL.map(|state| {
                metrics::gauge!(
                    n::BREAKER_STATE,
                    n::POLICY_NAME => name.to_string(),
                    n::BREAKER_STATE_LABEL => state.as_str()
                )
            }),
        }
    }

    /// 1 for `current`, 0 for every other state.
    fn set_state(&self, current: CircuitState) {
        for (state, gauge) in CircuitState::ALL.iter().zip(&self.states) {
            gauge.set(if *state == current { 1.0 } else { 0.0 });
        }
    }
}

/// A circuit breaker shared by every service it guards: the state machine, its window and
/// its controls. Cheap to clone (an `Arc`).
///
/// Use it through [`CircuitBreakerLayer`](super::CircuitBreakerLayer), or by hand with
/// [`try_acquire`](Self::try_acquire) and [`Permit::record`] around any call.
///
/// ```
/// use archon_client::Outcome;
/// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
/// let cfg = CircuitBreakerConfig::default().count_window(4).minimum_calls(4);
/// let breaker = CircuitBreakerHandle::new("payments", cfg).unwrap();
/// for _ in 0..4 {
///     let permit = breaker.try_acquire().unwrap();
///     permit.record(Outcome::Failure);
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(breaker.try_acquire().is_err());
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    outer: Arc<Outer>,
}

/// What a handle points to: the breaker and one token per stripe.
struct Outer {
    shared: Arc<Shared>,
    tokens: Box<[Arc<Token>]>,
}

/// A permit's way back to its breaker. Each token is its own allocation on its own cache
/// lines and a thread takes the token of its own index, so permits taken on different threads
/// touch no common reference count.
#[repr(align(128))]
struct Token {
    shared: Arc<Shared>,
}

/// Stripes per breaker: twice the cores, a power of two, between 4 and `MAX_STRIPES` (64)
/// (computed once). Threads beyond that many record straight into the shared window.
fn stripe_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .clamp(4, MAX_STRIPES)
            .next_power_of_two()
    })
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.outer.shared.name)
            .field("state", &self.state())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// Rates over the current window, from [`CircuitBreakerHandle::metrics`].
///
/// ```
/// let breaker = archon_client::circuit_breaker::CircuitBreakerHandle::new("x", Default::default()).unwrap();
/// assert_eq!(breaker.metrics().calls, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct WindowMetrics {
    /// Calls recorded in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failure rate in percent (0 when the window is empty).
    pub failure_rate: f64,
    /// Slow-call rate in percent (0 when the window is empty).
    pub slow_call_rate: f64,
}

/// Leave to make one call through the breaker. Record the outcome with [`Permit::record`];
/// dropping it unrecorded means the call was cancelled, which counts neither as success nor as
/// failure (and gives a half-open probe slot back).
///
/// ```
/// use archon_client::{Outcome, circuit_breaker::CircuitBreakerHandle};
/// let breaker = CircuitBreakerHandle::new("x", Default::default()).unwrap();
/// let permit = breaker.try_acquire().unwrap();
/// permit.record(Outcome::Success);
/// assert_eq!(breaker.metrics().calls, 1);
/// ```
#[must_use = "record the outcome, or drop the permit if the call was cancelled"]
pub struct Permit {
    token: Arc<Token>,
    word: u64,
    /// When the call becomes slow (its start plus `slow_call_duration`), on the breaker's
    /// clock; `Never` when the breaker does not time calls (slow-call detection off).
    slow_at: SlowAt,
    done: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("state", &CircuitState::from_code(self.word))
            .field("generation", &(self.word >> STATE_BITS))
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Records the call's outcome, timed from when the permit was taken (not timed when
    /// slow-call detection is off).
    ///
    /// ```
    /// use archon_client::{Outcome, circuit_breaker::CircuitBreakerHandle};
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// breaker.try_acquire().unwrap().record(Outcome::Ignored); // counts as neither
    /// let m = breaker.metrics();
    /// assert_eq!((m.calls, m.failures), (1, 1));
    /// assert_eq!(m.failure_rate, 100.0);
    /// ```
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        // With tokio's clock, one reading gives both the slowness and the time-window second.
        let (slow, now) = self.slow_at.check();
        self.token.shared.record(self.word, outcome, slow, now);
    }

    /// Records the outcome with an explicit duration (for callers timing calls themselves).
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
    /// let cfg = CircuitBreakerConfig::default().slow_calls(50.0, Duration::from_secs(1));
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// let permit = breaker.try_acquire().unwrap();
    /// permit.record_with_duration(Outcome::Success, Duration::from_secs(2));
    /// let m = breaker.metrics();
    /// assert_eq!((m.calls, m.failures, m.slow_calls), (1, 0, 1));
    /// ```
    pub fn record_with_duration(mut self, outcome: Outcome, elapsed: Duration) {
        self.done = true;
        let shared = &self.token.shared;
        let slow = !shared.slow_duration.is_zero() && elapsed >= shared.slow_duration;
        shared.record(self.word, outcome, slow, None);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.token.shared.cancelled(self.word);
        }
    }
}

impl CircuitBreakerHandle {
    /// A new breaker, closed, named `name` in metrics and logs.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let breaker = CircuitBreakerHandle::new("inventory", CircuitBreakerConfig::default()).unwrap();
    /// assert_eq!(breaker.state(), CircuitState::Closed);
    /// let bad = CircuitBreakerConfig::default().permitted_calls_in_half_open(0);
    /// let err = CircuitBreakerHandle::new("inventory", bad).unwrap_err();
    /// assert_eq!(err.field(), "permitted_calls_in_half_open");
    /// ```
    ///
    /// # Errors
    /// [`InvalidConfig`] when a setting is out of range.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self::from_valid(name.into(), config))
    }

    /// A breaker from a configuration already validated.
    pub(crate) fn from_valid(name: Arc<str>, config: CircuitBreakerConfig) -> Self {
        let window = match config.window_type {
            WindowType::Count => Window::Count(CountWindow::new(config.window_size)),
            WindowType::Time => Window::Time(TimeWindow::new(config.window_size)),
        };
        let metrics = Metrics::new(&name);
        metrics.set_state(CircuitState::Closed);
        let stripes = stripe_count();
        let shared = Arc::new(Shared {
            failure_ppm: percent_to_ppm(config.failure_rate_threshold),
            slow_ppm: percent_to_ppm(config.slow_call_rate_threshold),
            slow_duration: config.slow_call_duration,
            slow_clock: SlowClock::for_duration(config.slow_call_duration),
            minimum_calls: config.effective_minimum_calls(),
            name,
            config,
            word: Padded(AtomicU64::new(CircuitState::Closed.code())),
            window,
            stripes: (0..stripes).map(|_| Padded(Stripe::new())).collect(),
            probes: AtomicU64::new(0),
            since: AtomicU64::new(0),
            open_for: AtomicU64::new(0),
            openings: AtomicU32::new(0),
            epoch: Instant::now(),
            transition_lock: Mutex::new(()),
            callback: OnceLock::new(),
            waiters: Mutex::new(Vec::new()),
            metrics,
        });
        let tokens = (0..stripes)
            .map(|_| {
                Arc::new(Token {
                    shared: shared.clone(),
                })
            })
            .collect();
        Self {
            outer: Arc::new(Outer { shared, tokens }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.outer.shared
    }

    /// Calls `callback` on every state transition (after the new state is in force). A breaker
    /// has one callback: the first one set stays.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use archon_client::circuit_breaker::CircuitBreakerHandle;
    /// let count = Arc::new(AtomicUsize::new(0));
    /// let counter = count.clone();
    /// let breaker = CircuitBreakerHandle::new("db", Default::default())
    ///     .unwrap()
    ///     .on_transition(move |_| {
    ///         counter.fetch_add(1, Ordering::SeqCst);
    ///     })
    ///     .on_transition(|_| unreachable!("the first callback stays"));
    /// breaker.force_open();
    /// breaker.reset();
    /// assert_eq!(count.load(Ordering::SeqCst), 2);
    /// ```
    #[must_use]
    pub fn on_transition(
        self,
        callback: impl Fn(&StateTransition) + Send + Sync + 'static,
    ) -> Self {
        let _ = self.shared().callback.set(Arc::new(callback));
        self
    }

    /// The breaker's name.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerHandle;
    /// let breaker = CircuitBreakerHandle::new("inventory", Default::default()).unwrap();
    /// assert_eq!(breaker.name(), "inventory");
    /// ```
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// The settings in force.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
    /// let cfg = CircuitBreakerConfig::default().count_window(20);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg.clone()).unwrap();
    /// assert_eq!(breaker.config(), &cfg);
    /// assert_eq!(breaker.config().window_size, 20);
    /// ```
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.shared().config
    }

    /// The current state. An open breaker whose wait is over still reports `Open` until the
    /// next call moves it to half-open.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let cfg = CircuitBreakerConfig::default()
    ///     .count_window(1)
    ///     .wait_in_open(Duration::ZERO)
    ///     .permitted_calls_in_half_open(1);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// assert_eq!(breaker.state(), CircuitState::Open); // the wait is over, but no call came yet
    /// let probe = breaker.try_acquire().unwrap();
    /// assert_eq!(breaker.state(), CircuitState::HalfOpen);
    /// probe.record(Outcome::Success);
    /// assert_eq!(breaker.state(), CircuitState::Closed);
    /// ```
    pub fn state(&self) -> CircuitState {
        CircuitState::from_code(self.shared().word.load(Ordering::Acquire))
    }

    /// The generation: grows by one on every transition.
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerHandle;
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let start = breaker.generation();
    /// breaker.force_open();
    /// breaker.reset();
    /// assert_eq!(breaker.generation(), start + 2);
    /// ```
    pub fn generation(&self) -> u64 {
        self.shared().word.load(Ordering::Acquire) >> STATE_BITS
    }

    /// How long the breaker still rejects every call: the remaining wait when open,
    /// `Duration::MAX` when forced open, `None` when it admits calls (closed, half-open,
    /// disabled, metrics only, or open with its wait over).
    ///
    /// ```
    /// let breaker = archon_client::circuit_breaker::CircuitBreakerHandle::new("x", Default::default()).unwrap();
    /// assert_eq!(breaker.open_remaining(), None);
    /// breaker.force_open();
    /// assert_eq!(breaker.open_remaining(), Some(std::time::Duration::MAX));
    /// ```
    pub fn open_remaining(&self) -> Option<Duration> {
        let shared = self.shared();
        match CircuitState::from_code(shared.word.load(Ordering::Acquire)) {
            CircuitState::ForcedOpen => Some(Duration::MAX),
            CircuitState::Open => {
                let until = shared
                    .since
                    .load(Ordering::Relaxed)
                    .saturating_add(shared.open_for.load(Ordering::Relaxed));
                let now = shared.now_nanos();
                (now < until).then(|| Duration::from_nanos(until - now))
            }
            _ => None,
        }
    }

    /// Whether a call made now would be admitted, without taking a permit or a probe slot
    /// and without counting a rejection: `false` while open (wait not over), forced open, or
    /// half-open with every probe slot taken. A balancer asks this to route around an
    /// endpoint whose breaker would reject the call.
    ///
    /// Like [`try_acquire`](Self::try_acquire), it moves a breaker that has stayed half-open
    /// longer than `max_wait_in_half_open` to open.
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
    /// let cfg = CircuitBreakerConfig::default().permitted_calls_in_half_open(1);
    /// let breaker = CircuitBreakerHandle::new("inventory", cfg).unwrap();
    /// assert!(breaker.admits_now());
    /// breaker.force_open();
    /// assert!(!breaker.admits_now());
    /// breaker.reset();
    /// let permit = breaker.try_acquire().unwrap();
    /// assert!(breaker.admits_now()); // closed: asking takes nothing
    /// # drop(permit);
    /// ```
    pub fn admits_now(&self) -> bool {
        self.shared().admits_now()
    }

    /// Wakes `waker` on the breaker's next transition or freed half-open probe slot (once).
    pub(crate) fn wake_on_change(&self, waker: &std::task::Waker) {
        let mut waiters = match self.shared().waiters.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    /// Rates over the current window.
    ///
    /// ```
    /// use archon_client::{Outcome, circuit_breaker::CircuitBreakerHandle};
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// for outcome in [Outcome::Success, Outcome::Success, Outcome::Success, Outcome::Failure] {
    ///     breaker.try_acquire().unwrap().record(outcome);
    /// }
    /// let m = breaker.metrics();
    /// assert_eq!((m.calls, m.failures), (4, 1));
    /// assert_eq!(m.failure_rate, 25.0);
    /// ```
    pub fn metrics(&self) -> WindowMetrics {
        let shared = self.shared();
        let word = shared.word.load(Ordering::Acquire);
        let s = shared
            .window
            .snapshot(&shared.stripes, word, shared.now_sec());
        let rate = |n: u64| {
            if s.calls == 0 {
                0.0
            } else {
                n as f64 * 100.0 / s.calls as f64
            }
        };
        WindowMetrics {
            calls: s.calls,
            failures: s.failures,
            slow_calls: s.slow,
            failure_rate: rate(s.failures),
            slow_call_rate: rate(s.slow),
        }
    }

    /// Asks to make a call: a [`Permit`] when admitted, else [`CircuitOpen`] with the remaining
    /// wait. Never allocates; in the closed state it is one atomic load.
    ///
    /// ```
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitState};
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// let permit = breaker.try_acquire().unwrap();
    /// // ... make the call, then:
    /// permit.record(Outcome::Success);
    /// breaker.force_open();
    /// assert_eq!(breaker.try_acquire().unwrap_err().state(), CircuitState::ForcedOpen);
    /// ```
    ///
    /// # Errors
    /// [`CircuitOpen`] while open, forced open, or half-open with every probe slot taken.
    #[inline(always)]
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        let shared = self.shared();
        let word = shared.word.load(Ordering::Acquire);
        // Closed, disabled and metrics-only admit every call: the one load above is all.
        let word = if admits_every_call(word) {
            word
        } else {
            shared.admit()?
        };
        let tokens = &self.outer.tokens;
        Ok(Permit {
            // `tokens.len()` is a power of two.
            token: tokens[thread_index() & (tokens.len() - 1)].clone(),
            word,
            slow_at: shared.slow_at(),
            done: false,
        })
    }

    /// Rejects every call until [`reset`](Self::reset).
    ///
    /// ```
    /// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitState};
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// breaker.force_open();
    /// assert_eq!(breaker.state(), CircuitState::ForcedOpen);
    /// assert!(breaker.try_acquire().is_err());
    /// breaker.reset();
    /// assert!(breaker.try_acquire().is_ok());
    /// ```
    pub fn force_open(&self) {
        self.shared().force(CircuitState::ForcedOpen);
    }

    /// Admits every call and records nothing until [`reset`](Self::reset).
    ///
    /// ```
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let cfg = CircuitBreakerConfig::default().count_window(1);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.disable();
    /// for _ in 0..3 {
    ///     breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// }
    /// assert_eq!(breaker.state(), CircuitState::Disabled);
    /// assert_eq!(breaker.metrics().calls, 0);
    /// ```
    pub fn disable(&self) {
        self.shared().force(CircuitState::Disabled);
    }

    /// Admits every call and records outcomes, but never opens, until [`reset`](Self::reset).
    ///
    /// ```
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState};
    /// let cfg = CircuitBreakerConfig::default().count_window(2);
    /// let breaker = CircuitBreakerHandle::new("svc", cfg).unwrap();
    /// breaker.metrics_only();
    /// for _ in 0..2 {
    ///     breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// }
    /// assert_eq!(breaker.state(), CircuitState::MetricsOnly); // would be open
    /// assert_eq!(breaker.metrics().failure_rate, 100.0);
    /// ```
    pub fn metrics_only(&self) {
        self.shared().force(CircuitState::MetricsOnly);
    }

    /// Back to closed with an empty window.
    ///
    /// ```
    /// use archon_client::Outcome;
    /// use archon_client::circuit_breaker::{CircuitBreakerHandle, CircuitState};
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// breaker.try_acquire().unwrap().record(Outcome::Failure);
    /// breaker.force_open();
    /// breaker.reset();
    /// assert_eq!(breaker.state(), CircuitState::Closed);
    /// assert_eq!(breaker.metrics().calls, 0);
    /// ```
    pub fn reset(&self) {
        self.shared().force(CircuitState::Closed);
    }

    /// Whether `other` is the same breaker (shared state).
    ///
    /// ```
    /// use archon_client::circuit_breaker::CircuitBreakerHandle;
    /// let breaker = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// assert!(breaker.same_as(&breaker.clone()));
    /// let namesake = CircuitBreakerHandle::new("svc", Default::default()).unwrap();
    /// assert!(!breaker.same_as(&namesake));
    /// ```
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.outer.shared, &other.outer.shared)
    }
}

impl Shared {
    fn now_nanos(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    fn now_sec(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Admission in any state (the closed fast path is in `try_acquire`).
    #[inline(never)]
    fn admit(&self) -> Result<u64, CircuitOpen> {
        loop {
            let word = self.word.load(Ordering::Acquire);
            let state = CircuitState::from_code(word);
            match state {
                CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::Disabled => {
                    return Ok(word);
                }
                CircuitState::ForcedOpen => {
                    self.metrics.rejected.increment(1);
                    return Err(CircuitOpen::new(state, None));
                }
                CircuitState::Open => {
                    let now = self.now_nanos();
                    let until = self
                        .since
                        .load(Ordering::Relaxed)
                        .saturating_add(self.open_for.load(Ordering::Relaxed));
                    if now >= until {
                        self.transition(word, CircuitState::HalfOpen);
                        continue;
                    }
                    self.metrics.rejected.increment(1);
                    return Err(CircuitOpen::new(
                        state,
                        Some(Duration::from_nanos(until - now)),
                    ));
                }
                CircuitState::HalfOpen => {
                    let permitted = u64::from(self.config.permitted_calls_in_half_open);
                    let mut probes = self.probes.load(Ordering::Acquire);
                    while probe_field(probes, PROBE_ADMITTED) < permitted {
                        match self.probes.compare_exchange_weak(
                            probes,
                            probes + PROBE_ADMITTED,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            // The probe counters belong to this half-open generation only if
                            // the state did not move meanwhile.
                            Ok(_) if self.word.load(Ordering::Acquire) == word => return Ok(word),
                            Ok(_) => break,
                            Err(actual) => probes = actual,
                        }
                    }
                    if self.word.load(Ordering::Acquire) != word || self.half_open_overstayed(word)
                    {
                        continue;
                    }
                    self.metrics.rejected.increment(1);
                    return Err(CircuitOpen::new(state, None));
                }
            }
        }
    }

    /// Whether the breaker, half-open in `word`, has stayed half-open longer than
    /// `max_wait_in_half_open` (0: no limit); it then moves to open, and the caller looks again.
    fn half_open_overstayed(&self, word: u64) -> bool {
        let max_wait = self.config.max_wait_in_half_open;
        if max_wait.is_zero() {
            return false;
        }
        let stayed = self
            .now_nanos()
            .saturating_sub(self.since.load(Ordering::Relaxed));
        if stayed < nanos(max_wait) {
            return false;
        }
        self.transition(word, CircuitState::Open);
        true
    }

    /// `admit` without taking a probe slot or counting a rejection.
    fn admits_now(&self) -> bool {
        loop {
            let word = self.word.load(Ordering::Acquire);
            match CircuitState::from_code(word) {
                CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::Disabled => {
                    return true;
                }
                CircuitState::ForcedOpen => return false,
                // With the wait over, the next call moves it to half-open, where every probe
                // slot is free (at least one is configured).
                CircuitState::Open => {
                    let until = self
                        .since
                        .load(Ordering::Relaxed)
                        .saturating_add(self.open_for.load(Ordering::Relaxed));
                    return self.now_nanos() >= until;
                }
                CircuitState::HalfOpen => {
                    let permitted = u64::from(self.config.permitted_calls_in_half_open);
                    if probe_field(self.probes.load(Ordering::Acquire), PROBE_ADMITTED) < permitted
                    {
                        return true;
                    }
                    if self.half_open_overstayed(word) {
                        continue;
                    }
                    return false;
                }
            }
        }
    }

    /// Wakes the tasks waiting in `wake_on_change`.
    fn wake_waiters(&self) {
        let waiters = match self.waiters.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for waker in waiters {
            waker.wake();
        }
    }

    /// The time-window second of `now` (read from the clock only when not given).
    fn second(&self, now: Option<Instant>) -> u64 {
        now.unwrap_or_else(Instant::now)
            .saturating_duration_since(self.epoch)
            .as_secs()
    }

    /// When a call starting now becomes slow.
    #[inline]
    fn slow_at(&self) -> SlowAt {
        self.slow_clock.slow_at(self.slow_duration)
    }

    #[inline]
    fn record(&self, word: u64, outcome: Outcome, slow: bool, now: Option<Instant>) {
        let state = CircuitState::from_code(word);
        if state == CircuitState::Disabled {
            return;
        }
        match outcome {
            Outcome::Success if slow => self.metrics.slow.increment(1),
            Outcome::Success => self.metrics.success.increment(1),
            Outcome::Failure => self.metrics.failure.increment(1),
            Outcome::Ignored => self.metrics.ignored.increment(1),
        }
        // A result from an earlier state (generation) says nothing about this one.
        if self.word.load(Ordering::Acquire) != word {
            return;
        }
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                if state == CircuitState::HalfOpen {
                    self.release_probe(word);
                }
                return;
            }
        };
        match state {
            CircuitState::Closed | CircuitState::MetricsOnly => {
                let code = Code::new(failure, slow);
                let stripe = self.stripes.get(thread_index()).map(|s| &s.0);
                let snap = match &self.window {
                    Window::Count(w) => w.record(stripe, word, code),
                    Window::Time(w) => Some(w.record(stripe, word, code, self.second(now))),
                };
                if state == CircuitState::Closed
                    && let Some(snap) = snap
                    && self.should_open(snap)
                {
                    self.transition(word, CircuitState::Open);
                }
            }
            CircuitState::HalfOpen => self.record_probe(word, failure, slow),
            _ => {}
        }
    }

    /// Records a half-open probe's outcome; the last probe decides closed or open.
    #[inline(never)]
    fn record_probe(&self, word: u64, failure: bool, slow: bool) {
        let add = PROBE_COMPLETED
            + if failure { PROBE_FAILED } else { 0 }
            + if slow { PROBE_SLOW } else { 0 };
        let probes = self.probes.fetch_add(add, Ordering::AcqRel) + add;
        let completed = probe_field(probes, PROBE_COMPLETED);
        if completed == u64::from(self.config.permitted_calls_in_half_open) {
            let snap = Snapshot {
                calls: completed,
                failures: probe_field(probes, PROBE_FAILED),
                slow: probe_field(probes, PROBE_SLOW),
            };
            let to = if self.rates_exceeded(snap) {
                CircuitState::Open
            } else {
                CircuitState::Closed
            };
            self.transition(word, to);
        }
    }

    fn cancelled(&self, word: u64) {
        if CircuitState::from_code(word) == CircuitState::HalfOpen
            && self.word.load(Ordering::Acquire) == word
        {
            self.release_probe(word);
        }
    }

    fn release_probe(&self, word: u64) {
        let freed = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (self.word.load(Ordering::Acquire) == word && probe_field(p, PROBE_ADMITTED) > 0)
                    .then(|| p - PROBE_ADMITTED)
            });
        if freed.is_ok() {
            self.wake_waiters();
        }
    }

    fn rates_exceeded(&self, s: Snapshot) -> bool {
        // Counts are below 2^42 (a second holds at most 2^21 calls, a window at most 3,600
        // seconds) and ppm at most 10^6, so the products fit in a u64.
        let calls = s.calls;
        s.failures.saturating_mul(1_000_000) >= self.failure_ppm.saturating_mul(calls)
            || s.slow.saturating_mul(1_000_000) >= self.slow_ppm.saturating_mul(calls)
    }

    fn should_open(&self, s: Snapshot) -> bool {
        s.calls >= self.minimum_calls && self.rates_exceeded(s)
    }

    fn force(&self, to: CircuitState) {
        loop {
            let word = self.word.load(Ordering::Acquire);
            if self.transition(word, to) {
                return;
            }
        }
    }

    /// Moves from the state `from_word` to `to`. Returns `false` when the state changed
    /// meanwhile (someone else made the transition).
    fn transition(&self, from_word: u64, to: CircuitState) -> bool {
        let generation;
        {
            let _guard = match self.transition_lock.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if self.word.load(Ordering::Acquire) != from_word {
                return false;
            }
            let now = self.now_nanos();
            match to {
                CircuitState::Open => {
                    let n = self.openings.fetch_add(1, Ordering::Relaxed) + 1;
                    let wait = self.config.wait_for_opening(n);
                    self.open_for.store(nanos(wait), Ordering::Relaxed);
                }
                CircuitState::HalfOpen => self.probes.store(0, Ordering::Release),
                CircuitState::Closed => {
                    self.openings.store(0, Ordering::Relaxed);
                    self.window.reset();
                }
                CircuitState::MetricsOnly => self.window.reset(),
                CircuitState::ForcedOpen | CircuitState::Disabled => {}
            }
            self.since.store(now, Ordering::Relaxed);
            generation = (from_word >> STATE_BITS) + 1;
            self.word
                .store((generation << STATE_BITS) | to.code(), Ordering::Release);
        }
        let from = CircuitState::from_code(from_word);
        self.metrics.set_state(to);
        metrics::counter!(
            crate::metric_names::BREAKER_TRANSITIONS,
            crate::metric_names::POLICY_NAME => self.name.to_string(),
            crate::metric_names::BREAKER_FROM_STATE => from.as_str(),
            crate::metric_names::BREAKER_TO_STATE => to.as_str()
        )
        .increment(1);
        tracing::info!(
            breaker = %self.name,
            from = from.as_str(),
            to = to.as_str(),
            generation,
            "circuit breaker state transition"
        );
        self.wake_waiters();
        if let Some(callback) = self.callback.get() {
            callback(&StateTransition {
                name: self.name.clone(),
                from,
                to,
                generation,
            });
        }
        true
    }
}
