//! What a backend guarantees.

/// What a backend guarantees; the conformance suite runs the cases these allow, and each
/// backend's docs show the same table.
///
/// Fields can be set one by one (the struct is `#[non_exhaustive]`, so start from
/// [`Features::default`], where everything is `false`):
///
/// ```
/// let mut features = archon_events::Features::default();
/// features.consumer_groups = true;
/// features.persistent = true;
/// assert!(!features.exactly_once);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// Subscriptions in one group compete for events; every group sees every event.
    pub consumer_groups: bool,
    /// No duplicates, ever (no backend here claims it).
    pub exactly_once: bool,
    /// All events of a topic arrive in publish order, even with several subscribers.
    pub guaranteed_order: bool,
    /// Events arrive in publish order to a single subscriber that settles each before the next
    /// (prefetch 1).
    pub guaranteed_order_with_single_subscriber: bool,
    /// Events with the same partition key arrive in order within a group, one at a time.
    pub per_key_order: bool,
    /// Accepted events survive a restart of the process or broker.
    pub persistent: bool,
    /// A new group can start from events published before it existed
    /// ([`StartPosition::Earliest`](crate::StartPosition::Earliest)).
    pub new_subscriber_receives_old_events: bool,
    /// `nack(delay)` holds the event back for at least `delay`.
    pub delayed_nack: bool,
    /// `dead_letter(reason)` moves the event to a dead-letter topic with the reason.
    pub dead_letter: bool,
    /// `in_progress()` extends the lease of a delivery (others have no lease to extend).
    pub lease_extension: bool,
    /// The conformance harness can restart the broker (the reconnect case runs).
    pub broker_restart: bool,
}
