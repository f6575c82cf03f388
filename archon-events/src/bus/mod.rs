//! The event bus contract: [`Publisher`], [`Subscriber`], [`EventBus`], [`Delivery`].
//!
//! # The contract every backend keeps
//!
//! - **At-least-once.** An event a [`Publisher::publish`] call accepted (returned `Ok`) is
//!   delivered to every consumer group that existed when it was published, at least once, until
//!   a consumer of the group settles it with [`Delivery::ack`] or [`Delivery::dead_letter`].
//!   Duplicates are possible (after a nack, a crash, a lease expiry or a publish retry): consumers
//!   deduplicate by [`Envelope::dedupe_key`] where it matters (see the router's dedupe layer).
//! - **Ack after handling.** Settle a delivery only when its effects are done. A delivery that is
//!   dropped unsettled (a cancelled task, a dropped subscription) is redelivered: at once on
//!   backends that can tell (memory), otherwise when its lease expires.
//! - **Consumer groups.** Subscriptions with the same [`SubscribeOptions::group`] compete for
//!   events (each event goes to one of them); every group sees every event.
//! - **Ordering.** Events with the same partition key ([`Envelope::partition_key`]) are
//!   delivered in publish order, one at a time per group, on backends whose
//!   [`Features::per_key_order`] is set: the next event of a key waits until the previous one is
//!   settled, redeliveries included. Without a key nothing is promised beyond what the backend's
//!   [`Features`] say.
//! - **Flow control.** A subscription holds at most [`SubscribeOptions::prefetch`] unsettled
//!   deliveries; the next one comes after a settlement.
//! - **Cancellation.** Dropping a [`Subscription`] ends it; its unsettled deliveries can still be
//!   settled. A bus that is closed ends every subscription stream and makes publish fail with
//!   [`Error::Closed`](crate::Error::Closed).
//! - **Redelivery.** `nack(delay)` delivers the event to the group again, not before `delay`
//!   (where [`Features::delayed_nack`] is set; others redeliver at once or per broker policy);
//!   [`Delivery::attempt`] counts deliveries to the group.
//! - **Dead-lettering.** `dead_letter(reason)` publishes the event unchanged except for the
//!   reason headers ([`dead_letter_headers`]) to the dead-letter topic
//!   ([`SubscribeOptions::dead_letter_topic_for`]), then settles it; if that publish fails the
//!   event stays for redelivery.
//! - **Size.** Events over the backend's limit (1 MiB by default) fail at publish with
//!   [`Error::TooLarge`](crate::Error::TooLarge), before anything is sent.
//! - **Events nobody subscribed to.** A new group starts at [`SubscribeOptions::start`];
//!   whether events published before any group existed are kept is the backend's
//!   [`Features::new_subscriber_receives_old_events`].
//! - **Thread safety.** Publishers and subscribers are `Send + Sync` and used concurrently.
//! - **Errors.** Backends report failures with the meanings of [`Error`](crate::Error).
//!
//! # Writing a backend
//!
//! Implement [`Publisher`] (check [`Envelope::check_size`], carry the envelope with
//! [`Envelope::to_binary`] or [`Envelope::to_structured`] for the broker's binding),
//! [`Subscriber`] (decode with [`Envelope::from_wire`] and yield
//! [`Delivery::new`] with an [`Acker`] that maps ack / nack / dead-letter / in-progress onto
//! the broker's), [`EventBus`] with an honest [`Features`], keep a private error enum and
//! convert it into [`Error::Backend`](crate::Error::Backend) or a meaning, then run the
//! conformance suite (`conformance_tests!`, feature `conformance`) against the real broker.

mod delivery;
mod features;
mod options;
mod subscription;

pub use self::delivery::{Acker, DeadLetter, Delivery, dead_letter_headers};
pub use self::features::Features;
pub use self::options::{StartPosition, SubscribeOptions};
pub use self::subscription::Subscription;

use std::fmt;

use async_trait::async_trait;

use crate::{Envelope, Result};

/// Sends events to topics.
///
/// A publish returns when the backend has accepted the event; when that counts as durable is
/// backend-specific and stated in each backend's docs:
///
/// | backend | durable when `publish` returns |
/// |---|---|
/// | memory | never (held in process memory; gone on exit) |
/// | NATS JetStream, Redis, RabbitMQ, PostgreSQL, Kafka | stated in their modules |
///
/// Events over the size limit fail with [`Error::TooLarge`](crate::Error::TooLarge); a full
/// buffer makes publish wait, then fail with [`Error::Timeout`](crate::Error::Timeout).
///
/// A complete (if useless) implementation:
///
/// ```
/// use archon_events::{Envelope, Publisher, Result};
/// #[derive(Debug, Default)]
/// struct Discard;
/// #[async_trait::async_trait]
/// impl Publisher for Discard {
///     async fn publish(&self, _topic: &str, _event: Envelope) -> Result<()> {
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Publisher: Send + Sync + fmt::Debug {
    /// Publishes one event to `topic`.
    async fn publish(&self, topic: &str, event: Envelope) -> Result<()>;

    /// Publishes events to `topic` in order. On error, a prefix of the batch may have been
    /// published (publish again: consumers deduplicate). Backends override it to batch writes.
    async fn publish_batch(&self, topic: &str, events: Vec<Envelope>) -> Result<()> {
        for event in events {
            self.publish(topic, event).await?;
        }
        Ok(())
    }

    /// Flushes what was accepted and refuses further publishes with
    /// [`Error::Closed`](crate::Error::Closed). Nothing accepted before is lost.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Receives events from topics.
///
/// A complete implementation that never delivers anything:
///
/// ```
/// use archon_events::{Result, SubscribeOptions, Subscriber, Subscription};
/// #[derive(Debug, Default)]
/// struct Nothing;
/// #[async_trait::async_trait]
/// impl Subscriber for Nothing {
///     async fn subscribe(&self, _topic: &str, _options: SubscribeOptions) -> Result<Subscription> {
///         Ok(Subscription::new(futures::stream::empty()))
///     }
/// }
/// ```
#[async_trait]
pub trait Subscriber: Send + Sync + fmt::Debug {
    /// Subscribes to `topic` in the consumer group of `options`, creating the group if needed.
    /// The stream yields deliveries until the subscription is dropped or the bus closes; an
    /// `Err` item reports a transient fetch failure and the stream goes on.
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription>;
}

/// A publisher and subscriber of one broker, usable as `Arc<dyn EventBus>`.
///
/// ```
/// use std::sync::Arc;
/// use archon_events::{EventBus, MemoryBus};
/// let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
/// assert!(bus.features().consumer_groups);
/// assert_eq!(bus.system(), "memory");
/// ```
pub trait EventBus: Publisher + Subscriber {
    /// What this backend guarantees.
    fn features(&self) -> Features;
    /// The `messaging.system` name (`memory`, `nats`, `redis`, `rabbitmq`, `postgresql`,
    /// `kafka`).
    fn system(&self) -> &'static str;
}

#[allow(dead_code)]
fn _obj_safe(_: Box<dyn EventBus>, _: Box<dyn Publisher>, _: Box<dyn Subscriber>) {}

#[allow(dead_code)]
fn _upcast(bus: std::sync::Arc<dyn EventBus>) -> std::sync::Arc<dyn Publisher> {
    bus
}
