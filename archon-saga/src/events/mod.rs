//! Sagas on the event bus (feature `events`).
//!
//! - [`LifecycleEvents`]: a [`SagaListener`](crate::SagaListener) that publishes every committed
//!   transition as a CloudEvent (`archon.saga.<transition>.v1`, subject = saga id) through any
//!   archon-events [`Publisher`](archon_events::Publisher).
//! - [`CommandBus`]: lets a step send a command event and wait for the reply event, with a
//!   timeout. The command's id is the step's idempotency key, so a re-run after a crash or a
//!   retry sends the *same* command (participants dedupe on `source` + `id`), and the reply is
//!   matched by its `causationid`.
//!
//! A participant answers with [`reply_to`]:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use archon_events::{Envelope, EventBus, MemoryBus, Publisher, SubscribeOptions, Subscriber};
//! use archon_saga::events::{reply_to, CommandBus};
//! use futures::StreamExt;
//!
//! let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
//! // The participant: answers each command on the topic it names.
//! let mut commands = bus.subscribe("inventory.commands", SubscribeOptions::group("inventory")).await?;
//! let participant = Arc::clone(&bus);
//! tokio::spawn(async move {
//!     while let Some(Ok(command)) = commands.next().await {
//!         let reply = Envelope::builder("/inventory", "com.example.reserved.v1");
//!         if let Ok((topic, reply)) = reply_to(command.envelope(), reply) {
//!             let _ = participant.publish(&topic, reply).await;
//!         }
//!         let _ = command.ack().await;
//!     }
//! });
//!
//! // The orchestrator side: one CommandBus per engine.
//! let commands = CommandBus::start(Arc::clone(&bus), "orders.replies", "orchestrator-1").await?;
//! # let _ = commands;
//! // Inside a step: commands.request(&ctx, "inventory.commands", builder, timeout).await
//! # Ok(()) }
//! ```

mod command;
mod lifecycle;

pub use self::command::{CommandBus, REPLY_TO_HEADER, reply_to};
pub use self::lifecycle::LifecycleEvents;
