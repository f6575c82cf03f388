//! What a step sees and what it returns.

use std::fmt;

use crate::SagaId;

/// How a step failure is handled.
///
/// ```
/// use archon_saga::{ErrorKind, StepError};
/// assert_eq!(StepError::transient("503").kind(), ErrorKind::Transient);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Try again with the step's retry policy (timeouts count as transient).
    Transient,
    /// The business said no: start compensating (after the pivot: park).
    Business,
    /// Something is broken: park the saga for an operator.
    Fatal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Business => "business",
            Self::Fatal => "fatal",
        })
    }
}

/// A classified step (or compensation) failure.
///
/// ```
/// use archon_saga::{ErrorKind, StepError};
/// let e = StepError::business("card declined");
/// assert_eq!(e.kind(), ErrorKind::Business);
/// assert_eq!(e.message(), "card declined");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    kind: ErrorKind,
    message: String,
}

impl StepError {
    /// A failure of the given kind.
    ///
    /// ```
    /// # use archon_saga::{ErrorKind, StepError};
    /// let e = StepError::new(ErrorKind::Fatal, "schema mismatch");
    /// assert_eq!(e.kind(), ErrorKind::Fatal);
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A failure worth retrying.
    ///
    /// ```
    /// # use archon_saga::StepError;
    /// let e = StepError::transient("connection reset");
    /// ```
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// A business refusal: compensate.
    ///
    /// ```
    /// # use archon_saga::StepError;
    /// let e = StepError::business("out of stock");
    /// ```
    pub fn business(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Business, message)
    }

    /// A failure nobody should retry automatically: park.
    ///
    /// ```
    /// # use archon_saga::StepError;
    /// let e = StepError::fatal("bad configuration");
    /// ```
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    /// The kind.
    ///
    /// ```
    /// # use archon_saga::{ErrorKind, StepError};
    /// assert_eq!(StepError::fatal("x").kind(), ErrorKind::Fatal);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    ///
    /// ```
    /// # use archon_saga::StepError;
    /// assert_eq!(StepError::fatal("x").message(), "x");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for StepError {}

/// What a step returns: the (possibly updated) saga data, or a classified failure.
pub type StepResult<D> = Result<D, StepError>;

/// What a running step (or compensation) knows about itself.
///
/// The [`idempotency_key`](Self::idempotency_key) is deterministic: the same saga and step always
/// give the same key, across retries and across restarts, so a participant that dedupes on it
/// applies the effect at most once even when the engine re-runs a step whose outcome it lost.
///
/// ```
/// # async fn step(ctx: archon_saga::StepContext, data: u32) -> archon_saga::StepResult<u32> {
/// // pass ctx.idempotency_key() to the remote call, e.g. as an `Idempotency-Key` header
/// let _key = ctx.idempotency_key();
/// Ok(data + 1)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StepContext {
    pub(crate) saga_id: SagaId,
    pub(crate) saga_name: String,
    pub(crate) step_name: String,
    pub(crate) step_index: usize,
    pub(crate) attempt: u32,
    pub(crate) compensating: bool,
    pub(crate) idempotency_key: String,
}

impl StepContext {
    pub(crate) fn new(
        saga_id: SagaId,
        saga_name: &str,
        step_name: &str,
        step_index: usize,
        attempt: u32,
        compensating: bool,
    ) -> Self {
        Self {
            saga_id,
            saga_name: saga_name.to_owned(),
            step_name: step_name.to_owned(),
            step_index,
            attempt,
            compensating,
            idempotency_key: idempotency_key(saga_id, step_name, compensating),
        }
    }

    /// The saga instance id.
    pub fn saga_id(&self) -> SagaId {
        self.saga_id
    }

    /// The saga definition name.
    pub fn saga_name(&self) -> &str {
        &self.saga_name
    }

    /// The step name.
    pub fn step_name(&self) -> &str {
        &self.step_name
    }

    /// The step's position in the definition, from 0.
    pub fn step_index(&self) -> usize {
        self.step_index
    }

    /// Which attempt this is, from 1 (attempts after a restart count on).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// True when this is the step's compensation.
    pub fn is_compensation(&self) -> bool {
        self.compensating
    }

    /// The deterministic idempotency key: `<saga id>/<step>` for the step,
    /// `<saga id>/<step>/compensate` for its compensation.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
}

/// The idempotency key for a step (or its compensation) of a saga.
///
/// ```
/// let id = uuid::Uuid::nil();
/// assert_eq!(
///     archon_saga::idempotency_key(id, "charge", false),
///     "00000000-0000-0000-0000-000000000000/charge"
/// );
/// ```
pub fn idempotency_key(saga_id: SagaId, step_name: &str, compensating: bool) -> String {
    if compensating {
        format!("{saga_id}/{step_name}/compensate")
    } else {
        format!("{saga_id}/{step_name}")
    }
}
