//! The stream of deliveries a subscription yields.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use super::Delivery;
use crate::Result;

/// A stream of [`Delivery`]s; dropping it ends the subscription (unsettled deliveries are
/// redelivered, see the [contract](crate::bus)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
/// use archon_events::{Envelope, MemoryBus, Publisher, SubscribeOptions, Subscriber};
/// use futures::StreamExt;
///
/// let bus = MemoryBus::new();
/// let mut sub = bus.subscribe("orders", SubscribeOptions::group("billing")).await?;
/// bus.publish("orders", Envelope::builder("/shop", "order.created.v1").build()?).await?;
/// let delivery = sub.next().await.expect("one delivery")?;
/// assert_eq!(delivery.envelope().event_type(), "order.created.v1");
/// delivery.ack().await?;
/// # Ok(()) }
/// ```
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>>,
}

impl Subscription {
    /// Wraps a backend's stream of deliveries.
    ///
    /// ```
    /// let sub = archon_events::Subscription::new(futures::stream::empty());
    /// # drop(sub);
    /// ```
    pub fn new(stream: impl Stream<Item = Result<Delivery>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
