//! The demo behind `cargo run -p order-saga`: an order service that places each order with a
//! durable saga (archon-saga on its embedded SQLite store) whose steps call two other services
//! over HTTP through archon-client: inventory (reserve, release, ship) and payments (charge).
//! Built from functions so that a test can drive it.
//!
//! Each step passes its idempotency key (the same on every attempt of that step of that saga,
//! also after a restart) as the `Idempotency-Key` header: the participants apply an effect
//! once per key, and archon-client treats a POST that carries the header as safe to retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use archon_client::http::{HttpClient, HttpClientConfig, UpstreamConfig};
use archon_client::retry::{ExponentialBackoff, RetryConfig};
use archon_client::{ErrorKind, ResiliencePolicy};
use archon_saga::{
    Engine, RetryPolicy, Saga, SagaStatus, SqliteStore, Step, StepContext, StepError, StepResult,
};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Orders above this amount are declined by the payment service (HTTP 402).
pub const CARD_LIMIT_CENTS: u64 = 100_000;

/// The saga's data: the order and what the participants gave back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order number.
    pub id: u64,
    /// What is ordered.
    pub sku: String,
    /// How many.
    pub qty: u32,
    /// The price, in cents.
    pub amount_cents: u64,
    /// The inventory's reservation, once made (cleared when released).
    pub reservation: Option<String>,
    /// The payment's charge, once made.
    pub charge: Option<String>,
    /// The shipment, once booked.
    pub shipment: Option<String>,
}

impl Order {
    /// A new order with nothing reserved, charged or shipped yet.
    pub fn new(id: u64, sku: &str, qty: u32, amount_cents: u64) -> Self {
        Self {
            id,
            sku: sku.to_owned(),
            qty,
            amount_cents,
            reservation: None,
            charge: None,
            shipment: None,
        }
    }
}

/// A participant's record of what it did: requests received and effects applied, per
/// idempotency key (a repeated key returns the first answer and applies nothing).
#[derive(Debug, Default)]
pub struct Ledger {
    calls: AtomicUsize,
    /// Effect ids (`<kind>-<n>`) by idempotency key.
    effects: Mutex<HashMap<String, String>>,
    /// While set, the first request of every key answers 503 (a flaky service).
    flaky: AtomicBool,
    seen: Mutex<HashMap<String, usize>>,
}

impl Ledger {
    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Effects applied so far, by kind (`reserve`, `release`, `charge`, `ship`).
    pub fn applied(&self, kind: &str) -> usize {
        self.effects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|id| id.rsplit_once('-').is_some_and(|(k, _)| k == kind))
            .count()
    }

    /// Makes the first request of every key fail with 503 (or stops doing so).
    pub fn set_flaky(&self, flaky: bool) {
        self.flaky.store(flaky, Ordering::SeqCst);
    }

    /// Counts a request; `Err(503)` if the service plays flaky for this key's first try.
    fn arrive(&self, key: &str) -> Result<(), StatusCode> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let n = seen.entry(key.to_owned()).or_default();
        *n += 1;
        if self.flaky.load(Ordering::SeqCst) && *n == 1 {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(())
    }

    /// Applies `kind` once for `key`; returns the effect's id (the same for a repeated key).
    fn apply(&self, key: &str, kind: &str) -> String {
        let mut effects = self.effects.lock().unwrap_or_else(PoisonError::into_inner);
        let n = effects.len();
        effects
            .entry(key.to_owned())
            .or_insert_with(|| format!("{kind}-{}", n + 1))
            .clone()
    }
}

/// The two participant services, each on its own port of 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Participants {
    /// The inventory service's base URL.
    pub inventory_url: String,
    /// The payment service's base URL.
    pub payments_url: String,
    /// What the inventory service did.
    pub inventory: Arc<Ledger>,
    /// What the payment service did.
    pub payments: Arc<Ledger>,
}

#[derive(Deserialize)]
struct ChargeRequest {
    amount_cents: u64,
}

/// The `Idempotency-Key` header, required by every participant endpoint.
fn key_of(headers: &HeaderMap) -> Result<String, StatusCode> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(StatusCode::BAD_REQUEST)
}

/// An endpoint that applies `kind` once per idempotency key and answers the effect's id.
async fn effect(
    ledger: &Ledger,
    headers: &HeaderMap,
    kind: &str,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let key = key_of(headers)?;
    ledger.arrive(&key)?;
    Ok(Json(serde_json::json!({ "id": ledger.apply(&key, kind) })))
}

async fn serve(app: Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// Starts the inventory and payment services on 127.0.0.1:0.
///
/// # Errors
/// When a port cannot be bound.
pub async fn start_participants() -> anyhow::Result<Participants> {
    let inventory = Arc::new(Ledger::default());
    let payments = Arc::new(Ledger::default());
    let inventory_app = Router::new()
        .route(
            "/reservations",
            post(|State(l): State<Arc<Ledger>>, h: HeaderMap| async move {
                effect(&l, &h, "reserve").await
            }),
        )
        .route(
            // Releasing a reservation that never happened is fine (the compensation must
            // tolerate "never happened"): it is recorded all the same.
            "/reservations/{id}/release",
            post(
                |State(l): State<Arc<Ledger>>, Path(_id): Path<String>, h: HeaderMap| async move {
                    effect(&l, &h, "release").await
                },
            ),
        )
        .route(
            "/shipments",
            post(|State(l): State<Arc<Ledger>>, h: HeaderMap| async move {
                effect(&l, &h, "ship").await
            }),
        )
        .with_state(inventory.clone());
    let payments_app = Router::new()
        .route(
            "/charges",
            post(
                |State(l): State<Arc<Ledger>>, h: HeaderMap, Json(c): Json<ChargeRequest>| async move {
                    if c.amount_cents > CARD_LIMIT_CENTS {
                        l.calls.fetch_add(1, Ordering::SeqCst);
                        return Err(StatusCode::PAYMENT_REQUIRED);
                    }
                    effect(&l, &h, "charge").await
                },
            ),
        )
        .with_state(payments.clone());
    Ok(Participants {
        inventory_url: serve(inventory_app).await?,
        payments_url: serve(payments_app).await?,
        inventory,
        payments,
    })
}

/// The client's policy for both upstreams: 5 s per attempt, 3 attempts with jittered backoff
/// (a POST is retried because it carries an idempotency key), a breaker per upstream.
pub fn policy() -> ResiliencePolicy {
    ResiliencePolicy::default()
        .timeout(Duration::from_secs(5))
        .retry(
            RetryConfig::default()
                .max_attempts(3)
                .backoff(ExponentialBackoff::new(
                    Duration::from_millis(5),
                    Duration::from_millis(50),
                    2.0,
                )),
        )
}

/// How a failed call becomes a step error: a refusal (402, 409, 422) is a business failure
/// (compensate); what may pass (timeouts, 5xx, an open breaker) is transient (the saga
/// retries the step durably, with the same idempotency key); anything else is fatal (park:
/// a person should look).
pub fn step_error(e: &archon_client::Error) -> StepError {
    match e.kind() {
        ErrorKind::Status(402 | 409 | 422) => StepError::business(e.to_string()),
        ErrorKind::CircuitOpen
        | ErrorKind::BulkheadFull
        | ErrorKind::BudgetExhausted
        | ErrorKind::RateLimited => StepError::transient(e.to_string()),
        _ if e.is_retryable() => StepError::transient(e.to_string()),
        _ => StepError::fatal(e.to_string()),
    }
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// POSTs `body` to `path` of `upstream` with the step's idempotency key; returns the id.
async fn call(
    client: &HttpClient,
    ctx: &StepContext,
    upstream: &str,
    path: &str,
    body: &serde_json::Value,
) -> StepResult<String> {
    client
        .post(upstream, path)
        .idempotency_key(ctx.idempotency_key())
        .json(body)
        .send_json::<Created>()
        .await
        .map(|c| c.id)
        .map_err(|e| step_error(&e))
}

/// The `place-order` saga: reserve stock (compensated by releasing it), charge the card (the
/// pivot: once charged, the order goes through), book the shipment (retried until it
/// succeeds).
pub fn place_order(client: &Arc<HttpClient>) -> archon_saga::Result<Saga<Order>> {
    let (c1, c2, c3, c4) = (
        client.clone(),
        client.clone(),
        client.clone(),
        client.clone(),
    );
    let step_retry = RetryPolicy::exponential(5, Duration::from_millis(50));
    Saga::<Order>::builder("place-order")
        .version(1)
        .deadline(Duration::from_secs(60))
        .step(
            Step::compensatable(
                "reserve",
                move |ctx: StepContext, mut o: Order| {
                    let client = c1.clone();
                    async move {
                        let body = serde_json::json!({ "order": o.id, "sku": o.sku, "qty": o.qty });
                        let id = call(&client, &ctx, "inventory", "/reservations", &body).await?;
                        o.reservation = Some(id);
                        Ok(o)
                    }
                },
                move |ctx: StepContext, mut o: Order| {
                    let client = c2.clone();
                    async move {
                        // The reservation id may be unknown (the step's answer was lost in a
                        // crash): the key identifies the reservation as well.
                        let id = o
                            .reservation
                            .clone()
                            .unwrap_or_else(|| "unknown".to_owned());
                        let path = format!("/reservations/{id}/release");
                        let body = serde_json::json!({ "order": o.id });
                        call(&client, &ctx, "inventory", &path, &body).await?;
                        o.reservation = None;
                        Ok(o)
                    }
                },
            )
            .retry(step_retry.clone()),
        )
        .pivot(
            Step::pivot("charge", move |ctx: StepContext, mut o: Order| {
                let client = c3.clone();
                async move {
                    let body = serde_json::json!({ "order": o.id, "amount_cents": o.amount_cents });
                    o.charge = Some(call(&client, &ctx, "payments", "/charges", &body).await?);
                    Ok(o)
                }
            })
            .retry(step_retry.clone()),
        )
        .retriable(
            Step::retriable("ship", move |ctx: StepContext, mut o: Order| {
                let client = c4.clone();
                async move {
                    let body = serde_json::json!({ "order": o.id, "sku": o.sku });
                    o.shipment = Some(call(&client, &ctx, "inventory", "/shipments", &body).await?);
                    Ok(o)
                }
            })
            .retry(step_retry),
        )
        .build()
}

/// What happened to one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The order as the saga left it.
    pub order: Order,
    /// How the saga ended.
    pub status: SagaStatus,
}

/// Runs the demo: three orders through the saga, with the SQLite store in a temporary
/// directory: one that goes through, one the card declines (its reservation is released), and
/// one while the payment service fails every first attempt (archon-client's retries hide it).
/// Calls `report` after each order.
///
/// # Errors
/// When a server cannot start, the client or the store cannot be built, or a saga fails to run.
pub async fn run(mut report: impl FnMut(&Placed)) -> anyhow::Result<(Vec<Placed>, Participants)> {
    let participants = start_participants().await?;
    let client = Arc::new(HttpClient::new(
        &HttpClientConfig::default()
            .upstream(
                "inventory",
                UpstreamConfig::new(participants.inventory_url.clone(), policy()),
            )
            .upstream(
                "payments",
                UpstreamConfig::new(participants.payments_url.clone(), policy()),
            ),
    )?);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("orders.db"))?);
    let saga = place_order(&client)?;
    let engine = Engine::builder(store).register(&saga).build()?;
    engine.start().await?;
    let mut placed = Vec::new();
    for (order, flaky_payments) in [
        (Order::new(1, "book", 2, 4_200), false),
        (Order::new(2, "piano", 1, 2_500_000), false),
        (Order::new(3, "lamp", 1, 3_900), true),
    ] {
        participants.payments.set_flaky(flaky_payments);
        let id = engine.start_saga(&saga, order).await?;
        let record = engine.wait(id).await?;
        let p = Placed {
            order: serde_json::from_str(&record.data)?,
            status: record.status,
        };
        report(&p);
        placed.push(p);
    }
    engine.shutdown().await;
    Ok((placed, participants))
}
