//! Metric names and label keys, as registered in `archon_metrics::names` (OpenTelemetry-style;
//! the Prometheus exporter renders `archon.saga.started` as `archon_saga_started_total`).
//! archon-metrics' tests check that these stay in its registry.

pub(super) const SAGA_STARTED: &str = "archon.saga.started";
pub(super) const SAGA_EXECUTIONS: &str = "archon.saga.executions";
pub(super) const SAGA_STEP_RETRIES: &str = "archon.saga.step.retries";
pub(super) const SAGA_STEP_DURATION: &str = "archon.saga.step.duration";

pub(super) const SAGA_NAME: &str = "archon.saga.name";
pub(super) const STEP_NAME: &str = "archon.saga.step.name";
pub(super) const OUTCOME: &str = "archon.saga.outcome";
