//! One received event and how to settle it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::{Envelope, Error, Result};

/// Header names a dead-lettered event carries (free-form headers on the dead-letter topic).
pub mod dead_letter_headers {
    /// Why the event was dead-lettered (the handler's error text).
    pub const REASON: &str = "archon-dlq-reason";
    /// The topic the event was consumed from.
    pub const ORIGINAL_TOPIC: &str = "archon-dlq-topic";
    /// The consumer group that gave up.
    pub const GROUP: &str = "archon-dlq-group";
    /// How many times the event was delivered.
    pub const ATTEMPTS: &str = "archon-dlq-attempts";
    /// The handler that gave up (router).
    pub const HANDLER: &str = "archon-dlq-handler";
    /// When handling first failed (RFC 3339, router).
    pub const FIRST_FAILURE: &str = "archon-dlq-first-failure";
    /// When handling last failed (RFC 3339).
    pub const LAST_FAILURE: &str = "archon-dlq-last-failure";
}

const MAX_REASON_LEN: usize = 1024;

/// Why an event is dead-lettered: a reason plus extra headers.
///
/// ```
/// use archon_events::DeadLetter;
/// let dl = DeadLetter::new("price missing").with_header("archon-dlq-handler", "billing");
/// assert_eq!(dl.reason(), "price missing");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    reason: String,
    headers: Vec<(String, String)>,
}

impl DeadLetter {
    /// A dead-letter with `reason` (control characters become spaces; cut at 1 KiB).
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: sanitize(&reason.into()),
            headers: Vec::new(),
        }
    }
    /// Adds a header to the dead-lettered event (ignored when invalid).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), sanitize(&value.into())));
        self
    }
    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// The extra headers.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The event to publish on the dead-letter topic: `original` plus the reason headers
    /// ([`dead_letter_headers`]). Backends call this from their
    /// [`Acker::dead_letter`].
    ///
    /// ```
    /// use archon_events::{DeadLetter, Envelope, dead_letter_headers};
    /// let event = Envelope::builder("/a", "t.v1").build()?;
    /// let dead = DeadLetter::new("boom").apply(&event, "orders", "billing", 3);
    /// assert_eq!(dead.header(dead_letter_headers::REASON), Some("boom"));
    /// assert_eq!(dead.header(dead_letter_headers::ATTEMPTS), Some("3"));
    /// assert_eq!(dead.id(), event.id());
    /// # Ok::<(), archon_events::Error>(())
    /// ```
    pub fn apply(&self, original: &Envelope, topic: &str, group: &str, attempts: u32) -> Envelope {
        let mut dead = original.clone();
        let mut put = |name: &str, value: &str| {
            if let Err(error) = dead.insert_header(name, sanitize(value)) {
                tracing::debug!(%error, "dead-letter header dropped");
            }
        };
        put(dead_letter_headers::REASON, &self.reason);
        put(dead_letter_headers::ORIGINAL_TOPIC, topic);
        put(dead_letter_headers::GROUP, group);
        put(dead_letter_headers::ATTEMPTS, &attempts.to_string());
        if !self
            .headers
            .iter()
            .any(|(k, _)| k == dead_letter_headers::LAST_FAILURE)
        {
            put(
                dead_letter_headers::LAST_FAILURE,
                &humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            );
        }
        for (name, value) in &self.headers {
            put(name, value);
        }
        dead
    }
}

impl From<&str> for DeadLetter {
    fn from(reason: &str) -> Self {
        Self::new(reason)
    }
}

impl From<String> for DeadLetter {
    fn from(reason: String) -> Self {
        Self::new(reason)
    }
}

fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// How a backend settles one delivery. Implemented by backends, called by [`Delivery`] (at
/// most one of `ack`, `nack`, `dead_letter` or `dropped`, once).
///
/// ```
/// use std::time::Duration;
/// use archon_events::{Acker, DeadLetter, Result};
/// #[derive(Debug)]
/// struct LogAcker;
/// #[async_trait::async_trait]
/// impl Acker for LogAcker {
///     async fn ack(&self) -> Result<()> { Ok(()) }
///     async fn nack(&self, _delay: Duration) -> Result<()> { Ok(()) }
///     async fn dead_letter(&self, _dl: DeadLetter) -> Result<()> { Ok(()) }
/// }
/// ```
#[async_trait]
pub trait Acker: Send + Sync + fmt::Debug + 'static {
    /// The event is handled: never deliver it to this group again.
    async fn ack(&self) -> Result<()>;
    /// Deliver again to the group, not before `delay`.
    async fn nack(&self, delay: Duration) -> Result<()>;
    /// Move to the dead-letter topic with the reason (use [`DeadLetter::apply`]), then settle.
    async fn dead_letter(&self, dead_letter: DeadLetter) -> Result<()>;
    /// Extends the lease (default: nothing to extend).
    async fn in_progress(&self) -> Result<()> {
        Ok(())
    }
    /// The delivery was dropped unsettled. Default: nothing (the lease expires and the broker
    /// redelivers); backends that can, redeliver at once.
    fn dropped(&self) {}
}

/// One received event. Settle it with exactly one of [`ack`](Self::ack),
/// [`nack`](Self::nack) or [`dead_letter`](Self::dead_letter); dropping it unsettled means
/// redelivery (see the [contract](crate::bus)).
///
/// ```
/// use std::time::Duration;
/// use archon_events::{Acker, DeadLetter, Delivery, Envelope, Result};
/// # #[derive(Debug)] struct NoopAcker;
/// # #[async_trait::async_trait] impl Acker for NoopAcker {
/// #   async fn ack(&self) -> Result<()> { Ok(()) }
/// #   async fn nack(&self, _: Duration) -> Result<()> { Ok(()) }
/// #   async fn dead_letter(&self, _: DeadLetter) -> Result<()> { Ok(()) } }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<()> {
/// let event = Envelope::builder("/a", "t.v1").build()?;
/// let delivery = Delivery::new("orders", event.into(), 1, Box::new(NoopAcker));
/// assert_eq!(delivery.attempt(), 1);
/// delivery.nack(Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
pub struct Delivery {
    topic: Arc<str>,
    envelope: Arc<Envelope>,
    attempt: u32,
    acker: Option<Box<dyn Acker>>,
}

impl Delivery {
    /// A delivery of `envelope` from `topic`, the `attempt`-th time (1 = first), settled
    /// through `acker`. Called by backends.
    pub fn new(
        topic: impl Into<Arc<str>>,
        envelope: Arc<Envelope>,
        attempt: u32,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self {
            topic: topic.into(),
            envelope,
            attempt,
            acker: Some(acker),
        }
    }
    /// The event.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    /// The event, shared.
    pub fn shared_envelope(&self) -> Arc<Envelope> {
        Arc::clone(&self.envelope)
    }
    /// The topic it was consumed from.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// How many times this event has been delivered to the group, this one included (1 =
    /// first delivery).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn take(&mut self) -> Result<Box<dyn Acker>> {
        self.acker.take().ok_or(Error::AlreadySettled)
    }

    /// The event is handled; it is not delivered to this group again.
    pub async fn ack(mut self) -> Result<()> {
        self.take()?.ack().await
    }
    /// Delivers the event again, not before `delay` ([`Duration::ZERO`]: at once).
    pub async fn nack(mut self, delay: Duration) -> Result<()> {
        self.take()?.nack(delay).await
    }
    /// Moves the event to the dead-letter topic with `reason` in its headers.
    pub async fn dead_letter(mut self, reason: impl Into<DeadLetter>) -> Result<()> {
        self.take()?.dead_letter(reason.into()).await
    }
    /// Tells the backend the work goes on (extends the lease where there is one).
    pub async fn in_progress(&self) -> Result<()> {
        match &self.acker {
            Some(acker) => acker.in_progress().await,
            None => Err(Error::AlreadySettled),
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("id", &self.envelope.id())
            .field("attempt", &self.attempt)
            .field("settled", &self.acker.is_none())
            .finish()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            acker.dropped();
        }
    }
}
