//! Subscription options.

use std::time::Duration;

/// Where a new consumer group starts reading. An existing group always resumes where it was.
///
/// ```
/// assert_eq!(archon_events::StartPosition::default(), archon_events::StartPosition::Latest);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartPosition {
    /// Only events published after the group was created.
    #[default]
    Latest,
    /// Every event the backend still holds (backends without history: same as `Latest`).
    Earliest,
}

/// How to subscribe: consumer group, start position, prefetch, concurrency, dead-letter topic.
///
/// ```
/// use archon_events::SubscribeOptions;
/// let options = SubscribeOptions::group("billing").with_prefetch(1).with_concurrency(4);
/// assert_eq!(options.dead_letter_topic_for("orders"), "orders.dlq");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The consumer group (default `"default"`).
    pub group: String,
    /// Where a new group starts.
    pub start: StartPosition,
    /// Most unsettled deliveries this subscription holds (default 64, at least 1).
    pub prefetch: usize,
    /// How many deliveries the consumer works on at once (default 1). The router uses it as the
    /// number of per-key lanes; backends may use it for parallel fetching.
    pub concurrency: usize,
    /// Where `dead_letter` sends events (default `<topic>.dlq`).
    pub dead_letter_topic: Option<String>,
    /// Lease of a delivery on backends with leases (default 30 s); see
    /// [`Delivery::in_progress`](crate::Delivery::in_progress).
    pub ack_timeout: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            group: "default".to_owned(),
            start: StartPosition::Latest,
            prefetch: 64,
            concurrency: 1,
            dead_letter_topic: None,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl SubscribeOptions {
    /// Options for consumer group `group`, other fields default.
    pub fn group(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            ..Self::default()
        }
    }
    /// Sets the start position of a new group.
    #[must_use]
    pub fn with_start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }
    /// Sets the prefetch (at least 1).
    #[must_use]
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }
    /// Sets the concurrency (at least 1).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }
    /// Sets the dead-letter topic.
    #[must_use]
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }
    /// Sets the lease of a delivery.
    #[must_use]
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }
    /// The dead-letter topic for `topic`: the configured one or `<topic>.dlq`.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{topic}.dlq"))
    }
}
