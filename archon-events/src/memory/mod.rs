//! The in-memory backend: the embedded default, and the reference for the contract.
//!
//! | feature | memory |
//! |---|---|
//! | consumer groups | yes |
//! | exactly once | no |
//! | guaranteed order (many subscribers) | no |
//! | order with a single subscriber, prefetch 1 | yes |
//! | per-key order | yes |
//! | persistent | no (durable never: gone with the process) |
//! | new subscriber receives old events | no (a new group starts at the next event) |
//! | delayed nack | yes |
//! | dead letter | yes (to `<topic>.dlq` or the configured topic) |
//! | lease extension | no lease: a delivery stays in flight until settled or dropped |
//!
//! Every consumer group keeps at most [`MemoryConfig::capacity`] unsettled events (ready,
//! in flight, parked behind a busy key or delayed). A publish to a topic with a full group waits
//! until the group has room, up to [`MemoryConfig::publish_timeout`], then fails with
//! [`Error::Timeout`]: memory never grows without bound. Events published to a topic before any
//! group subscribed to it are dropped (like Watermill's Go channel backend).

mod group;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use self::group::{Group, Item};
use crate::bus::{EventBus, Features, Publisher, SubscribeOptions, Subscriber, Subscription};
use crate::envelope::DEFAULT_MAX_EVENT_SIZE;
use crate::{Envelope, Error, Result};

/// Settings of a [`MemoryBus`].
///
/// ```
/// use std::time::Duration;
/// let config = archon_events::MemoryConfig::default()
///     .with_capacity(1_000)
///     .with_publish_timeout(Duration::from_millis(100));
/// let bus = archon_events::MemoryBus::with_config(config);
/// # drop(bus);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Most unsettled events one consumer group holds (default 65,536).
    pub capacity: usize,
    /// How long a publish waits for room in a full group (default 5 s).
    pub publish_timeout: Duration,
    /// Largest accepted event (default 1 MiB, see [`Envelope::encoded_len`]).
    pub max_event_size: usize,
}

impl MemoryConfig {
    /// Sets [`capacity`](Self::capacity) (at least 1).
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }
    /// Sets [`publish_timeout`](Self::publish_timeout).
    #[must_use]
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }
    /// Sets [`max_event_size`](Self::max_event_size).
    #[must_use]
    pub fn with_max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            publish_timeout: Duration::from_secs(5),
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
        }
    }
}

/// The in-memory event bus. Cheap to clone: clones share the same topics.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
/// use archon_events::{Envelope, MemoryBus, Publisher, SubscribeOptions, Subscriber};
/// use futures::StreamExt;
///
/// let bus = MemoryBus::new();
/// let mut billing = bus.subscribe("orders", SubscribeOptions::group("billing")).await?;
/// let mut shipping = bus.subscribe("orders", SubscribeOptions::group("shipping")).await?;
/// bus.publish("orders", Envelope::builder("/shop", "order.created.v1").build()?).await?;
/// // every group sees every event
/// billing.next().await.expect("billing")?.ack().await?;
/// shipping.next().await.expect("shipping")?.ack().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
    /// Closed by [`Publisher::close`]: only this client handle (and its clones) stop publishing.
    handle_closed: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    config: MemoryConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Topic {
    groups: RwLock<Vec<Arc<Group>>>,
}

impl MemoryBus {
    /// A bus with [`MemoryConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus with `config`.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                ..Shared::default()
            }),
            handle_closed: Arc::default(),
        }
    }

    /// A new client of the same bus: it shares the topics, but [`Publisher::close`] on it
    /// closes only this client (as closing one broker connection would).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
    /// use archon_events::{Envelope, MemoryBus, Publisher};
    /// let bus = MemoryBus::new();
    /// let client = bus.connect();
    /// client.close().await?;
    /// let event = Envelope::builder("/a", "t.v1").build()?;
    /// assert!(client.publish("t", event.clone()).await.is_err());
    /// assert!(bus.publish("t", event).await.is_ok());
    /// # Ok(()) }
    /// ```
    pub fn connect(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            handle_closed: Arc::default(),
        }
    }

    /// Closes the bus: every subscription stream ends and publishes fail with
    /// [`Error::Closed`]. Unsettled deliveries can still be settled.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use archon_events::{Envelope, Error, MemoryBus, Publisher};
    /// let bus = MemoryBus::new();
    /// bus.shutdown();
    /// let event = Envelope::builder("/a", "t.v1").build().unwrap();
    /// assert!(matches!(bus.publish("t", event).await, Err(Error::Closed)));
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for topic in read(&self.shared.topics).values() {
            for group in read(&topic.groups).iter() {
                group.close();
            }
        }
    }

    /// Number of unsettled events held for `group` on `topic` (0 when unknown). For tests and
    /// monitoring.
    ///
    /// ```
    /// assert_eq!(archon_events::MemoryBus::new().pending("t", "g"), 0);
    /// ```
    pub fn pending(&self, topic: &str, group: &str) -> usize {
        read(&self.shared.topics)
            .get(topic)
            .and_then(|t| {
                read(&t.groups)
                    .iter()
                    .find(|g| g.name() == group)
                    .map(|g| g.len())
            })
            .unwrap_or(0)
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.shared.topics).get(name).cloned()
    }

    fn topic_or_create(&self, name: &str) -> Arc<Topic> {
        if let Some(topic) = self.topic(name) {
            return topic;
        }
        let mut topics = write(&self.shared.topics);
        Arc::clone(topics.entry(name.to_owned()).or_default())
    }

    fn check(&self, event: &Envelope) -> Result<()> {
        if self.shared.closed.load(Ordering::Relaxed) || self.handle_closed.load(Ordering::Relaxed)
        {
            return Err(Error::Closed);
        }
        event.check_size(self.shared.config.max_event_size)
    }

    /// Waits until every group of `topic` has room; returns the room left in the fullest one.
    async fn wait_for_room(&self, topic: &Topic, deadline: &mut Option<Instant>) -> Result<usize> {
        let capacity = self.shared.config.capacity.max(1);
        loop {
            if self.shared.closed.load(Ordering::Relaxed) {
                return Err(Error::Closed);
            }
            let mut room = usize::MAX;
            let mut full = None;
            for group in read(&topic.groups).iter() {
                let free = capacity.saturating_sub(group.len());
                if free == 0 {
                    full = Some(Arc::clone(group));
                    break;
                }
                room = room.min(free);
            }
            let Some(group) = full else {
                return Ok(room);
            };
            let deadline = *deadline
                .get_or_insert_with(|| Instant::now() + self.shared.config.publish_timeout);
            group
                .wait_for_room(capacity, deadline)
                .await
                .map_err(|()| Error::Timeout {
                    operation: "publish",
                    after: self.shared.config.publish_timeout,
                })?;
        }
    }

    /// Publishes one event to every group of `topic` (waiting for room, all or nothing).
    pub(crate) async fn publish_one(&self, topic: &str, item: Arc<Envelope>) -> Result<()> {
        let Some(topic) = self.topic(topic) else {
            return Ok(());
        };
        self.wait_for_room(&topic, &mut None).await?;
        let key: Option<Arc<str>> = item.partition_key().map(Arc::from);
        let groups = read(&topic.groups);
        if let Some((last, others)) = groups.split_last() {
            for group in others {
                group.push(std::iter::once(Item::with_key(
                    Arc::clone(&item),
                    key.clone(),
                )));
            }
            last.push(std::iter::once(Item::with_key(item, key)));
        }
        Ok(())
    }

    /// Publishes events in order, as many at a time as fit in every group.
    async fn publish_items(&self, topic: &str, mut items: Vec<Arc<Envelope>>) -> Result<()> {
        let Some(topic) = self.topic(topic) else {
            return Ok(());
        };
        let mut deadline = None;
        while !items.is_empty() {
            let room = self.wait_for_room(&topic, &mut deadline).await?;
            let rest = if room < items.len() {
                items.split_off(room)
            } else {
                Vec::new()
            };
            let groups = read(&topic.groups);
            if let Some((last, others)) = groups.split_last() {
                for group in others {
                    group.push(items.iter().cloned().map(Item::new));
                }
                last.push(items.into_iter().map(Item::new));
            }
            items = rest;
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, topic: &str, event: Envelope) -> Result<()> {
        self.check(&event)?;
        self.publish_one(topic, Arc::new(event)).await
    }

    async fn publish_batch(&self, topic: &str, events: Vec<Envelope>) -> Result<()> {
        for event in &events {
            self.check(event)?;
        }
        self.publish_items(topic, events.into_iter().map(Arc::new).collect())
            .await
    }

    /// Memory has nothing to flush: this client stops publishing (see [`MemoryBus::connect`];
    /// [`MemoryBus::shutdown`] closes the whole bus).
    async fn close(&self) -> Result<()> {
        self.handle_closed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl Subscriber for MemoryBus {
    async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let handle = self.topic_or_create(topic);
        let group = {
            let mut groups = write(&handle.groups);
            match groups.iter().find(|g| g.name() == options.group) {
                Some(group) => Arc::clone(group),
                None => {
                    let group = Arc::new(Group::new(options.group.clone()));
                    groups.push(Arc::clone(&group));
                    group
                }
            }
        };
        let dead_letter_topic = options.dead_letter_topic_for(topic);
        Ok(group::subscription(
            self.clone(),
            group,
            topic,
            dead_letter_topic,
            options.prefetch.max(1),
        ))
    }
}

impl EventBus for MemoryBus {
    fn features(&self) -> Features {
        Features {
            consumer_groups: true,
            guaranteed_order_with_single_subscriber: true,
            per_key_order: true,
            delayed_nack: true,
            dead_letter: true,
            ..Features::default()
        }
    }

    fn system(&self) -> &'static str {
        "memory"
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
