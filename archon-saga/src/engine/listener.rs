//! Lifecycle hooks: told about every committed transition.

use crate::{HistoryEvent, SagaRecord};

/// Told about every committed saga transition of this engine (start, step completed, retry
/// scheduled, compensating, parked, completed, compensated, operator actions), after the
/// durable write.
///
/// This is the seam for publishing lifecycle events (e.g. through an archon-events
/// `Publisher`): keep `on_transition` quick and non-blocking (hand the event to a channel or
/// spawn), since it runs on the saga's task. A closure implements it.
///
/// ```
/// use std::sync::Arc;
/// use archon_saga::{Engine, HistoryEvent, MemoryStore, SagaRecord};
///
/// let engine = Engine::builder(Arc::new(MemoryStore::new()))
///     .listener(Arc::new(|saga: &SagaRecord, event: &HistoryEvent| {
///         tracing::info!(saga.id = %saga.id, event = %event.event, "saga transition");
///     }))
///     .build()
///     .unwrap();
/// ```
pub trait SagaListener: Send + Sync + 'static {
    /// Called after `event` was committed; `record` is the saga after it.
    fn on_transition(&self, record: &SagaRecord, event: &HistoryEvent);
}

impl<F> SagaListener for F
where
    F: Fn(&SagaRecord, &HistoryEvent) + Send + Sync + 'static,
{
    fn on_transition(&self, record: &SagaRecord, event: &HistoryEvent) {
        self(record, event);
    }
}
