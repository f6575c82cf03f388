#![doc = include_str!("../README.md")]

mod definition;
mod engine;
mod error;
#[cfg(feature = "events")]
pub mod events;
mod store;

#[cfg(feature = "postgres")]
pub use self::store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use self::store::SqliteStore;
pub use self::{
    definition::{
        AfterPivot, BeforePivot, Compensatable, ErrorKind, Pivot, Retriable, RetryPolicy, Saga,
        SagaBuilder, SagaData, Step, StepContext, StepError, StepKind, StepResult, idempotency_key,
    },
    engine::{Engine, EngineBuilder, SagaInspection, SagaListener},
    error::{Error, Result},
    store::{
        CrashMode, CrashingStore, HistoryEvent, ListQuery, MemoryStore, SagaRecord, SagaStatus,
        SagaStore, Transition, WorkSignal,
    },
};

/// A saga instance id.
pub type SagaId = uuid::Uuid;
