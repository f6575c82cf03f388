//! Drives one saga: runs its steps and compensations, one durable write per transition.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt as _;
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::{Inner, clock::ms, driver_done, names};
use crate::{
    Error, HistoryEvent, SagaRecord, SagaStatus, StepContext, StepError, StepKind, Transition,
    definition::{ErasedFn, Outcome, SagaDef},
};

enum Flow {
    Continue,
    /// The driver stops with the saga still active (released, lease lost, write failed).
    Stop,
    /// The saga's end (finished or parked) is written.
    Ended,
}

/// Runs when a driver stops, however it stops (returned, aborted by shutdown, an operator
/// action or a newer claim): it leaves the engine's running set, then tells waiters.
struct DriverExit {
    inner: Arc<Inner>,
    id: crate::SagaId,
    /// The record as written, once the saga's end is written.
    ended: Option<Arc<SagaRecord>>,
}

impl Drop for DriverExit {
    fn drop(&mut self) {
        driver_done(&self.inner, self.id, self.ended.take());
    }
}

pub(super) async fn drive(inner: Arc<Inner>, mut rec: SagaRecord, cancel: Arc<Notify>) {
    let mut exit = DriverExit {
        inner: Arc::clone(&inner),
        id: rec.id,
        ended: None,
    };
    let Some(def) = inner.defs.get(&rec.definition_key()).cloned() else {
        tracing::error!(saga.id = %rec.id, definition = %rec.definition_key(), "unknown definition");
        return;
    };
    loop {
        match advance(&inner, &def, &mut rec, &cancel).await {
            Flow::Continue => {}
            Flow::Stop => return,
            Flow::Ended => {
                exit.ended = Some(Arc::new(rec));
                return;
            }
        }
    }
}

/// What a transition decides, before it is written.
struct Next {
    event: HistoryEvent,
    /// Give the saga back (owner cleared): it ended, parked, or waits longer than half a lease.
    release: bool,
}

async fn advance(inner: &Arc<Inner>, def: &SagaDef, rec: &mut SagaRecord, cancel: &Notify) -> Flow {
    if !rec.status.is_active() {
        return Flow::Stop;
    }
    // Durable timer: sleep until the wake-up time (we only hold the lease for short waits).
    if let Some(wake) = rec.wake_at
        && wake > inner.clock.now_ms()
    {
        let until = inner.clock.instant_at(wake);
        let renew_every = inner.lease / 3;
        // Only a wait before a step that could still be compensated is cut short by a
        // cancellation; a compensation's or a post-pivot step's retry wait runs its course.
        let cancellable = !rec.compensating
            && def.can_compensate_at(usize::try_from(rec.step).unwrap_or(usize::MAX));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                () = cancel.notified(), if cancellable => { rec.cancel_requested = true; break; }
                () = tokio::time::sleep(renew_every) => {
                    let now = inner.clock.now_ms();
                    if inner.store.renew(rec.id, rec.fence, inner.lease_until(now)).await.is_err() {
                        return Flow::Stop;
                    }
                }
            }
        }
        rec.wake_at = None;
    }
    let now = inner.clock.now_ms();
    let n = def.steps.len();
    let step = usize::try_from(rec.step).unwrap_or(usize::MAX);
    let next = if rec.compensating {
        if step == 0 || step > n {
            return Flow::Stop;
        }
        compensate_one(inner, def, rec, step - 1).await
    } else {
        if step >= n {
            return Flow::Stop;
        }
        let deadline_passed = rec.deadline.is_some_and(|d| now >= d);
        if (rec.cancel_requested || deadline_passed) && def.can_compensate_at(step) {
            let why = if rec.cancel_requested {
                CANCELLED
            } else {
                DEADLINE_EXCEEDED
            };
            Some(begin_compensation(rec, step, now, why))
        } else {
            forward_one(inner, def, rec, step, cancel).await
        }
    };
    let Some(next) = next else {
        return Flow::Stop;
    };
    commit(inner, def, rec, next).await
}

async fn commit(inner: &Inner, def: &SagaDef, rec: &mut SagaRecord, next: Next) -> Flow {
    let now = inner.clock.now_ms();
    rec.updated_at = now;
    let release = next.release || !rec.status.is_active();
    if release {
        rec.owner = None;
        rec.lease_until = 0;
    } else {
        let wait = rec.wake_at.map_or(0, |w| (w - now).max(0));
        rec.lease_until = inner.lease_until(now) + wait;
    }
    let t = Transition {
        expected_fence: rec.fence,
        record: rec.clone(),
        event: next.event,
    };
    let event = t.event.clone();
    match inner.store.write(&t).await {
        Ok(cancel) => {
            rec.cancel_requested |= cancel;
        }
        Err(e) => {
            tracing::warn!(error = %e, "saga write failed; leaving the saga to recovery");
            return Flow::Stop;
        }
    }
    inner.notify(rec, &event);
    if release
        && rec.status.is_active()
        && let Some(at) = rec.wake_at
    {
        inner.add_timer(at);
    }
    let outcome = match rec.status {
        SagaStatus::Completed => Some("completed"),
        SagaStatus::Compensated => Some("compensated"),
        SagaStatus::Parked => {
            tracing::warn!(error = ?rec.error, "saga parked");
            Some("parked")
        }
        _ => None,
    };
    if let Some(outcome) = outcome {
        metrics::counter!(
            names::SAGA_EXECUTIONS,
            names::SAGA_NAME => def.name.clone(),
            names::OUTCOME => outcome
        )
        .increment(1);
    }
    if !rec.status.is_active() {
        Flow::Ended
    } else if release {
        Flow::Stop
    } else {
        Flow::Continue
    }
}

fn begin_compensation(rec: &mut SagaRecord, failed_step: usize, now: i64, why: &str) -> Next {
    rec.compensating = true;
    rec.step = u32::try_from(failed_step).unwrap_or(u32::MAX);
    rec.attempt = 0;
    rec.wake_at = None;
    rec.error = Some(why.to_owned());
    rec.status = if failed_step == 0 {
        SagaStatus::Compensated
    } else {
        SagaStatus::Compensating
    };
    let event = if failed_step == 0 {
        "compensated"
    } else {
        "compensating"
    };
    Next {
        event: HistoryEvent::new(now, event).error(why),
        release: false,
    }
}

/// Step `i` was dropped half-way by a cancellation or the deadline: its outcome is unknown, so
/// it is compensated too (compensations tolerate "never happened"), then the steps before it.
fn interrupted(
    inner: &Inner,
    rec: &mut SagaRecord,
    step: &str,
    i: usize,
    attempt: u32,
    why: &str,
) -> Next {
    let now = inner.clock.now_ms();
    rec.compensating = true;
    rec.step = u32::try_from(i + 1).unwrap_or(u32::MAX);
    rec.attempt = 0;
    rec.wake_at = None;
    rec.error = Some(why.to_owned());
    rec.status = SagaStatus::Compensating;
    rec.cancel_requested |= why == CANCELLED;
    Next {
        event: HistoryEvent::new(now, "step_interrupted")
            .step(step, attempt)
            .error(why),
        release: false,
    }
}

fn park(rec: &mut SagaRecord, step: &str, attempt: u32, now: i64, why: String) -> Next {
    rec.status = SagaStatus::Parked;
    rec.wake_at = None;
    rec.error = Some(why.clone());
    Next {
        event: HistoryEvent::new(now, "parked")
            .step(step, attempt)
            .error(why),
        release: true,
    }
}

/// `not_after`: wake no later than this (the saga deadline, for a step that the deadline
/// would turn into a compensation), so a long retry wait does not outlive the deadline.
fn schedule_retry(
    inner: &Inner,
    rec: &mut SagaRecord,
    step: &str,
    delay: Duration,
    now: i64,
    err: &StepError,
    not_after: Option<i64>,
) -> Next {
    let wake = not_after.map_or(now + ms(delay), |d| (now + ms(delay)).min(d.max(now)));
    let delay = Duration::from_millis(u64::try_from(wake - now).unwrap_or(0));
    rec.wake_at = Some(wake);
    rec.error = Some(err.to_string());
    metrics::counter!(
        names::SAGA_STEP_RETRIES,
        names::SAGA_NAME => rec.name.clone(),
        names::STEP_NAME => step.to_owned()
    )
    .increment(1);
    Next {
        event: HistoryEvent::new(now, "retry_scheduled")
            .step(step, rec.attempt)
            .error(err.to_string()),
        // Long waits give the saga back to the store; the poller claims it when it is due.
        release: delay > inner.lease / 2,
    }
}

/// How a run of a step or compensation ended.
enum Ran {
    /// The action finished (or failed, timed out, panicked).
    Outcome(Outcome),
    /// The lease was lost while it ran; the action was dropped.
    LeaseLost,
    /// A cancellation or the saga deadline dropped the action; its outcome is unknown.
    Interrupted(&'static str),
}

/// What may interrupt a running step: only a step that would be compensated if it failed
/// (before the pivot) can be dropped half-way, since its compensation then undoes whatever
/// part of it took effect.
struct Interrupt<'a> {
    cancel: &'a Notify,
    deadline: Option<i64>,
}

const CANCELLED: &str = "cancelled";
const DEADLINE_EXCEEDED: &str = "deadline exceeded";

/// Run an erased action with timeout, panic capture and lease renewal; with `interrupt`, a
/// cancellation or the saga deadline drops it.
async fn run_action(
    inner: &Inner,
    rec: &SagaRecord,
    action: &ErasedFn,
    ctx: StepContext,
    timeout: Option<Duration>,
    interrupt: Option<Interrupt<'_>>,
) -> Ran {
    let kind = if ctx.is_compensation() {
        "compensation"
    } else {
        "step"
    };
    let span =
        tracing::info_span!("saga.step", step = %ctx.step_name(), attempt = ctx.attempt(), kind);
    let saga = rec.name.clone();
    let step_name = ctx.step_name().to_owned();
    let fut = AssertUnwindSafe(action(ctx, &rec.data)).catch_unwind();
    let timed = async {
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.ok(),
            None => Some(fut.await),
        }
    }
    .instrument(span);
    let interruptible = interrupt.is_some();
    let interrupted = async {
        let Some(i) = interrupt else {
            return std::future::pending().await;
        };
        let deadline = async {
            match i.deadline {
                Some(d) => tokio::time::sleep_until(inner.clock.instant_at(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = i.cancel.notified() => CANCELLED,
            () = deadline => DEADLINE_EXCEEDED,
        }
    };
    let started = tokio::time::Instant::now();
    tokio::pin!(timed, interrupted);
    let renew_every = inner.lease / 3;
    let result = loop {
        // Biased, the action first: an action done at its first poll never polls (and so never
        // arms) the renewal timer or the deadline.
        tokio::select! {
            biased;
            r = &mut timed => break r,
            why = &mut interrupted => {
                tracing::info!(reason = why, "step interrupted");
                return Ran::Interrupted(why);
            }
            () = tokio::time::sleep(renew_every) => {
                let now = inner.clock.now_ms();
                if let Err(e) = inner.store.renew(rec.id, rec.fence, inner.lease_until(now)).await {
                    tracing::warn!(error = %e, "lease renewal failed; abandoning the step");
                    return Ran::LeaseLost;
                }
                // A cancellation requested through another instance reaches this one only
                // through the store: look at the flag on each renewal.
                if interruptible
                    && let Ok(Some(stored)) = inner.store.load(rec.id).await
                    && stored.cancel_requested
                {
                    tracing::info!(reason = CANCELLED, "step interrupted");
                    return Ran::Interrupted(CANCELLED);
                }
            }
        }
    };
    metrics::histogram!(
        names::SAGA_STEP_DURATION,
        names::SAGA_NAME => saga,
        names::STEP_NAME => step_name
    )
    .record(started.elapsed().as_secs_f64());
    Ran::Outcome(match result {
        None => Outcome::Failed(StepError::transient(format!(
            "timed out after {:?}",
            timeout.unwrap_or_default()
        ))),
        Some(Err(panic)) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".to_owned());
            Outcome::Failed(StepError::business(format!("step panicked: {msg}")))
        }
        Some(Ok(outcome)) => outcome,
    })
}

fn corrupt(rec: &SagaRecord, e: serde_json::Error) -> String {
    Error::CorruptData {
        id: rec.id,
        source: e,
    }
    .to_string()
}

async fn forward_one(
    inner: &Inner,
    def: &SagaDef,
    rec: &mut SagaRecord,
    i: usize,
    cancel: &Notify,
) -> Option<Next> {
    let step = def.steps.get(i)?;
    let attempt = rec.attempt + 1;
    let ctx = StepContext::new(rec.id, &def.name, &step.name, i, attempt, false);
    // Only compensatable steps are interrupted: the pivot and the steps after it must finish.
    let interrupt =
        (step.kind == StepKind::Compensatable && def.can_compensate_at(i)).then_some(Interrupt {
            cancel,
            deadline: rec.deadline,
        });
    let outcome = match run_action(inner, rec, &step.action, ctx, step.timeout, interrupt).await {
        Ran::Outcome(outcome) => outcome,
        Ran::LeaseLost => return None,
        Ran::Interrupted(why) => return Some(interrupted(inner, rec, &step.name, i, attempt, why)),
    };
    let now = inner.clock.now_ms();
    Some(match outcome {
        Outcome::Done(data) => {
            rec.data = data;
            rec.step += 1;
            rec.attempt = 0;
            rec.wake_at = None;
            rec.error = None;
            if i + 1 == def.steps.len() {
                rec.status = SagaStatus::Completed;
                Next {
                    event: HistoryEvent::new(now, "completed").step(&step.name, attempt),
                    release: true,
                }
            } else {
                Next {
                    event: HistoryEvent::new(now, "step_completed").step(&step.name, attempt),
                    release: false,
                }
            }
        }
        Outcome::Corrupt(e) => {
            let why = corrupt(rec, e);
            park(rec, &step.name, attempt, now, why)
        }
        Outcome::Failed(err) => {
            rec.attempt = attempt;
            let can_compensate = step.kind != StepKind::Retriable;
            match err.kind() {
                crate::ErrorKind::Transient if step.retry.allows_another(attempt) => {
                    let not_after = rec.deadline.filter(|_| def.can_compensate_at(i));
                    let delay = step.retry.delay(attempt);
                    schedule_retry(inner, rec, &step.name, delay, now, &err, not_after)
                }
                crate::ErrorKind::Fatal => park(rec, &step.name, attempt, now, err.to_string()),
                _ if can_compensate => {
                    let why = format!("step {} failed: {err}", step.name);
                    let mut next = begin_compensation(rec, i, now, &why);
                    next.event = next.event.step(&step.name, attempt);
                    next
                }
                _ => park(
                    rec,
                    &step.name,
                    attempt,
                    now,
                    format!("retriable step {} gave up: {err}", step.name),
                ),
            }
        }
    })
}

async fn compensate_one(
    inner: &Inner,
    def: &SagaDef,
    rec: &mut SagaRecord,
    j: usize,
) -> Option<Next> {
    let step = def.steps.get(j)?;
    let now = inner.clock.now_ms();
    let Some(comp) = step.compensation.as_ref() else {
        return Some(park(
            rec,
            &step.name,
            0,
            now,
            format!("step {} has no compensation", step.name),
        ));
    };
    let attempt = rec.attempt + 1;
    let ctx = StepContext::new(rec.id, &def.name, &step.name, j, attempt, true);
    let Ran::Outcome(outcome) = run_action(inner, rec, comp, ctx, step.timeout, None).await else {
        return None;
    };
    let now = inner.clock.now_ms();
    Some(match outcome {
        Outcome::Done(data) => {
            rec.data = data;
            rec.step -= 1;
            rec.attempt = 0;
            rec.wake_at = None;
            if j == 0 {
                rec.status = SagaStatus::Compensated;
                Next {
                    event: HistoryEvent::new(now, "compensated").step(&step.name, attempt),
                    release: true,
                }
            } else {
                Next {
                    event: HistoryEvent::new(now, "step_compensated").step(&step.name, attempt),
                    release: false,
                }
            }
        }
        Outcome::Corrupt(e) => {
            let why = corrupt(rec, e);
            park(rec, &step.name, attempt, now, why)
        }
        Outcome::Failed(err) => {
            rec.attempt = attempt;
            if err.kind() != crate::ErrorKind::Fatal
                && step.compensation_retry.allows_another(attempt)
            {
                let delay = step.compensation_retry.delay(attempt);
                schedule_retry(inner, rec, &step.name, delay, now, &err, None)
            } else {
                park(
                    rec,
                    &step.name,
                    attempt,
                    now,
                    format!("compensation of {} failed: {err}", step.name),
                )
            }
        }
    })
}
