//! Archon's own instruments, as small handle sets the other crates can keep: circuit breakers,
//! bulkheads, retries, sagas and the outbox. Each is made once (per policy or saga name) and
//! records without allocating for its fixed label sets; the names come from [`names`].
//!
//! Crates that prefer not to depend on archon-metrics record the same names through the
//! [`metrics`] facade directly; these types only save them the spelling.
//!
//! ```
//! use archon_metrics::policy::{BreakerState, CircuitBreakerMetrics};
//! let breaker = CircuitBreakerMetrics::new("payments");
//! breaker.transition(BreakerState::Closed, BreakerState::Open);
//! breaker.rejected();
//! ```

use metrics::{Counter, Gauge, Histogram, Label, SharedString};
use tracing::Span;
use tracing::field::Empty;

use crate::names::{self, attr};

fn policy_label(name: &SharedString) -> Label {
    Label::new(attr::ARCHON_POLICY_NAME, name.clone())
}

/// A circuit breaker state, as the `archon.circuit_breaker.state` label spells it.
///
/// ```
/// assert_eq!(archon_metrics::policy::BreakerState::HalfOpen.as_str(), "half_open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few trial calls are let through.
    HalfOpen,
    /// Always allows, records nothing.
    Disabled,
    /// Always rejects.
    ForcedOpen,
    /// Allows and records, never trips.
    MetricsOnly,
}

impl BreakerState {
    const ALL: [Self; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::ForcedOpen,
        Self::MetricsOnly,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Disabled => "disabled",
            Self::ForcedOpen => "forced_open",
            Self::MetricsOnly => "metrics_only",
        }
    }
}

/// `archon.circuit_breaker.*` for one breaker.
///
/// ```
/// use archon_metrics::policy::{BreakerState, CircuitBreakerMetrics};
/// let m = CircuitBreakerMetrics::new("inventory");
/// m.set_state(BreakerState::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerMetrics {
    name: SharedString,
    states: [Gauge; 6],
    rejected: Counter,
}

impl CircuitBreakerMetrics {
    /// Registers the breaker's series (create it after [`install`](crate::install)).
    pub fn new(name: impl Into<String>) -> Self {
        let name = crate::observe::shared(Into::<String>::into(name));
        let states = BreakerState::ALL.map(|state| {
            metrics::gauge!(
                names::ARCHON_CIRCUIT_BREAKER_STATE_GAUGE.name,
                vec![
                    policy_label(&name),
                    Label::from_static_parts(attr::ARCHON_CIRCUIT_BREAKER_STATE, state.as_str()),
                ]
            )
        });
        let rejected = metrics::counter!(
            names::ARCHON_CIRCUIT_BREAKER_REJECTED_CALLS.name,
            vec![policy_label(&name)]
        );
        Self {
            name,
            states,
            rejected,
        }
    }

    /// Sets the state gauge: 1 for `state`, 0 for the others.
    pub fn set_state(&self, state: BreakerState) {
        for (candidate, gauge) in BreakerState::ALL.iter().zip(&self.states) {
            gauge.set(if *candidate == state { 1.0 } else { 0.0 });
        }
    }

    /// Counts a transition and sets the state gauge to `to`.
    pub fn transition(&self, from: BreakerState, to: BreakerState) {
        metrics::counter!(
            names::ARCHON_CIRCUIT_BREAKER_TRANSITIONS.name,
            vec![
                policy_label(&self.name),
                Label::from_static_parts(attr::ARCHON_CIRCUIT_BREAKER_FROM_STATE, from.as_str()),
                Label::from_static_parts(attr::ARCHON_CIRCUIT_BREAKER_TO_STATE, to.as_str()),
            ]
        )
        .increment(1);
        self.set_state(to);
    }

    /// Counts a call rejected without being tried.
    pub fn rejected(&self) {
        self.rejected.increment(1);
    }
}

/// `archon.bulkhead.*` for one bulkhead.
///
/// ```
/// let m = archon_metrics::policy::BulkheadMetrics::new("db", 16);
/// m.acquired();
/// m.released();
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadMetrics {
    in_use: Gauge,
    rejected: Counter,
}

impl BulkheadMetrics {
    /// Registers the bulkhead's series and records its permit limit.
    pub fn new(name: impl Into<String>, limit: usize) -> Self {
        let name = crate::observe::shared(Into::<String>::into(name));
        metrics::gauge!(
            names::ARCHON_BULKHEAD_PERMITS_LIMIT.name,
            vec![policy_label(&name)]
        )
        .set(limit as f64);
        Self {
            in_use: metrics::gauge!(
                names::ARCHON_BULKHEAD_PERMITS_IN_USE.name,
                vec![policy_label(&name)]
            ),
            rejected: metrics::counter!(
                names::ARCHON_BULKHEAD_REJECTED_CALLS.name,
                vec![policy_label(&name)]
            ),
        }
    }

    /// A permit was taken.
    pub fn acquired(&self) {
        self.in_use.increment(1.0);
    }

    /// A permit was given back.
    pub fn released(&self) {
        self.in_use.decrement(1.0);
    }

    /// A call found no permit in time.
    pub fn rejected(&self) {
        self.rejected.increment(1);
    }
}

/// `archon.retry.*` for one retry policy.
///
/// ```
/// let m = archon_metrics::policy::RetryMetrics::new("orders-api");
/// m.retried();
/// m.budget_rejected();
/// ```
#[derive(Debug, Clone)]
pub struct RetryMetrics {
    retried: Counter,
    exhausted: Counter,
    succeeded: Counter,
    budget_rejected: Counter,
}

impl RetryMetrics {
    /// Registers the policy's series.
    pub fn new(name: impl Into<String>) -> Self {
        let name = crate::observe::shared(Into::<String>::into(name));
        let attempts = |outcome: &'static str| {
            metrics::counter!(
                names::ARCHON_RETRY_ATTEMPTS.name,
                vec![
                    policy_label(&name),
                    Label::from_static_parts(attr::ARCHON_RETRY_OUTCOME, outcome),
                ]
            )
        };
        Self {
            retried: attempts("retried"),
            exhausted: attempts("exhausted"),
            succeeded: attempts("succeeded"),
            budget_rejected: metrics::counter!(
                names::ARCHON_RETRY_BUDGET_REJECTIONS.name,
                vec![policy_label(&name)]
            ),
        }
    }

    /// A retry attempt was made and failed again (more may follow).
    pub fn retried(&self) {
        self.retried.increment(1);
    }

    /// The last allowed retry attempt failed.
    pub fn exhausted(&self) {
        self.exhausted.increment(1);
    }

    /// A retry attempt succeeded.
    pub fn succeeded(&self) {
        self.succeeded.increment(1);
    }

    /// The retry budget refused a retry.
    pub fn budget_rejected(&self) {
        self.budget_rejected.increment(1);
    }
}

/// How a saga or a step ended, as the `archon.saga.outcome` label spells it.
///
/// ```
/// assert_eq!(archon_metrics::policy::SagaOutcome::Compensated.as_str(), "compensated");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SagaOutcome {
    /// Every step succeeded (saga), or the step succeeded.
    Completed,
    /// It failed and was compensated.
    Compensated,
    /// It stopped and waits for an operator (a compensation or a step after the pivot kept
    /// failing): archon-saga's `Parked`.
    Parked,
}

impl SagaOutcome {
    const ALL: [Self; 3] = [Self::Completed, Self::Compensated, Self::Parked];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Parked => "parked",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Completed => 0,
            Self::Compensated => 1,
            Self::Parked => 2,
        }
    }
}

/// `archon.saga.*` for one saga type.
///
/// ```
/// use archon_metrics::policy::{SagaMetrics, SagaOutcome};
/// let m = SagaMetrics::new("checkout");
/// m.step("reserve-stock", SagaOutcome::Completed, 0.012);
/// m.finished(SagaOutcome::Completed, 0.2);
/// ```
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    name: SharedString,
    executions: [Counter; 3],
    durations: [Histogram; 3],
}

impl SagaMetrics {
    /// Registers the saga's series.
    pub fn new(name: impl Into<String>) -> Self {
        let name = crate::observe::shared(Into::<String>::into(name));
        let labels = |outcome: SagaOutcome| {
            vec![
                Label::new(attr::ARCHON_SAGA_NAME, name.clone()),
                Label::from_static_parts(attr::ARCHON_SAGA_OUTCOME, outcome.as_str()),
            ]
        };
        Self {
            executions: SagaOutcome::ALL
                .map(|o| metrics::counter!(names::ARCHON_SAGA_EXECUTIONS.name, labels(o))),
            durations: SagaOutcome::ALL
                .map(|o| metrics::histogram!(names::ARCHON_SAGA_DURATION.name, labels(o))),
            name,
        }
    }

    /// A saga finished after `seconds`.
    pub fn finished(&self, outcome: SagaOutcome, seconds: f64) {
        self.executions[outcome.index()].increment(1);
        self.durations[outcome.index()].record(seconds);
    }

    /// A span for one execution of the saga, `saga {name}`, child of the current span. Record
    /// the outcome on it with `span.record("archon.saga.outcome", outcome.as_str())`.
    ///
    /// ```
    /// let m = archon_metrics::policy::SagaMetrics::new("checkout");
    /// let span = m.span("saga-42");
    /// let _step = span.in_scope(|| m.step_span("reserve-stock"));
    /// ```
    pub fn span(&self, saga_id: &str) -> Span {
        let span = tracing::info_span!(
            target: "archon_metrics::saga",
            "saga",
            otel.name = %format_args!("saga {}", self.name),
            otel.kind = "internal",
            archon.saga.name = &*self.name,
            archon.saga.id = saga_id,
            archon.saga.outcome = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        crate::otel::record_ids(&span);
        span
    }

    /// A span for one step (or compensation) of the saga, `saga {name} {step}`, child of the
    /// current span (normally [`span`](Self::span)).
    pub fn step_span(&self, step: &str) -> Span {
        let span = tracing::info_span!(
            target: "archon_metrics::saga",
            "saga step",
            otel.name = %format_args!("saga {} {step}", self.name),
            otel.kind = "internal",
            archon.saga.name = &*self.name,
            archon.saga.step.name = step,
            archon.saga.outcome = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        crate::otel::record_ids(&span);
        span
    }

    /// A step (or its compensation, with outcome `Compensated`) took `seconds`.
    pub fn step(&self, step: &str, outcome: SagaOutcome, seconds: f64) {
        metrics::histogram!(
            names::ARCHON_SAGA_STEP_DURATION.name,
            vec![
                Label::new(attr::ARCHON_SAGA_NAME, self.name.clone()),
                Label::new(attr::ARCHON_SAGA_STEP_NAME, step.to_owned()),
                Label::from_static_parts(attr::ARCHON_SAGA_OUTCOME, outcome.as_str()),
            ]
        )
        .record(seconds);
    }
}

/// `archon.outbox.*` for one outbox.
///
/// ```
/// let m = archon_metrics::policy::OutboxMetrics::new("orders");
/// m.set(3, 0.25);
/// ```
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    lag: Gauge,
    pending: Gauge,
}

impl OutboxMetrics {
    /// Registers the outbox's series.
    pub fn new(name: impl Into<String>) -> Self {
        let name = crate::observe::shared(Into::<String>::into(name));
        Self {
            lag: metrics::gauge!(names::ARCHON_OUTBOX_LAG.name, vec![policy_label(&name)]),
            pending: metrics::gauge!(
                names::ARCHON_OUTBOX_PENDING_MESSAGES.name,
                vec![policy_label(&name)]
            ),
        }
    }

    /// Sets the number of entries waiting and the age of the oldest, in seconds (0 when empty).
    pub fn set(&self, pending: u64, oldest_age_seconds: f64) {
        self.pending.set(pending as f64);
        self.lag.set(oldest_age_seconds);
    }
}
