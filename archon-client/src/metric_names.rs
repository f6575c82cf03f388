//! Metric names and label keys, as registered in `archon_metrics::names` (OpenTelemetry-style;
//! the Prometheus exporter renders `archon.retry.attempts` as `archon_retry_attempts_total`).
//! archon-metrics' tests check that these stay in its registry.

pub(crate) const BREAKER_CALLS: &str = "archon.circuit_breaker.calls";
pub(crate) const BREAKER_REJECTED_CALLS: &str = "archon.circuit_breaker.rejected.calls";
pub(crate) const BREAKER_STATE: &str = "archon.circuit_breaker.state";
pub(crate) const BREAKER_TRANSITIONS: &str = "archon.circuit_breaker.transitions";
pub(crate) const BULKHEAD_PERMITS_IN_USE: &str = "archon.bulkhead.permits.in_use";
pub(crate) const BULKHEAD_PERMITS_LIMIT: &str = "archon.bulkhead.permits.limit";
pub(crate) const BULKHEAD_REJECTED_CALLS: &str = "archon.bulkhead.rejected.calls";
pub(crate) const RETRY_ATTEMPTS: &str = "archon.retry.attempts";
pub(crate) const RETRY_BUDGET_REJECTIONS: &str = "archon.retry.budget.rejections";
pub(crate) const HEDGE_ATTEMPTS: &str = "archon.hedge.attempts";

/// The breaker, bulkhead or policy name.
pub(crate) const POLICY_NAME: &str = "archon.policy.name";
/// `success`, `failure`, `slow`, `ignored`.
pub(crate) const BREAKER_OUTCOME: &str = "archon.circuit_breaker.outcome";
/// One series per state: 1 for the current one, 0 for the others.
pub(crate) const BREAKER_STATE_LABEL: &str = "archon.circuit_breaker.state";
pub(crate) const BREAKER_FROM_STATE: &str = "archon.circuit_breaker.from_state";
pub(crate) const BREAKER_TO_STATE: &str = "archon.circuit_breaker.to_state";
