//! What a handler knows about the event it handles.

use std::sync::{Arc, OnceLock};

use archon_core::context::Metadata;

use crate::Envelope;

/// The event being handled and where it came from. Cheap to clone.
///
/// ```
/// use archon_events::router::EventContext;
/// use archon_events::Envelope;
/// let event = Envelope::builder("/a", "t.v1").build()?;
/// let ctx = EventContext::new(event.into(), "orders", "billing", "bill", 1);
/// assert_eq!(ctx.topic(), "orders");
/// assert_eq!(ctx.follow_up_metadata().causation_id.as_deref(), Some(ctx.envelope().id()));
/// # Ok::<(), archon_events::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EventContext {
    envelope: Arc<Envelope>,
    topic: Arc<str>,
    group: Arc<str>,
    handler: Arc<str>,
    attempt: u32,
    system: &'static str,
    /// Read from the envelope on first use.
    metadata: OnceLock<Metadata>,
}

impl EventContext {
    /// A context for `envelope` consumed from `topic` by `group`, handled by `handler`, on
    /// delivery `attempt` (1 = first). The router builds these; tests of handlers can too.
    pub fn new(
        envelope: Arc<Envelope>,
        topic: impl Into<Arc<str>>,
        group: impl Into<Arc<str>>,
        handler: impl Into<Arc<str>>,
        attempt: u32,
    ) -> Self {
        Self {
            envelope,
            topic: topic.into(),
            group: group.into(),
            handler: handler.into(),
            attempt,
            system: "unknown",
            metadata: OnceLock::new(),
        }
    }

    pub(crate) fn with_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    /// The event.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    /// The event, shared.
    pub fn shared_envelope(&self) -> Arc<Envelope> {
        Arc::clone(&self.envelope)
    }
    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub(crate) fn shared_topic(&self) -> Arc<str> {
        Arc::clone(&self.topic)
    }
    pub(crate) fn shared_group(&self) -> Arc<str> {
        Arc::clone(&self.group)
    }
    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }
    /// The handler's name (the route name).
    pub fn handler_name(&self) -> &str {
        &self.handler
    }
    /// Delivery attempt (1 = first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// `messaging.system` of the bus.
    pub fn system(&self) -> &'static str {
        self.system
    }
    /// Trace, correlation, causation and tenant context the producer sent.
    pub fn metadata(&self) -> &Metadata {
        self.metadata.get_or_init(|| self.envelope.metadata())
    }
    /// Context for events and calls caused by this event: same trace and correlation, a new
    /// span, `causation_id` = this event's id.
    pub fn follow_up_metadata(&self) -> Metadata {
        self.metadata().caused_by(self.envelope.id())
    }
}
