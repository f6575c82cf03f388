//! Command/reply over the event bus, for steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archon_events::envelope::EnvelopeBuilder;
use archon_events::{Envelope, EventBus, SubscribeOptions};
use futures::StreamExt as _;
use tokio::sync::oneshot;

use crate::{Error, Result, StepContext, StepError};

/// The header a command carries to say which topic the reply goes to.
pub const REPLY_TO_HEADER: &str = "x-reply-to";

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Envelope>>>>;

/// Sends commands for steps and hands each reply to the step waiting for it.
///
/// One subscription to the reply topic serves every step of the engine: replies are matched to
/// commands by their `causationid` (see [`reply_to`]). Give each orchestrator instance its own
/// group on the reply topic so every instance sees every reply; replies nobody waits for (a
/// late one after a timeout, another instance's) are acknowledged and dropped.
///
/// See the [module docs](super) for a participant, and [`request`](Self::request) for a step.
#[derive(Debug, Clone)]
pub struct CommandBus {
    bus: Arc<dyn EventBus>,
    reply_topic: String,
    waiters: Waiters,
}

impl CommandBus {
    /// Subscribes to `reply_topic` in consumer group `group` and starts dispatching replies.
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Bus`] when the subscription fails (broker down, bad topic).
    pub async fn start(
        bus: Arc<dyn EventBus>,
        reply_topic: impl Into<String>,
        group: impl Into<String>,
    ) -> Result<Self> {
        let reply_topic = reply_topic.into();
        let mut replies = bus
            .subscribe(&reply_topic, SubscribeOptions::group(group.into()))
            .await
            .map_err(|e| Error::Bus(Box::new(e)))?;
        let waiters: Waiters = Arc::default();
        let dispatch = Arc::clone(&waiters);
        tokio::spawn(async move {
            while let Some(delivery) = replies.next().await {
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        tracing::warn!(%error, "saga reply subscription error");
                        continue;
                    }
                };
                let cause = delivery.envelope().metadata().causation_id;
                let waiter = cause.as_ref().and_then(|cause| {
                    dispatch
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(cause)
                });
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(delivery.envelope().clone());
                    }
                    None => tracing::debug!(?cause, "reply with no waiting step; dropped"),
                }
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "saga reply not acknowledged");
                }
            }
        });
        Ok(Self {
            bus,
            reply_topic,
            waiters,
        })
    }

    /// Publishes `command` to `topic` and waits up to `timeout` for its reply.
    ///
    /// The command's id is the step's idempotency key and it carries the task's trace context
    /// and a [`REPLY_TO_HEADER`]. No reply in time, or a bus failure, is a
    /// [`StepError::transient`] (the step's retry policy decides what follows); an invalid
    /// command is [`StepError::fatal`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use archon_saga::{StepContext, StepResult, events::CommandBus};
    /// async fn reserve(commands: CommandBus, ctx: StepContext, order: u64) -> StepResult<u64> {
    ///     let command = archon_events::Envelope::builder("/orders", "com.example.reserve.v1")
    ///         .data("application/json", format!(r#"{{"order":{order}}}"#));
    ///     let reply = commands.request(&ctx, "inventory.commands", command, Duration::from_secs(5)).await?;
    ///     if reply.event_type() == "com.example.reservation-refused.v1" {
    ///         return Err(archon_saga::StepError::business("out of stock"));
    ///     }
    ///     Ok(order)
    /// }
    /// ```
    ///
    /// # Errors
    /// As above.
    pub async fn request(
        &self,
        ctx: &StepContext,
        topic: &str,
        command: EnvelopeBuilder,
        timeout: Duration,
    ) -> std::result::Result<Envelope, StepError> {
        let id = ctx.idempotency_key().to_owned();
        let command = command
            .id(id.clone())
            .current_metadata()
            .header(REPLY_TO_HEADER, self.reply_topic.clone())
            .build()
            .map_err(|e| StepError::fatal(format!("invalid command: {e}")))?;
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        if let Err(error) = self.bus.publish(topic, command).await {
            self.forget(&id);
            return Err(StepError::transient(format!(
                "command not published: {error}"
            )));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(StepError::transient("reply dispatcher stopped")),
            Err(_) => {
                self.forget(&id);
                Err(StepError::transient(format!(
                    "no reply to command {id} within {timeout:?}"
                )))
            }
        }
    }

    fn forget(&self, id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// For a participant: turns `reply` into the answer to `command`, returning the topic to publish
/// it to (the command's [`REPLY_TO_HEADER`]) and the reply with `causationid` = the command's
/// id, and the command's correlation and trace context.
///
/// # Errors
/// [`Error::Bus`] when the command names no reply topic or the reply is invalid.
pub fn reply_to(command: &Envelope, reply: EnvelopeBuilder) -> Result<(String, Envelope)> {
    let topic = command
        .header(REPLY_TO_HEADER)
        .ok_or_else(|| {
            Error::Bus(format!("command {} has no {REPLY_TO_HEADER} header", command.id()).into())
        })?
        .to_owned();
    let metadata = command.metadata().caused_by(command.id());
    let reply = reply
        .metadata(&metadata)
        .build()
        .map_err(|e| Error::Bus(Box::new(e)))?;
    Ok((topic, reply))
}
