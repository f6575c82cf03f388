//! A store wrapper that "crashes the orchestrator" at the k-th durable write.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use async_trait::async_trait;

use super::{HistoryEvent, ListQuery, SagaRecord, SagaStore, Transition};
use crate::{Error, Result, SagaId};

/// Whether the failing write reaches the store.
///
/// ```
/// let m = archon_saga::CrashMode::AfterCommit;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// The process dies before the k-th write commits: the write is lost.
    BeforeCommit,
    /// The process dies after the k-th write commits but before anyone learns it did.
    AfterCommit,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated crash at durable write {0}")]
struct Crashed(u64);

/// Wraps a store and fails at the k-th durable write (`create` or `write`, counted from 1);
/// after that every call fails, as if the orchestrator process had died. Build a fresh engine
/// over the inner store to "restart".
///
/// ```
/// use std::sync::Arc;
/// use archon_saga::{CrashMode, CrashingStore, MemoryStore};
/// let inner = Arc::new(MemoryStore::new());
/// let store = CrashingStore::new(inner.clone(), 3, CrashMode::BeforeCommit);
/// assert!(!store.crashed());
/// ```
#[derive(Debug)]
pub struct CrashingStore<S: ?Sized> {
    inner: Arc<S>,
    crash_at: u64,
    mode: CrashMode,
    writes: AtomicU64,
    crashed: AtomicBool,
}

impl<S: SagaStore + ?Sized> CrashingStore<S> {
    /// Crash at durable write number `crash_at` (from 1; 0 = never).
    pub fn new(inner: Arc<S>, crash_at: u64, mode: CrashMode) -> Self {
        Self {
            inner,
            crash_at,
            mode,
            writes: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
        }
    }

    /// True once the crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Durable writes attempted so far (including the one that crashed).
    pub fn durable_writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn dead(&self) -> Result<()> {
        if self.crashed() {
            Err(Error::backend("crash", Crashed(self.crash_at)))
        } else {
            Ok(())
        }
    }

    /// Count a durable write; `Ok(true)` if this is the one that crashes.
    fn count(&self) -> Result<bool> {
        self.dead()?;
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(n == self.crash_at)
    }

    async fn durable<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        if !self.count()? {
            return op.await;
        }
        // Dead from here on: no later call gets through, even while this write is in flight.
        self.crashed.store(true, Ordering::SeqCst);
        if self.mode == CrashMode::AfterCommit {
            let _ = op.await;
        }
        Err(Error::backend("crash", Crashed(self.crash_at)))
    }
}

#[async_trait]
impl<S: SagaStore + ?Sized> SagaStore for CrashingStore<S> {
    async fn create(&self, record: &SagaRecord, event: &HistoryEvent) -> Result<()> {
        self.durable(self.inner.create(record, event)).await
    }

    async fn write(&self, transition: &Transition) -> Result<bool> {
        self.durable(self.inner.write(transition)).await
    }

    async fn renew(&self, id: SagaId, fence: i64, lease_until: i64) -> Result<()> {
        self.dead()?;
        self.inner.renew(id, fence, lease_until).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
        definitions: &[String],
    ) -> Result<Vec<SagaRecord>> {
        self.dead()?;
        self.inner
            .claim(owner, now, lease_until, limit, definitions)
            .await
    }

    async fn release_owner(&self, owner: &str) -> Result<u64> {
        self.dead()?;
        self.inner.release_owner(owner).await
    }

    async fn request_cancel(&self, id: SagaId) -> Result<()> {
        self.dead()?;
        self.inner.request_cancel(id).await
    }

    async fn load(&self, id: SagaId) -> Result<Option<SagaRecord>> {
        self.dead()?;
        self.inner.load(id).await
    }

    async fn history(&self, id: SagaId) -> Result<Vec<HistoryEvent>> {
        self.dead()?;
        self.inner.history(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaRecord>> {
        self.dead()?;
        self.inner.list(query).await
    }

    async fn unfinished_definitions(&self) -> Result<Vec<String>> {
        self.dead()?;
        self.inner.unfinished_definitions().await
    }
}
