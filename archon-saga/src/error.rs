//! The crate's one public error type.

use crate::SagaId;

/// Everything that can go wrong in archon-saga, by meaning.
///
/// Step failures are not errors of this type: a step returns a [`StepError`](crate::StepError)
/// and the engine turns it into a retry, a compensation or a parked saga. This type is for
/// the orchestrator itself: the store, definitions, operator actions.
///
/// ```
/// use archon_saga::Error;
/// let err = Error::NotFound(uuid::Uuid::nil());
/// assert!(err.to_string().contains("not found"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No saga with this id exists in the store.
    #[error("saga {0} not found")]
    NotFound(SagaId),
    /// A saga with this id already exists.
    #[error("saga {0} already exists")]
    AlreadyExists(SagaId),
    /// The write was refused because another owner holds the saga now (fencing token moved on).
    #[error("saga {0}: lease lost (fencing token no longer current)")]
    LeaseLost(SagaId),
    /// The store holds sagas of definitions this orchestrator does not have.
    #[error("unknown saga definitions in the store: {}", .0.join(", "))]
    UnknownDefinitions(Vec<String>),
    /// A definition was registered twice or is otherwise invalid.
    #[error("invalid saga definition: {0}")]
    InvalidDefinition(String),
    /// The saga's stored data does not decode into the definition's data type.
    #[error("saga {id}: corrupt data: {source}")]
    CorruptData {
        /// The saga.
        id: SagaId,
        /// Why decoding failed.
        #[source]
        source: serde_json::Error,
    },
    /// Encoding the saga data failed.
    #[error("encoding saga data: {0}")]
    Encode(#[source] serde_json::Error),
    /// The operator action does not apply to the saga in its current state.
    #[error("saga {id}: {reason}")]
    InvalidState {
        /// The saga.
        id: SagaId,
        /// Why the action was refused.
        reason: String,
    },
    /// The saga is being run by another live orchestrator instance.
    #[error("saga {id} is owned by instance {owner}")]
    Busy {
        /// The saga.
        id: SagaId,
        /// The owning instance.
        owner: String,
    },
    /// The engine has been shut down.
    #[error("engine is shut down")]
    Shutdown,
    /// A store backend failed.
    #[error("{backend} store: {source}")]
    Backend {
        /// Which backend (`memory`, `sqlite`, `postgres`, `crash`).
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The event bus (feature `events`) failed: subscribing to replies, publishing.
    #[error("event bus: {0}")]
    Bus(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub(crate) fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// True for [`Error::LeaseLost`].
    ///
    /// ```
    /// assert!(archon_saga::Error::LeaseLost(uuid::Uuid::nil()).is_lease_lost());
    /// ```
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost(_))
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
