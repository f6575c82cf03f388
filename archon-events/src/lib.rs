//! # archon-events
//!
//! Archon's event bus: one publish/subscribe contract whatever the broker. Services depend on
//! this crate alone; broker backends (NATS JetStream, Redis Streams, RabbitMQ, PostgreSQL,
//! Kafka) come as its cargo features and all pass the same conformance suite.
//!
//! - [`Publisher`] / [`Subscriber`] / [`EventBus`] / [`Delivery`]: the contract (at-least-once,
//!   ack after handling, consumer groups, per-key order, flow control), written in the
//!   [`bus`] docs. Usable as `Arc<dyn EventBus>`.
//! - [`Envelope`]: a CloudEvents 1.0 event with trace and correlation context, mapped onto each
//!   protocol binding in binary and structured mode ([`envelope`]).
//! - [`Event`] and [`Codec`]: typed events with a stable type name; JSON by default.
//! - [`MemoryBus`]: the in-memory backend (the embedded default).
//! - [`Router`](router::Router): typed handlers with retry, delayed redelivery, dead-lettering,
//!   timeout, dedupe, tracing and metrics middleware, per-key ordered concurrency, batches and
//!   graceful shutdown.
//! - `conformance` (feature): the universal suite every backend passes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_events::Result<()> {
//! use archon_events::{Envelope, EventBus, MemoryBus, Publisher, SubscribeOptions, Subscriber};
//! use futures::StreamExt;
//!
//! let bus = MemoryBus::new();
//! let mut sub = bus.subscribe("orders", SubscribeOptions::group("billing")).await?;
//! let event = Envelope::builder("/shop", "com.example.order.created.v1")
//!     .partition_key("customer-7")
//!     .data("application/json", r#"{"order":42}"#)
//!     .build()?;
//! bus.publish("orders", event).await?;
//!
//! let delivery = sub.next().await.expect("a delivery")?;
//! assert_eq!(delivery.envelope().partition_key(), Some("customer-7"));
//! delivery.ack().await?;
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//!
//! - `conformance`: the `conformance_tests!` macro and its cases, for backend test files.
//! - `protobuf`: `ProstCodec`, protobuf payloads via prost.

pub mod bus;
mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod envelope;
mod error;
mod memory;
pub mod router;

pub use self::bus::{
    Acker, DeadLetter, Delivery, EventBus, Features, Publisher, StartPosition, SubscribeOptions,
    Subscriber, Subscription, dead_letter_headers,
};
#[cfg(feature = "protobuf")]
pub use self::codec::ProstCodec;
pub use self::codec::{Codec, CodecError, EnvelopeEventExt, Event, JsonCodec};
pub use self::envelope::Envelope;
pub use self::error::{Error, Result};
pub use self::memory::{MemoryBus, MemoryConfig};
