//! The operator API: list, inspect, retry now, skip a step, resume, force compensation, cancel.

use std::sync::Arc;

use super::{Engine, Running};
use crate::{
    Error, HistoryEvent, ListQuery, Result, SagaId, SagaRecord, SagaStatus, Transition,
    definition::SagaDef,
};

/// A saga with its full history, for operators.
///
/// ```
/// # use std::sync::Arc;
/// # use archon_saga::{Engine, MemoryStore};
/// # async fn f(engine: Engine, id: archon_saga::SagaId) -> archon_saga::Result<()> {
/// let view = engine.inspect(id).await?;
/// for e in &view.history {
///     println!("{} {:?} {:?}", e.event, e.step, e.error);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SagaInspection {
    /// The saga now.
    pub record: SagaRecord,
    /// Every transition, oldest first (step attempts with their errors).
    pub history: Vec<HistoryEvent>,
}

impl Engine {
    /// Sagas by status and age, least recently updated first (oldest stuck first).
    ///
    /// ```
    /// # async fn f(engine: archon_saga::Engine) -> archon_saga::Result<()> {
    /// use archon_saga::{ListQuery, SagaStatus};
    /// let stuck = engine.list(&ListQuery::status(SagaStatus::Parked).limit(20)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<SagaRecord>> {
        self.inner.store.list(query).await
    }

    /// One saga with its history.
    pub async fn inspect(&self, id: SagaId) -> Result<SagaInspection> {
        let record = self
            .inner
            .store
            .load(id)
            .await?
            .ok_or(Error::NotFound(id))?;
        let history = self.inner.store.history(id).await?;
        Ok(SagaInspection { record, history })
    }

    /// Run the current step (or compensation) now: ends a retry wait, or resumes a parked saga
    /// with a fresh retry budget.
    pub async fn retry_now(&self, id: SagaId) -> Result<SagaRecord> {
        self.admin(id, "operator_retry_now", |_, r| {
            if r.status.is_finished() {
                return Err("saga is finished".to_owned());
            }
            reactivate(r);
            Ok(())
        })
        .await
    }

    /// Resume a parked saga where it stopped (same as [`retry_now`](Self::retry_now), but only
    /// for parked sagas).
    pub async fn resume(&self, id: SagaId) -> Result<SagaRecord> {
        self.admin(id, "operator_resume", |_, r| {
            if r.status != SagaStatus::Parked {
                return Err(format!("saga is {}, not parked", r.status));
            }
            reactivate(r);
            Ok(())
        })
        .await
    }

    /// Treat the current step (or compensation) as done and move on. Use when an operator
    /// fixed things by hand.
    pub async fn skip_step(&self, id: SagaId) -> Result<SagaRecord> {
        self.admin(id, "operator_skip_step", |def, r| {
            if r.status.is_finished() {
                return Err("saga is finished".to_owned());
            }
            reactivate(r);
            if r.compensating {
                r.step = r.step.saturating_sub(1);
                if r.step == 0 {
                    r.status = SagaStatus::Compensated;
                }
            } else {
                r.step += 1;
                if r.step as usize >= def.steps.len() {
                    r.status = SagaStatus::Completed;
                }
            }
            Ok(())
        })
        .await
    }

    /// Stop going forward and compensate the completed steps (only before the pivot completed).
    pub async fn force_compensation(&self, id: SagaId) -> Result<SagaRecord> {
        self.admin(id, "operator_force_compensation", |def, r| {
            force_compensation(def, r, "compensation forced by operator")
        })
        .await
    }

    /// Cancel a saga: it stops going forward and compensates its completed steps. Refused once
    /// the pivot has completed. A compensatable step running right now is interrupted (its
    /// future dropped): its outcome is unknown, so its compensation runs too, then the others
    /// in reverse order. A running pivot is not interrupted (its outcome decides whether the
    /// cancellation still applies). On another instance the running step is interrupted at its
    /// next lease renewal (every third of the lease), which is when it sees the stored flag.
    pub async fn cancel(&self, id: SagaId) -> Result<()> {
        let inner = &self.inner;
        let rec = inner.store.load(id).await?.ok_or(Error::NotFound(id))?;
        let def = self.def_for(&rec)?;
        if rec.status.is_finished() {
            return Err(Error::InvalidState {
                id,
                reason: "saga is finished".to_owned(),
            });
        }
        let step = if rec.compensating {
            0
        } else {
            rec.step as usize
        };
        if !rec.compensating && !def.can_compensate_at(step) {
            return Err(Error::InvalidState {
                id,
                reason: "the pivot has completed; the saga can no longer be cancelled".to_owned(),
            });
        }
        inner.store.request_cancel(id).await?;
        let owned_by_live = rec.status.is_active()
            && rec.owner.is_some()
            && rec.lease_until >= inner.clock.now_ms();
        if rec.status == SagaStatus::Parked || !owned_by_live {
            if rec.compensating {
                return Ok(());
            }
            self.admin(id, "operator_cancel", |def, r| {
                r.cancel_requested = true;
                force_compensation(def, r, "cancelled")
            })
            .await?;
        } else if let Some(r) = inner.running().get(&id) {
            r.cancel.notify_one();
        }
        Ok(())
    }

    fn def_for(&self, rec: &SagaRecord) -> Result<Arc<SagaDef>> {
        self.inner
            .defs
            .get(&rec.definition_key())
            .cloned()
            .ok_or_else(|| Error::UnknownDefinitions(vec![rec.definition_key()]))
    }

    /// Apply an operator change: stops this instance's driver of the saga if any, refuses if
    /// another live instance owns it, bumps the fence (so any stale driver is fenced out) and
    /// leaves the saga unowned for the poller to claim.
    async fn admin<F>(&self, id: SagaId, event: &str, f: F) -> Result<SagaRecord>
    where
        F: FnOnce(&SagaDef, &mut SagaRecord) -> Result<(), String>,
    {
        let inner = &self.inner;
        let mut rec = inner.store.load(id).await?.ok_or(Error::NotFound(id))?;
        let def = self.def_for(&rec)?;
        let now = inner.clock.now_ms();
        if rec.status.is_active()
            && let Some(owner) = rec.owner.clone()
            && rec.lease_until >= now
        {
            if owner != inner.instance {
                return Err(Error::Busy { id, owner });
            }
            let local: Option<Running> = inner.running().remove(&id);
            if let Some(r) = local {
                r.task.abort();
                let _ = r.task.await;
            }
            rec = inner.store.load(id).await?.ok_or(Error::NotFound(id))?;
        }
        let expected = rec.fence;
        f(&def, &mut rec).map_err(|reason| Error::InvalidState { id, reason })?;
        rec.fence = expected + 1;
        rec.owner = None;
        rec.lease_until = 0;
        rec.updated_at = now;
        let t = Transition {
            expected_fence: expected,
            record: rec.clone(),
            event: HistoryEvent::new(now, event),
        };
        inner.store.write(&t).await?;
        inner.notify(&rec, &t.event);
        inner.wake.notify_one();
        Ok(rec)
    }
}

fn reactivate(r: &mut SagaRecord) {
    r.status = if r.compensating {
        SagaStatus::Compensating
    } else {
        SagaStatus::Running
    };
    r.attempt = 0;
    r.wake_at = None;
    r.error = None;
}

fn force_compensation(def: &SagaDef, r: &mut SagaRecord, why: &str) -> Result<(), String> {
    if r.status.is_finished() {
        return Err("saga is finished".to_owned());
    }
    if r.compensating {
        reactivate(r);
        return Ok(());
    }
    if !def.can_compensate_at(r.step as usize) {
        return Err("the pivot has completed; the saga can no longer be compensated".to_owned());
    }
    r.compensating = true;
    r.attempt = 0;
    r.wake_at = None;
    r.error = Some(why.to_owned());
    r.status = if r.step == 0 {
        SagaStatus::Compensated
    } else {
        SagaStatus::Compensating
    };
    Ok(())
}
