//! The engine: runs sagas concurrently, persists one durable write per transition, recovers
//! unfinished sagas on start, and claims work through leases.

mod clock;
mod driver;

mod listener;
mod names;
mod operator;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, broadcast},
    task::JoinHandle,
};
use tracing::Instrument as _;

use self::clock::{Clock, ms};
pub use self::{listener::SagaListener, operator::SagaInspection};
use crate::{
    Error, HistoryEvent, Result, Saga, SagaData, SagaId, SagaRecord, SagaStore, WorkSignal,
    definition::SagaDef,
};

/// What a driver tells waiters when it stops.
#[derive(Clone)]
enum DriverStop {
    /// The saga's end (finished or parked), as written.
    Ended(Arc<SagaRecord>),
    /// The driver stopped with the saga still active (released for a long wait, lease lost,
    /// shut down, aborted by an operator action): whoever drives it next is elsewhere or later.
    Stopped(SagaId),
}

struct Running {
    task: JoinHandle<()>,
    cancel: Arc<Notify>,
}

pub(crate) struct Inner {
    store: Arc<dyn SagaStore>,
    defs: HashMap<String, Arc<SagaDef>>,
    def_keys: Vec<String>,
    instance: String,
    lease: Duration,
    poll_interval: Duration,
    max_concurrent: usize,
    clock: Clock,
    running: Mutex<HashMap<SagaId, Running>>,
    /// How this instance's drivers stopped: for `wait`.
    events: broadcast::Sender<DriverStop>,
    wake: Notify,
    /// Wake-up times (Unix ms) of sagas this instance released for a long retry wait: the
    /// poller claims at each of them, not at its next poll.
    timers: Mutex<BinaryHeap<Reverse<i64>>>,
    /// A timer was added: the poller recomputes its sleep.
    timers_changed: Notify,
    shutdown: AtomicBool,
    poller: Mutex<Option<JoinHandle<()>>>,
    listeners: Vec<Arc<dyn SagaListener>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("instance", &self.instance)
            .field("definitions", &self.def_keys)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn running(&self) -> MutexGuard<'_, HashMap<SagaId, Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self, record: &SagaRecord, event: &HistoryEvent) {
        for l in &self.listeners {
            l.on_transition(record, event);
        }
    }

    fn lease_until(&self, now: i64) -> i64 {
        now + ms(self.lease)
    }

    fn timers(&self) -> MutexGuard<'_, BinaryHeap<Reverse<i64>>> {
        self.timers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A saga was released until `at`: claim it then.
    pub(crate) fn add_timer(&self, at: i64) {
        self.timers().push(Reverse(at));
        self.timers_changed.notify_one();
    }
}

/// The saga orchestrator.
///
/// Cheap to clone (an `Arc`). Register definitions on the [`EngineBuilder`], call
/// [`start`](Self::start) (recovery: unfinished sagas resume, unknown definitions are refused),
/// then [`start_saga`](Self::start_saga). Call [`shutdown`](Self::shutdown) to stop its tasks.
///
/// ```
/// use std::sync::Arc;
/// use archon_saga::{Engine, MemoryStore, Saga, SagaStatus, Step, StepContext, StepResult};
///
/// async fn add(_ctx: StepContext, n: u32) -> StepResult<u32> { Ok(n + 1) }
/// async fn sub(_ctx: StepContext, n: u32) -> StepResult<u32> { Ok(n - 1) }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_saga::Result<()> {
/// let saga = Saga::<u32>::builder("count").step(Step::compensatable("add", add, sub)).build()?;
/// let engine = Engine::builder(Arc::new(MemoryStore::new())).register(&saga).build()?;
/// engine.start().await?;
/// let id = engine.start_saga(&saga, 41).await?;
/// let done = engine.wait(id).await?;
/// assert_eq!(done.status, SagaStatus::Completed);
/// assert_eq!(done.data, "42");
/// engine.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Configures an [`Engine`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use archon_saga::{Engine, MemoryStore};
/// let engine = Engine::builder(Arc::new(MemoryStore::new()))
///     .instance_id("orders-1")
///     .lease(Duration::from_secs(10))
///     .poll_interval(Duration::from_millis(250))
///     .max_concurrent(512)
///     .build()
///     .unwrap();
/// ```
pub struct EngineBuilder {
    store: Arc<dyn SagaStore>,
    defs: Vec<Arc<SagaDef>>,
    instance: String,
    lease: Duration,
    poll_interval: Duration,
    max_concurrent: usize,
    listeners: Vec<Arc<dyn SagaListener>>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("instance", &self.instance)
            .field("definitions", &self.defs.len())
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .field("max_concurrent", &self.max_concurrent)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Add a [`SagaListener`] told about every committed transition.
    pub fn listener(mut self, listener: Arc<dyn SagaListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Register a definition (name + version). An engine only runs sagas of registered
    /// definitions.
    pub fn register<D: SagaData>(mut self, saga: &Saga<D>) -> Self {
        self.defs.push(Arc::clone(&saga.def));
        self
    }

    /// This instance's id (default `"local"`). Instances sharing a PostgreSQL database need
    /// distinct ids; a restarted instance with the same id takes its own sagas back at once.
    pub fn instance_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.instance);
        self
    }

    /// Lease length (default 30 s): another instance may take a saga over this long after its
    /// owner stopped renewing. Renewed every third of it while a step runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// How often the store is polled for due or orphaned sagas (default 1 s). Polling is the
    /// fallback: the engine also claims at once when it is told of new work, so the interval
    /// bounds only how late it finds what nobody announces.
    ///
    /// - Always announced (this instance): its own new sagas (it runs them at once), operator
    ///   actions through it, a driver ending while the instance was full, and the wake-up time
    ///   of every saga it released for a long retry wait.
    /// - Announced by the store's [`work_signal`](SagaStore::work_signal) (PostgreSQL
    ///   `LISTEN/NOTIFY`): sagas inserted unowned, leases released, timers due now, by any
    ///   instance or other writer of the tables.
    /// - Found only by polling: sagas of a crashed instance once their leases expire, timers
    ///   of sagas released by another instance, and everything when no signal is available
    ///   (e.g. the listening connection is down). Takeover after a crash therefore takes up
    ///   to lease + poll interval.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Most sagas driven at once by this instance (default 1024).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// Build the engine (fails on a definition registered twice).
    pub fn build(self) -> Result<Engine> {
        let mut defs = HashMap::new();
        for d in self.defs {
            let key = d.key();
            if defs.insert(key.clone(), d).is_some() {
                return Err(Error::InvalidDefinition(format!(
                    "definition {key} registered twice"
                )));
            }
        }
        let mut def_keys: Vec<String> = defs.keys().cloned().collect();
        def_keys.sort();
        let (events, _) = broadcast::channel(4096);
        Ok(Engine {
            inner: Arc::new(Inner {
                store: self.store,
                defs,
                def_keys,
                instance: self.instance,
                lease: self.lease,
                poll_interval: self.poll_interval,
                max_concurrent: self.max_concurrent,
                clock: Clock::new(),
                running: Mutex::new(HashMap::new()),
                events,
                wake: Notify::new(),
                timers: Mutex::new(BinaryHeap::new()),
                timers_changed: Notify::new(),
                shutdown: AtomicBool::new(false),
                poller: Mutex::new(None),
                listeners: self.listeners,
            }),
        })
    }
}

impl Engine {
    /// Start configuring an engine over `store`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// let b = archon_saga::Engine::builder(Arc::new(archon_saga::MemoryStore::new()));
    /// ```
    pub fn builder(store: Arc<dyn SagaStore>) -> EngineBuilder {
        EngineBuilder {
            store,
            defs: Vec::new(),
            instance: "local".to_owned(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_concurrent: 1024,
            listeners: Vec::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.inner.store
    }

    /// Recover and start polling: refuses to start (with [`Error::UnknownDefinitions`] naming
    /// them) if the store holds unfinished sagas of definitions this engine does not have;
    /// releases leases held under this instance id by a previous incarnation; then every
    /// unfinished saga is claimed and resumed (a step whose outcome was unknown runs again
    /// with the same idempotency key).
    pub async fn start(&self) -> Result<()> {
        let inner = &self.inner;
        let unknown: Vec<String> = inner
            .store
            .unfinished_definitions()
            .await?
            .into_iter()
            .filter(|k| !inner.defs.contains_key(k))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::UnknownDefinitions(unknown));
        }
        inner.store.release_owner(&inner.instance).await?;
        let already = inner
            .poller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if already {
            return Ok(());
        }
        let signal = match inner.store.work_signal().await {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "no wake-up signal from the store; polling only");
                None
            }
        };
        let mut poller = inner
            .poller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if poller.is_none() {
            let me = Arc::clone(inner);
            *poller = Some(tokio::spawn(poll_loop(me, signal)));
        }
        Ok(())
    }

    /// Start a new saga of a registered definition with `data`; returns its id, a UUIDv7
    /// (time-ordered: later sagas sort after earlier ones). Costs one durable write; the saga
    /// then runs in the background.
    pub async fn start_saga<D: SagaData>(&self, saga: &Saga<D>, data: D) -> Result<SagaId> {
        // Time-ordered (UUIDv7): new rows go to the right edge of the primary-key index
        // instead of a random page of it.
        self.start_saga_with_id(saga, uuid::Uuid::now_v7(), data)
            .await
    }

    /// Like [`start_saga`](Self::start_saga) with a caller-chosen id (e.g. derived from the
    /// request, so a retried request does not start a second saga:
    /// [`Error::AlreadyExists`] then).
    pub async fn start_saga_with_id<D: SagaData>(
        &self,
        saga: &Saga<D>,
        id: SagaId,
        data: D,
    ) -> Result<SagaId> {
        let inner = &self.inner;
        if inner.shutdown.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        let key = saga.def.key();
        let def = inner
            .defs
            .get(&key)
            .ok_or_else(|| Error::InvalidDefinition(format!("definition {key} not registered")))?;
        let data = serde_json::to_string(&data).map_err(Error::Encode)?;
        let now = inner.clock.now_ms();
        let mut rec = SagaRecord::new(id, &def.name, def.version, data, now);
        rec.deadline = def.deadline.map(|d| now + ms(d));
        rec.owner = Some(inner.instance.clone());
        rec.fence = 1;
        rec.lease_until = inner.lease_until(now);
        let started = HistoryEvent::new(now, "started");
        inner.store.create(&rec, &started).await?;
        inner.notify(&rec, &started);
        metrics::counter!(names::SAGA_STARTED, names::SAGA_NAME => def.name.clone()).increment(1);
        spawn_driver(inner, rec);
        Ok(id)
    }

    /// Wait until the saga is finished (completed or compensated) or parked; returns its record.
    ///
    /// For a saga this instance is driving, the end comes from its driver with the record as
    /// written: no read of the store and no timer. A saga driven elsewhere (another instance,
    /// or later after a release or a shutdown here) is read from the store every 250 ms.
    pub async fn wait(&self, id: SagaId) -> Result<SagaRecord> {
        let mut rx = self.inner.events.subscribe();
        // A saga driven here: its driver leaves the running set before it says how it stopped,
        // so finding it there after subscribing means the word is still to come. No read of
        // the store and no timer: the end carries the record as written.
        if self.inner.running().contains_key(&id) {
            loop {
                match rx.recv().await {
                    Ok(DriverStop::Ended(rec)) if rec.id == id => {
                        return Ok(Arc::unwrap_or_clone(rec));
                    }
                    Ok(DriverStop::Stopped(stopped)) if stopped == id => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        // Driven elsewhere, later, or stopped here without an end: read the store, and listen
        // for an end from a driver here meanwhile.
        loop {
            let rec = self
                .inner
                .store
                .load(id)
                .await?
                .ok_or(Error::NotFound(id))?;
            if !rec.status.is_active() {
                return Ok(rec);
            }
            // Events from this instance are the fast path (they carry the record as written,
            // so no second read); polling covers other instances.
            let ended = tokio::time::timeout(Duration::from_millis(250), async {
                loop {
                    match rx.recv().await {
                        Ok(DriverStop::Ended(rec)) if rec.id == id => return Some(rec),
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return None,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            })
            .await;
            if let Ok(Some(rec)) = ended {
                return Ok(Arc::unwrap_or_clone(rec));
            }
        }
    }

    /// How many sagas this instance is driving now.
    pub fn in_flight(&self) -> usize {
        self.inner.running().len()
    }

    /// Stop polling and abort every saga task of this instance, waiting until they are gone.
    /// Their sagas stay in the store and resume on the next start (or on another instance once
    /// the leases expire). This is also how tests simulate a killed process.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.store(true, Ordering::SeqCst);
        let poller = inner
            .poller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(p) = poller {
            p.abort();
            let _ = p.await;
        }
        let tasks: Vec<JoinHandle<()>> = inner.running().drain().map(|(_, r)| r.task).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn spawn_driver(inner: &Arc<Inner>, rec: SagaRecord) {
    if inner.shutdown.load(Ordering::SeqCst) {
        return;
    }
    let id = rec.id;
    let cancel = Arc::new(Notify::new());
    let mut running = inner.running();
    if let Some(old) = running.remove(&id) {
        // A newer claim fenced the old driver out; make sure it never overlaps the new one.
        old.task.abort();
    }
    let span = tracing::info_span!("saga", saga.name = %rec.name, saga.id = %id);
    let task =
        tokio::spawn(driver::drive(Arc::clone(inner), rec, Arc::clone(&cancel)).instrument(span));
    running.insert(id, Running { task, cancel });
}

/// Called when a driver stops (also when its task is aborted): it leaves the running set,
/// then waiters hear of its end (`ended`) or that it stopped without one.
pub(crate) fn driver_done(inner: &Inner, id: SagaId, ended: Option<Arc<SagaRecord>>) {
    let mut running = inner.running();
    let was_full = running.len() >= inner.max_concurrent;
    let mine = running
        .get(&id)
        .is_some_and(|r| Some(r.task.id()) == tokio::task::try_id());
    if mine {
        running.remove(&id);
    }
    drop(running);
    let _ = inner.events.send(match ended {
        Some(rec) => DriverStop::Ended(rec),
        None => DriverStop::Stopped(id),
    });
    if was_full {
        inner.wake.notify_one();
    }
}

async fn poll_loop(inner: Arc<Inner>, signal: Option<WorkSignal>) {
    loop {
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        {
            let now = inner.clock.now_ms();
            let mut timers = inner.timers();
            while timers.peek().is_some_and(|Reverse(at)| *at <= now) {
                timers.pop();
            }
        }
        let free = inner.max_concurrent.saturating_sub(inner.running().len());
        if free > 0 && !inner.def_keys.is_empty() {
            let now = inner.clock.now_ms();
            match inner
                .store
                .claim(
                    &inner.instance,
                    now,
                    inner.lease_until(now),
                    free,
                    &inner.def_keys,
                )
                .await
            {
                Ok(claimed) => {
                    for rec in claimed {
                        tracing::debug!(saga.id = %rec.id, fence = rec.fence, "claimed saga");
                        spawn_driver(&inner, rec);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming sagas failed"),
            }
        }
        let next_poll = tokio::time::Instant::now() + inner.poll_interval;
        loop {
            let next_timer = inner.timers().peek().map(|Reverse(at)| *at);
            let until =
                next_timer.map_or(next_poll, |at| next_poll.min(inner.clock.instant_at(at)));
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                () = inner.wake.notified() => break,
                () = async {
                    match &signal {
                        Some(s) => s.notified().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::trace!("woken by the store");
                    break;
                }
                () = inner.timers_changed.notified() => {}
            }
        }
    }
}
