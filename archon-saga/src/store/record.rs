//! What the stores keep.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::SagaId;

/// Where a saga is in its life.
///
/// ```
/// use archon_saga::SagaStatus;
/// assert_eq!("parked".parse::<SagaStatus>().unwrap(), SagaStatus::Parked);
/// assert!(SagaStatus::Compensated.is_finished());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Going forward.
    Running,
    /// Undoing completed steps in reverse order.
    Compensating,
    /// All steps succeeded.
    Completed,
    /// A step failed (or the saga was cancelled or ran past its deadline) and every completed
    /// step was compensated.
    Compensated,
    /// Stopped for an operator: a fatal error, an exhausted retry policy after the pivot, a
    /// compensation that keeps failing, or corrupt data.
    Parked,
}

impl SagaStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Parked => "parked",
        }
    }

    /// Completed or Compensated.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated)
    }

    /// Running or Compensating (the engine works on it).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => Self::Running,
            "compensating" => Self::Compensating,
            "completed" => Self::Completed,
            "compensated" => Self::Compensated,
            "parked" => Self::Parked,
            other => return Err(format!("unknown saga status {other:?}")),
        })
    }
}

/// One saga instance as stored. Times are Unix milliseconds.
///
/// The cursor `step` means: going forward, the index of the next step to run; compensating,
/// the number of completed steps still to undo (the next compensation is of step `step - 1`).
///
/// ```
/// use archon_saga::{SagaRecord, SagaStatus};
/// let r = SagaRecord::new(uuid::Uuid::new_v4(), "place-order", 1, "{}".into(), 0);
/// assert_eq!(r.status, SagaStatus::Running);
/// assert_eq!(r.definition_key(), "place-order@v1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRecord {
    /// Instance id.
    pub id: SagaId,
    /// Definition name.
    pub name: String,
    /// Definition version the instance is pinned to.
    pub version: u32,
    /// Status.
    pub status: SagaStatus,
    /// True once the saga entered the compensation phase (kept while parked).
    pub compensating: bool,
    /// Cursor (see the type docs).
    pub step: u32,
    /// Failed attempts of the current step (or compensation).
    pub attempt: u32,
    /// The saga data, JSON.
    pub data: String,
    /// Do not run before this time (durable timer), if set.
    pub wake_at: Option<i64>,
    /// Saga deadline, if any.
    pub deadline: Option<i64>,
    /// Cancellation was requested.
    pub cancel_requested: bool,
    /// Last error or park reason.
    pub error: Option<String>,
    /// Owning orchestrator instance, if any.
    pub owner: Option<String>,
    /// Fencing token: incremented on every claim.
    pub fence: i64,
    /// The owner's lease ends here.
    pub lease_until: i64,
    /// Created at.
    pub created_at: i64,
    /// Last transition at.
    pub updated_at: i64,
}

impl SagaRecord {
    /// A fresh running record at step 0.
    pub fn new(id: SagaId, name: &str, version: u32, data: String, now: i64) -> Self {
        Self {
            id,
            name: name.to_owned(),
            version,
            status: SagaStatus::Running,
            compensating: false,
            step: 0,
            attempt: 0,
            data,
            wake_at: None,
            deadline: None,
            cancel_requested: false,
            error: None,
            owner: None,
            fence: 0,
            lease_until: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// `name@vN`.
    pub fn definition_key(&self) -> String {
        crate::definition::definition_key(&self.name, self.version)
    }
}

/// One entry of a saga's history: a step attempt's result or a lifecycle change.
///
/// ```
/// let e = archon_saga::HistoryEvent::new(0, "started");
/// assert_eq!(e.event, "started");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// When (Unix ms).
    pub at: i64,
    /// What happened: `started`, `step_completed`, `step_failed`, `step_interrupted`,
    /// `retry_scheduled`, `compensating`, `step_compensated`, `compensation_failed`, `parked`,
    /// `completed`, `compensated`, `cancel_requested`, `operator_*`.
    pub event: String,
    /// The step concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt number, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Error text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HistoryEvent {
    /// An event with no step.
    pub fn new(at: i64, event: &str) -> Self {
        Self {
            at,
            event: event.to_owned(),
            step: None,
            attempt: None,
            error: None,
        }
    }

    pub(crate) fn step(mut self, step: &str, attempt: u32) -> Self {
        self.step = Some(step.to_owned());
        self.attempt = Some(attempt);
        self
    }

    pub(crate) fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// A fenced state change: the new record (owner, fence and lease included), applied only if the
/// stored fence equals `expected_fence`, plus one history event.
///
/// ```
/// use archon_saga::{HistoryEvent, SagaRecord, Transition};
/// let r = SagaRecord::new(uuid::Uuid::new_v4(), "s", 1, "{}".into(), 0);
/// let t = Transition { expected_fence: r.fence, record: r, event: HistoryEvent::new(0, "x") };
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The fence the writer holds.
    pub expected_fence: i64,
    /// The saga after the transition.
    pub record: SagaRecord,
    /// The history event to append.
    pub event: HistoryEvent,
}

/// Which sagas to list.
///
/// ```
/// use archon_saga::{ListQuery, SagaStatus};
/// let q = ListQuery::status(SagaStatus::Parked).updated_before(1_700_000_000_000).limit(10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<SagaStatus>,
    /// Only sagas whose last transition is older than this (Unix ms).
    pub updated_before: Option<i64>,
    /// Only this definition name.
    pub name: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            status: None,
            updated_before: None,
            name: None,
            limit: 100,
        }
    }
}

impl ListQuery {
    /// Sagas with this status.
    pub fn status(status: SagaStatus) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Only sagas last updated before `ms` (Unix ms).
    pub fn updated_before(mut self, ms: i64) -> Self {
        self.updated_before = Some(ms);
        self
    }

    /// Only this definition.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// At most `limit` results.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub(crate) fn matches(&self, r: &SagaRecord) -> bool {
        self.status.is_none_or(|s| s == r.status)
            && self.updated_before.is_none_or(|t| r.updated_at < t)
            && self.name.as_deref().is_none_or(|n| n == r.name)
    }
}

/// In-row history tails longer than this (bytes) are moved to the history table on the next
/// write, so a saga's row stays small (one page, no overflow or TOAST) however long it lives.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const HISTORY_SPILL_BYTES: usize = 1024;

/// One history event as stored: a JSON line (compact JSON never contains a raw newline).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn history_line(e: &HistoryEvent) -> crate::Result<String> {
    let mut line = serde_json::to_string(e).map_err(crate::Error::Encode)?;
    line.push('\n');
    Ok(line)
}

/// Parse stored history text: spilled chunks (oldest first) then the in-row tail, each a
/// sequence of JSON lines. An event written by an older version (one JSON object per row, no
/// newline) parses the same way.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn parse_history<'a>(
    chunks: impl IntoIterator<Item = &'a str>,
) -> serde_json::Result<Vec<HistoryEvent>> {
    chunks
        .into_iter()
        .flat_map(str::lines)
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}
