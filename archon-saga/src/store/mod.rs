//! The store trait, its records, and the stores: memory, SQLite, PostgreSQL, and the
//! crash-injecting wrapper used by the crash harness.

mod crash;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod tests;
mod wake;

use async_trait::async_trait;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteStore;

pub use self::{
    crash::{CrashMode, CrashingStore},
    memory::MemoryStore,
    record::{HistoryEvent, ListQuery, SagaRecord, SagaStatus, Transition},
    wake::WorkSignal,
};
use crate::{Result, SagaId};

/// Durable storage of saga instances and their history.
///
/// # Contract
/// - [`create`](Self::create) and [`write`](Self::write) are the *durable writes*: when they
///   return `Ok`, the change is committed (SQLite `synchronous=FULL`, PostgreSQL commit).
///   Each writes the saga row and appends one history event atomically.
/// - `write` is fenced: it applies only if the stored fencing token equals
///   `transition.expected_fence`, else it returns [`Error::LeaseLost`](crate::Error::LeaseLost)
///   and changes nothing. A write never clears `cancel_requested` (it is OR-ed), and reports the
///   stored flag back.
/// - [`claim`](Self::claim) atomically takes up to `limit` runnable sagas (status running or
///   compensating, `wake_at <= now`, definition in `definitions`, unowned or lease expired),
///   sets the owner and lease, and increments the fencing token of each. On PostgreSQL this
///   uses `FOR UPDATE SKIP LOCKED`, so concurrent claimers never take the same saga.
/// - Implementations may batch concurrent writes into one transaction (group commit), but must
///   keep the per-write fencing check and report each write's own outcome.
///
/// The conformance suite in `tests/store_conformance.rs` checks this contract on every store.
///
/// ```
/// use archon_saga::{MemoryStore, SagaStore};
/// fn _object_safe(_: std::sync::Arc<dyn SagaStore>) {}
/// _object_safe(std::sync::Arc::new(MemoryStore::new()));
/// ```
#[async_trait]
pub trait SagaStore: Send + Sync + std::fmt::Debug + 'static {
    /// Insert a new saga with its first history event (one durable write).
    /// Fails with [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the id is taken.
    async fn create(&self, record: &SagaRecord, event: &HistoryEvent) -> Result<()>;

    /// Apply one fenced state transition (one durable write). Returns the stored
    /// `cancel_requested` flag after the write.
    async fn write(&self, transition: &Transition) -> Result<bool>;

    /// Extend the lease of an owned saga; fenced like [`write`](Self::write).
    async fn renew(&self, id: SagaId, fence: i64, lease_until: i64) -> Result<()>;

    /// Claim runnable sagas (see the contract above).
    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
        definitions: &[String],
    ) -> Result<Vec<SagaRecord>>;

    /// Clear the owner of every saga held by `owner` (used when an instance restarts under the
    /// same id: its previous incarnation is dead, so its leases can be reclaimed at once).
    async fn release_owner(&self, owner: &str) -> Result<u64>;

    /// Mark a saga for cancellation (not fenced: the owner sees it on its next write).
    async fn request_cancel(&self, id: SagaId) -> Result<()>;

    /// One saga, if it exists.
    async fn load(&self, id: SagaId) -> Result<Option<SagaRecord>>;

    /// A saga's history, oldest first.
    async fn history(&self, id: SagaId) -> Result<Vec<HistoryEvent>>;

    /// Sagas matching the query, least recently updated first (oldest stuck first).
    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaRecord>>;

    /// Definition keys (`name@vN`) of sagas that are not finished (running, compensating,
    /// parked).
    async fn unfinished_definitions(&self) -> Result<Vec<String>>;

    /// A signal that fires when work may have become claimable through *another* user of the
    /// store (a new unowned saga, a released lease, a timer due now), so the engine claims at
    /// once instead of at its next poll. Called once by [`Engine::start`](crate::Engine::start).
    /// The default is `None`: the engine finds such work by polling only. PostgreSQL returns
    /// a signal fed by `LISTEN/NOTIFY`.
    async fn work_signal(&self) -> Result<Option<WorkSignal>> {
        Ok(None)
    }
}
