//! Lifecycle events: every committed transition, published as a CloudEvent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use archon_events::{Envelope, Publisher};
use tokio::sync::mpsc;

use crate::{HistoryEvent, SagaListener, SagaRecord};

/// How many lifecycle events may wait for the publisher before new ones are dropped.
const QUEUE: usize = 1_024;

/// Publishes each committed saga transition to `topic` as a CloudEvent of type
/// `archon.saga.<transition>.v1` (e.g. `archon.saga.step_completed.v1`), subject = saga id,
/// JSON data with the saga's name, version, status, step, attempt and error.
///
/// Publishing happens on a background task fed by a bounded queue, so a slow broker never
/// holds a saga up; when the queue is full the event is dropped and counted
/// ([`dropped`](Self::dropped)) and a warning logged. Lifecycle events are notifications, not
/// the source of truth: the store is. Must be created inside a Tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_saga::Result<()> {
/// use std::sync::Arc;
/// use archon_events::MemoryBus;
/// use archon_saga::{Engine, MemoryStore, events::LifecycleEvents};
///
/// let lifecycle = LifecycleEvents::new(Arc::new(MemoryBus::new()), "sagas.lifecycle", "/orders");
/// let engine = Engine::builder(Arc::new(MemoryStore::new()))
///     .listener(Arc::new(lifecycle))
///     .build()?;
/// # drop(engine); Ok(()) }
/// ```
#[derive(Debug)]
pub struct LifecycleEvents {
    queue: mpsc::Sender<Envelope>,
    source: String,
    dropped: Arc<AtomicU64>,
}

impl LifecycleEvents {
    /// Publishes to `topic` through `publisher`, with `source` as the events' CloudEvents source.
    pub fn new(
        publisher: Arc<dyn Publisher>,
        topic: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        let (queue, mut events) = mpsc::channel::<Envelope>(QUEUE);
        let topic = topic.into();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Err(error) = publisher.publish(&topic, event).await {
                    tracing::warn!(%error, topic = %topic, "saga lifecycle event not published");
                }
            }
        });
        Self {
            queue,
            source: source.into(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Events dropped because the publisher could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl SagaListener for LifecycleEvents {
    fn on_transition(&self, record: &SagaRecord, event: &HistoryEvent) {
        let data = serde_json::json!({
            "saga_id": record.id,
            "saga": record.name,
            "version": record.version,
            "status": record.status,
            "transition": event.event,
            "step": event.step,
            "attempt": event.attempt,
            "error": event.error,
            "at_ms": event.at,
        });
        let built = Envelope::builder(
            self.source.clone(),
            format!("archon.saga.{}.v1", event.event),
        )
        .subject(record.id.to_string())
        .partition_key(record.id.to_string())
        .current_metadata()
        .data("application/json", data.to_string())
        .build();
        let envelope = match built {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(%error, "saga lifecycle event could not be built");
                return;
            }
        };
        if self.queue.try_send(envelope).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(saga.id = %record.id, "saga lifecycle queue full; event dropped");
        }
    }
}
