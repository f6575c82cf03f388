//! Shared test participant: records effects per idempotency key, like a remote service that
//! dedupes on the key, plus overlap detection.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use archon_saga::{Saga, SagaId, Step, StepContext, StepError, StepResult};

/// The PostgreSQL the tests run against (schemas keep them apart).
pub const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

#[derive(Debug, Default)]
pub struct LedgerState {
    /// Invocations per idempotency key.
    pub calls: HashMap<String, u32>,
    /// Keys whose effect was applied (a participant dedupes on the key).
    pub applied: BTreeSet<String>,
    /// Order in which effects were applied.
    pub order: Vec<String>,
    /// Steps of a saga running right now, and the most ever seen at once.
    pub active: HashMap<SagaId, u32>,
    pub max_overlap: u32,
}

#[derive(Debug, Default, Clone)]
pub struct Ledger(pub Arc<Mutex<LedgerState>>);

pub struct ActiveGuard(Ledger, SagaId);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut s = self.0.0.lock().unwrap();
        *s.active.get_mut(&self.1).unwrap() -= 1;
    }
}

impl Ledger {
    /// Count a call and apply its effect (deduped by key).
    pub fn apply(&self, ctx: &StepContext) {
        self.call(ctx);
        self.land(ctx);
    }
    /// Apply the effect of a call already counted with [`Ledger::call`] (deduped by key).
    pub fn land(&self, ctx: &StepContext) {
        let mut s = self.0.lock().unwrap();
        if s.applied.insert(ctx.idempotency_key().to_owned()) {
            s.order.push(ctx.idempotency_key().to_owned());
        }
    }
    pub fn call(&self, ctx: &StepContext) -> u32 {
        let mut s = self.0.lock().unwrap();
        let c = s.calls.entry(ctx.idempotency_key().to_owned()).or_default();
        *c += 1;
        *c
    }
    pub fn enter(&self, id: SagaId) -> ActiveGuard {
        let mut s = self.0.lock().unwrap();
        let n = s.active.entry(id).or_default();
        *n += 1;
        let n = *n;
        s.max_overlap = s.max_overlap.max(n);
        ActiveGuard(self.clone(), id)
    }
    /// Applied keys of one saga, with the saga id prefix stripped.
    pub fn applied_for(&self, id: SagaId) -> BTreeSet<String> {
        let prefix = format!("{id}/");
        self.0
            .lock()
            .unwrap()
            .applied
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
    pub fn order_for(&self, id: SagaId) -> Vec<String> {
        let prefix = format!("{id}/");
        self.0
            .lock()
            .unwrap()
            .order
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
    pub fn calls(&self, key: &str) -> u32 {
        self.0.lock().unwrap().calls.get(key).copied().unwrap_or(0)
    }
    pub fn max_overlap(&self) -> u32 {
        self.0.lock().unwrap().max_overlap
    }
}

/// A step that applies its effect (deduped by key) and succeeds.
pub fn effect(
    ledger: &Ledger,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, StepResult<u32>>
+ Send
+ Sync
+ 'static {
    let ledger = ledger.clone();
    move |ctx, n| {
        let ledger = ledger.clone();
        Box::pin(async move {
            let _g = ledger.enter(ctx.saga_id());
            tokio::task::yield_now().await;
            ledger.apply(&ctx);
            Ok(n + 1)
        })
    }
}

/// A step that always fails with a business error (no effect).
pub fn refuse(
    ledger: &Ledger,
) -> impl Fn(StepContext, u32) -> futures::future::BoxFuture<'static, StepResult<u32>>
+ Send
+ Sync
+ 'static {
    let ledger = ledger.clone();
    move |ctx, _n| {
        let ledger = ledger.clone();
        Box::pin(async move {
            let _g = ledger.enter(ctx.saga_id());
            ledger.call(&ctx);
            Err(StepError::business("refused"))
        })
    }
}

/// The crash-harness saga: a, b, c compensatable; c always refuses.
pub fn abc_failing(ledger: &Ledger, name: &str) -> Saga<u32> {
    Saga::<u32>::builder(name)
        .step(Step::compensatable("a", effect(ledger), effect(ledger)))
        .step(Step::compensatable("b", effect(ledger), effect(ledger)))
        .step(Step::compensatable("c", refuse(ledger), effect(ledger)))
        .build()
        .unwrap()
}

/// Three no-op-ish succeeding steps.
pub fn abc_ok(ledger: &Ledger, name: &str) -> Saga<u32> {
    Saga::<u32>::builder(name)
        .step(Step::compensatable("a", effect(ledger), effect(ledger)))
        .step(Step::compensatable("b", effect(ledger), effect(ledger)))
        .step(Step::compensatable("c", effect(ledger), effect(ledger)))
        .build()
        .unwrap()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
