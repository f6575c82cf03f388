//! Sagas on the event bus: a step that sends a command and waits for the reply, and lifecycle
//! events, over archon-events' memory bus.
#![cfg(feature = "events")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use archon_events::{Envelope, EventBus, MemoryBus, SubscribeOptions};
use archon_saga::events::{CommandBus, LifecycleEvents, reply_to};
use archon_saga::{
    Engine, MemoryStore, RetryPolicy, Saga, SagaRecord, SagaStatus, Step, StepContext, StepError,
};
use futures::StreamExt as _;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
struct Order {
    reservation: Option<String>,
    released: bool,
}

/// A participant on `inventory.commands`: records every command id, answers when `answer`.
/// Subscribed before it returns, so no command is published before its group exists.
async fn spawn_participant(bus: Arc<dyn EventBus>, answer: bool) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let mut commands = bus
        .subscribe("inventory.commands", SubscribeOptions::group("inventory"))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(Ok(command)) = commands.next().await {
            record
                .lock()
                .unwrap()
                .push(command.envelope().id().to_owned());
            if answer {
                let reply = Envelope::builder("/inventory", "com.example.reserved.v1")
                    .data("application/json", r#"{"reservation":"R-1"}"#);
                let (topic, reply) = reply_to(command.envelope(), reply).unwrap();
                bus.publish(&topic, reply).await.unwrap();
            }
            command.ack().await.unwrap();
        }
    });
    seen
}

/// `reply_timeout`: how long the step waits for each reply.
fn order_saga(commands: CommandBus, reply_timeout: Duration) -> Saga<Order> {
    Saga::<Order>::builder("reserve-via-bus")
        .step(
            Step::compensatable(
                "reserve",
                move |ctx: StepContext, mut order: Order| {
                    let commands = commands.clone();
                    async move {
                        let command = Envelope::builder("/orders", "com.example.reserve.v1")
                            .data("application/json", r#"{"sku":"A"}"#);
                        let reply = commands
                            .request(&ctx, "inventory.commands", command, reply_timeout)
                            .await?;
                        let body: serde_json::Value = serde_json::from_slice(reply.data())
                            .map_err(|e| StepError::fatal(e.to_string()))?;
                        order.reservation = body["reservation"].as_str().map(str::to_owned);
                        Ok(order)
                    }
                },
                |_ctx: StepContext, mut order: Order| async move {
                    order.released = true;
                    Ok(order)
                },
            )
            .retry(RetryPolicy::fixed(3, Duration::from_millis(10))),
        )
        .pivot(Step::pivot(
            "confirm",
            |_ctx: StepContext, order: Order| async move {
                if order.reservation.is_some() {
                    Ok(order)
                } else {
                    Err(StepError::business("nothing reserved"))
                }
            },
        ))
        .build()
        .unwrap()
}

async fn engine_for(saga: &Saga<Order>, listener: Option<LifecycleEvents>) -> Engine {
    let mut builder = Engine::builder(Arc::new(MemoryStore::new())).register(saga);
    if let Some(listener) = listener {
        builder = builder.listener(Arc::new(listener));
    }
    let engine = builder.build().unwrap();
    engine.start().await.unwrap();
    engine
}

/// Starts one saga with an empty order and waits (at most 10 s) for it to finish.
async fn run_to_end(engine: &Engine, saga: &Saga<Order>) -> (archon_saga::SagaId, SagaRecord) {
    let order = Order {
        reservation: None,
        released: false,
    };
    let id = engine.start_saga(saga, order).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), engine.wait(id))
        .await
        .unwrap()
        .unwrap();
    (id, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_gets_the_reply_to_its_command() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let seen = spawn_participant(Arc::clone(&bus), true).await;
    let commands = CommandBus::start(Arc::clone(&bus), "orders.replies", "orchestrator")
        .await
        .unwrap();
    let saga = order_saga(commands, Duration::from_secs(5));
    let engine = engine_for(&saga, None).await;

    let (id, done) = run_to_end(&engine, &saga).await;
    assert_eq!(done.status, SagaStatus::Completed);
    let order: Order = serde_json::from_str(&done.data).unwrap();
    assert_eq!(
        order.reservation.as_deref(),
        Some("R-1"),
        "the reply reached the step"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![archon_saga::idempotency_key(id, "reserve", false)]
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_times_out_retries_the_same_command_then_compensates() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let seen = spawn_participant(Arc::clone(&bus), false).await;
    let commands = CommandBus::start(Arc::clone(&bus), "orders.replies", "orchestrator")
        .await
        .unwrap();
    let saga = order_saga(commands, Duration::from_millis(200));
    let engine = engine_for(&saga, None).await;

    let (id, done) = run_to_end(&engine, &saga).await;
    assert_eq!(done.status, SagaStatus::Compensated, "{done:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "three attempts: {seen:?}");
    let key = archon_saga::idempotency_key(id, "reserve", false);
    assert!(
        seen.iter().all(|command| *command == key),
        "the same command id every time: {seen:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_follow_the_saga() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let mut lifecycle = bus
        .subscribe("sagas.lifecycle", SubscribeOptions::group("audit"))
        .await
        .unwrap();
    let _participant = spawn_participant(Arc::clone(&bus), true).await;
    let commands = CommandBus::start(Arc::clone(&bus), "orders.replies", "orchestrator")
        .await
        .unwrap();
    let saga = order_saga(commands, Duration::from_secs(5));
    let listener = LifecycleEvents::new(
        Arc::clone(&bus) as Arc<dyn archon_events::Publisher>,
        "sagas.lifecycle",
        "/orders",
    );
    let engine = engine_for(&saga, Some(listener)).await;

    let (id, _) = run_to_end(&engine, &saga).await;
    let mut types = Vec::new();
    while !types
        .iter()
        .any(|t: &String| t == "archon.saga.completed.v1")
    {
        let delivery = tokio::time::timeout(Duration::from_secs(5), lifecycle.next())
            .await
            .expect("lifecycle events keep coming")
            .unwrap()
            .unwrap();
        assert_eq!(delivery.envelope().subject(), Some(id.to_string().as_str()));
        let data: serde_json::Value = serde_json::from_slice(delivery.envelope().data()).unwrap();
        assert_eq!(data["saga"], "reserve-via-bus");
        if delivery.envelope().event_type() == "archon.saga.step_completed.v1" {
            assert_eq!(data["step"], "reserve");
        }
        types.push(delivery.envelope().event_type().to_owned());
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        types,
        // One durable write per transition: the last step's completion is the saga's.
        [
            "archon.saga.started.v1",
            "archon.saga.step_completed.v1",
            "archon.saga.completed.v1",
        ],
    );
    engine.shutdown().await;
}
