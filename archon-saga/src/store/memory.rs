//! The in-memory store (tests, examples; nothing survives the process).

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;

use super::{HistoryEvent, ListQuery, SagaRecord, SagaStore, Transition};
use crate::{Error, Result, SagaId};

#[derive(Debug, Default)]
struct State {
    sagas: HashMap<SagaId, SagaRecord>,
    history: HashMap<SagaId, Vec<HistoryEvent>>,
}

/// An in-memory [`SagaStore`]: the same contract as the durable stores, without durability.
///
/// ```
/// use archon_saga::MemoryStore;
/// let store = MemoryStore::new();
/// assert_eq!(store.durable_writes(), 0);
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    writes: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many durable writes (`create` + `write`) succeeded so far.
    pub fn durable_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Overwrite a saga's stored data without any checks (test hook for corrupt data).
    #[doc(hidden)]
    pub fn corrupt_data(&self, id: SagaId, data: &str) {
        if let Some(r) = self.lock().sagas.get_mut(&id) {
            data.clone_into(&mut r.data);
        }
    }
}

#[async_trait]
impl SagaStore for MemoryStore {
    async fn create(&self, record: &SagaRecord, event: &HistoryEvent) -> Result<()> {
        let mut st = self.lock();
        if st.sagas.contains_key(&record.id) {
            return Err(Error::AlreadyExists(record.id));
        }
        st.sagas.insert(record.id, record.clone());
        st.history.insert(record.id, vec![event.clone()]);
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write(&self, t: &Transition) -> Result<bool> {
        let mut st = self.lock();
        let id = t.record.id;
        let cur = st.sagas.get_mut(&id).ok_or(Error::LeaseLost(id))?;
        if cur.fence != t.expected_fence {
            return Err(Error::LeaseLost(id));
        }
        let cancel = cur.cancel_requested || t.record.cancel_requested;
        *cur = t.record.clone();
        cur.cancel_requested = cancel;
        st.history.entry(id).or_default().push(t.event.clone());
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(cancel)
    }

    async fn renew(&self, id: SagaId, fence: i64, lease_until: i64) -> Result<()> {
        let mut st = self.lock();
        match st.sagas.get_mut(&id) {
            Some(r) if r.fence == fence => {
                r.lease_until = lease_until;
                Ok(())
            }
            _ => Err(Error::LeaseLost(id)),
        }
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
        definitions: &[String],
    ) -> Result<Vec<SagaRecord>> {
        let mut st = self.lock();
        let mut due: Vec<&mut SagaRecord> = st
            .sagas
            .values_mut()
            .filter(|r| {
                r.status.is_active()
                    && r.wake_at.is_none_or(|w| w <= now)
                    && (r.owner.is_none() || r.lease_until < now)
                    && definitions.contains(&r.definition_key())
            })
            .collect();
        due.sort_by_key(|r| (r.wake_at.unwrap_or(i64::MIN), r.updated_at));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|r| {
                r.owner = Some(owner.to_owned());
                r.fence += 1;
                r.lease_until = lease_until;
                r.clone()
            })
            .collect())
    }

    async fn release_owner(&self, owner: &str) -> Result<u64> {
        let mut st = self.lock();
        let mut n = 0;
        for r in st.sagas.values_mut() {
            if r.owner.as_deref() == Some(owner) {
                r.owner = None;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn request_cancel(&self, id: SagaId) -> Result<()> {
        let mut st = self.lock();
        let r = st.sagas.get_mut(&id).ok_or(Error::NotFound(id))?;
        r.cancel_requested = true;
        Ok(())
    }

    async fn load(&self, id: SagaId) -> Result<Option<SagaRecord>> {
        Ok(self.lock().sagas.get(&id).cloned())
    }

    async fn history(&self, id: SagaId) -> Result<Vec<HistoryEvent>> {
        Ok(self.lock().history.get(&id).cloned().unwrap_or_default())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaRecord>> {
        let st = self.lock();
        let mut v: Vec<SagaRecord> = st
            .sagas
            .values()
            .filter(|r| query.matches(r))
            .cloned()
            .collect();
        v.sort_by_key(|r| (r.updated_at, r.id));
        v.truncate(query.limit);
        Ok(v)
    }

    async fn unfinished_definitions(&self) -> Result<Vec<String>> {
        let st = self.lock();
        let mut v: Vec<String> = st
            .sagas
            .values()
            .filter(|r| !r.status.is_finished())
            .map(SagaRecord::definition_key)
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }
}
