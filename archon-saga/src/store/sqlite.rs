//! The embedded SQLite store: one file, WAL, `synchronous=FULL`, one writer thread that
//! commits concurrent sagas' writes together (group commit).

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;

use super::{
    HistoryEvent, ListQuery, SagaRecord, SagaStatus, SagaStore, Transition,
    record::{HISTORY_SPILL_BYTES, history_line, parse_history},
};
use crate::{Error, Result, SagaId};

const BACKEND: &str = "sqlite";
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Cmd {
    Create(Box<SagaRecord>, HistoryEvent, oneshot::Sender<Result<()>>),
    Write(Box<Transition>, oneshot::Sender<Result<bool>>),
    Job(Job),
}

/// The embedded default [`SagaStore`]: a single SQLite file in WAL mode with
/// `synchronous=FULL`, so a returned write survives power loss.
///
/// Writes go through one connection. Writes that arrive while a commit is in flight are
/// committed together in the next transaction by a dedicated writer thread (group commit),
/// each with its own fencing check and result, so many concurrent sagas share one fsync. A
/// write with no other in flight, on a multi-threaded tokio runtime, commits on the calling
/// thread instead (inside tokio's `block_in_place`, so the runtime moves its other
/// tasks elsewhere): no hand-off to the writer thread and back. Other futures of the calling
/// task (in a `join!` or `select!`) wait for that commit. Each transition rewrites one row: the
/// saga's recent history lives in it and moves to a history table in chunks. `load` reads
/// through a second connection on the caller's thread.
///
/// SQLite is for one orchestrator process (a single writer): use
/// [`PostgresStore`](crate::PostgresStore) to run several instances.
///
/// ```no_run
/// # fn main() -> archon_saga::Result<()> {
/// let store = archon_saga::SqliteStore::open("sagas.db")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<Cmd>,
    /// The writing connection: the writer thread's, borrowed by a write that runs inline.
    conn: Arc<Mutex<Connection>>,
    /// Creates and writes in flight.
    in_flight: Arc<AtomicUsize>,
    /// A second connection for [`load`](SagaStore::load), used on the caller's thread: a point
    /// read of a page that is almost always cached costs a few microseconds, less than handing
    /// it to the writer thread and back (two thread wake-ups), and it never waits behind a
    /// commit (WAL readers do not block on the writer).
    reader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::backend(BACKEND, e)
}

// One row per saga, its recent history included (`history`, JSON lines): a transition
// rewrites that one row, so a commit writes one table page (two when the status or the
// wake-up time changes, which moves the saga in `sagas_status_wake`). History longer than
// `HISTORY_SPILL_BYTES` moves to `saga_history` in chunks, read back oldest first.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    def_key TEXT NOT NULL,
    status TEXT NOT NULL,
    compensating INTEGER NOT NULL,
    step INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    data TEXT NOT NULL,
    wake_at INTEGER,
    deadline INTEGER,
    cancel_requested INTEGER NOT NULL,
    error TEXT,
    owner TEXT,
    fence INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    history TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sagas_status_wake ON sagas(status, wake_at);
CREATE TABLE IF NOT EXISTS saga_history (
    seq INTEGER PRIMARY KEY,
    saga_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_history_saga ON saga_history(saga_id, seq);
";

/// Files created before history moved into the saga row get the column (their old history
/// rows stay readable: one event per row parses as one JSON line).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_history: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('sagas') WHERE name = 'history'",
        [],
        |r| r.get(0),
    )?;
    if has_history == 0 {
        conn.execute_batch("ALTER TABLE sagas ADD COLUMN history TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

const COLUMNS: &str = "id, name, version, status, compensating, step, attempt, data, wake_at, \
    deadline, cancel_requested, error, owner, fence, lease_until, created_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<SagaRecord> {
    let id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let conv = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(SagaRecord {
        id: id
            .parse()
            .map_err(|e: uuid::Error| conv(0, e.to_string()))?,
        name: row.get(1)?,
        version: row.get(2)?,
        status: status.parse::<SagaStatus>().map_err(|e| conv(3, e))?,
        compensating: row.get(4)?,
        step: row.get(5)?,
        attempt: row.get(6)?,
        data: row.get(7)?,
        wake_at: row.get(8)?,
        deadline: row.get(9)?,
        cancel_requested: row.get(10)?,
        error: row.get(11)?,
        owner: row.get(12)?,
        fence: row.get(13)?,
        lease_until: row.get(14)?,
        created_at: row.get(15)?,
        updated_at: row.get(16)?,
    })
}

impl SqliteStore {
    /// Open (or create) the store file and its tables.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        migrate(&conn).map_err(db)?;
        let reader = Connection::open(path).map_err(db)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        let (tx, rx) = mpsc::channel();
        let conn = Arc::new(Mutex::new(conn));
        let writer = Arc::clone(&conn);
        thread::Builder::new()
            .name("archon-saga-sqlite".to_owned())
            .spawn(move || writer_loop(&writer, &rx))
            .map_err(|e| Error::backend(BACKEND, e))?;
        Ok(Self {
            tx,
            conn,
            in_flight: Arc::new(AtomicUsize::new(0)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Commit a create or write. Alone (no other write in flight) on a multi-threaded runtime,
    /// it commits on the calling thread (`block_in_place`): no hand-off to the writer thread
    /// and back, two thread wake-ups less on a path that waits for a commit anyway. Otherwise
    /// it joins the writer thread's next batch (group commit).
    async fn submit<T>(&self, cmd: Cmd, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _in_flight = InFlight(&self.in_flight);
        let alone = self.in_flight.fetch_add(1, Ordering::SeqCst) == 0;
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if alone && multi_thread {
            let mut rx = rx;
            tokio::task::block_in_place(|| commit_batch(&mut lock(&self.conn), vec![cmd]));
            return rx.try_recv().map_err(|_| closed())?;
        }
        self.tx.send(cmd).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = reply.send(f(c));
        });
        self.tx.send(Cmd::Job(job)).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

fn closed() -> Error {
    Error::backend(BACKEND, "store thread stopped")
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn writer_loop(conn: &Mutex<Connection>, rx: &mpsc::Receiver<Cmd>) {
    while let Ok(first) = rx.recv() {
        let mut guard = lock(conn);
        let conn = &mut *guard;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Job(job) => job(conn),
                w => batch.push(w),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            commit_batch(conn, batch);
        }
    }
}

enum Done {
    Create(oneshot::Sender<Result<()>>, Result<()>),
    Write(oneshot::Sender<Result<bool>>, Result<bool>),
}

fn commit_batch(conn: &mut Connection, batch: Vec<Cmd>) {
    // IMMEDIATE: the write lock is taken up front, so the reads each write does before it
    // updates (fence, current status) cannot be invalidated by another connection.
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(batch, &e.to_string());
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut fatal = None;
    for cmd in batch {
        match cmd {
            Cmd::Create(rec, ev, reply) => match apply_create(&tx, &rec, &ev) {
                Ok(r) => done.push(Done::Create(reply, r)),
                Err(e) => {
                    fatal = Some(e.to_string());
                    done.push(Done::Create(reply, Err(closed())));
                }
            },
            Cmd::Write(t, reply) => match apply_write(&tx, &t) {
                Ok(r) => done.push(Done::Write(reply, r)),
                Err(e) => {
                    fatal = Some(e.to_string());
                    done.push(Done::Write(reply, Err(closed())));
                }
            },
            Cmd::Job(_) => {}
        }
        if fatal.is_some() {
            break;
        }
    }
    let outcome = match fatal {
        Some(e) => Err(e),
        None => tx.commit().map_err(|e| e.to_string()),
    };
    for d in done {
        match (d, &outcome) {
            (Done::Create(reply, r), Ok(())) => {
                let _ = reply.send(r);
            }
            (Done::Write(reply, r), Ok(())) => {
                let _ = reply.send(r);
            }
            (Done::Create(reply, _), Err(e)) => {
                let _ = reply.send(Err(Error::backend(BACKEND, e.clone())));
            }
            (Done::Write(reply, _), Err(e)) => {
                let _ = reply.send(Err(Error::backend(BACKEND, e.clone())));
            }
        }
    }
}

fn fail_all(batch: Vec<Cmd>, e: &str) {
    for cmd in batch {
        match cmd {
            Cmd::Create(_, _, reply) => {
                let _ = reply.send(Err(Error::backend(BACKEND, e.to_owned())));
            }
            Cmd::Write(_, reply) => {
                let _ = reply.send(Err(Error::backend(BACKEND, e.to_owned())));
            }
            Cmd::Job(_) => {}
        }
    }
}

fn apply_create(
    tx: &rusqlite::Transaction<'_>,
    r: &SagaRecord,
    ev: &HistoryEvent,
) -> rusqlite::Result<Result<()>> {
    let line = match history_line(ev) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    // Statements are prepared once per connection (rusqlite's statement cache): preparing them
    // on every transition cost more CPU than the commit itself.
    let n = tx
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO sagas ({COLUMNS}, def_key, history) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ))?
        .execute(params![
            r.id.to_string(),
            r.name,
            r.version,
            r.status.as_str(),
            r.compensating,
            r.step,
            r.attempt,
            r.data,
            r.wake_at,
            r.deadline,
            r.cancel_requested,
            r.error,
            r.owner,
            r.fence,
            r.lease_until,
            r.created_at,
            r.updated_at,
            r.definition_key(),
            line,
        ])?;
    if n == 0 {
        return Ok(Err(Error::AlreadyExists(r.id)));
    }
    Ok(Ok(()))
}

/// The saga row's fields a write needs before it updates.
struct Current {
    fence: i64,
    status: String,
    wake_at: Option<i64>,
    cancel_requested: bool,
    history_len: usize,
}

/// `UPDATE` of one saga row. `moves` sets `status` and `wake_at` (indexed: only when they
/// change, since naming them rewrites the index entry and dirties one more page); `spill`
/// starts a fresh in-row history (the old one was just copied to `saga_history`).
fn update_sql(moves: bool, spill: bool) -> String {
    format!(
        "UPDATE sagas SET {}compensating = ?4, step = ?5, attempt = ?6, data = ?7, \
         deadline = ?8, cancel_requested = ?9, error = ?10, owner = ?11, fence = ?12, \
         lease_until = ?13, updated_at = ?14, history = {} WHERE id = ?1",
        if moves {
            "status = ?2, wake_at = ?3, "
        } else {
            ""
        },
        if spill { "?15" } else { "history || ?15" },
    )
}

fn apply_write(tx: &rusqlite::Transaction<'_>, t: &Transition) -> rusqlite::Result<Result<bool>> {
    let line = match history_line(&t.event) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let r = &t.record;
    let id = r.id.to_string();
    // A point read of a page the update dirties anyway: no I/O, and it lets the update skip
    // the index when the saga stays where it is.
    let cur = tx
        .prepare_cached(
            "SELECT fence, status, wake_at, cancel_requested, length(CAST(history AS BLOB)) \
             FROM sagas WHERE id = ?1",
        )?
        .query_row(params![id], |row| {
            Ok(Current {
                fence: row.get(0)?,
                status: row.get(1)?,
                wake_at: row.get(2)?,
                cancel_requested: row.get(3)?,
                history_len: row.get(4)?,
            })
        })
        .optional()?;
    let Some(cur) = cur.filter(|c| c.fence == t.expected_fence) else {
        return Ok(Err(Error::LeaseLost(r.id)));
    };
    let moves = cur.status != r.status.as_str() || cur.wake_at != r.wake_at;
    let spill = cur.history_len > 0 && cur.history_len + line.len() > HISTORY_SPILL_BYTES;
    if spill {
        tx.prepare_cached(
            "INSERT INTO saga_history (saga_id, body) SELECT id, history FROM sagas WHERE id = ?1",
        )?
        .execute(params![id])?;
    }
    let cancel = cur.cancel_requested || r.cancel_requested;
    tx.prepare_cached(&update_sql(moves, spill))?
        .execute(params![
            id,
            r.status.as_str(),
            r.wake_at,
            r.compensating,
            r.step,
            r.attempt,
            r.data,
            r.deadline,
            cancel,
            r.error,
            r.owner,
            r.fence,
            r.lease_until,
            r.updated_at,
            line,
        ])?;
    Ok(Ok(cancel))
}

#[async_trait]
impl SagaStore for SqliteStore {
    async fn create(&self, record: &SagaRecord, event: &HistoryEvent) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.submit(
            Cmd::Create(Box::new(record.clone()), event.clone(), reply),
            rx,
        )
        .await
    }

    async fn write(&self, transition: &Transition) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.submit(Cmd::Write(Box::new(transition.clone()), reply), rx)
            .await
    }

    async fn renew(&self, id: SagaId, fence: i64, lease_until: i64) -> Result<()> {
        self.job(move |c| {
            let n = c
                .prepare_cached("UPDATE sagas SET lease_until = ?3 WHERE id = ?1 AND fence = ?2")
                .and_then(|mut stmt| stmt.execute(params![id.to_string(), fence, lease_until]))
                .map_err(db)?;
            if n == 0 {
                Err(Error::LeaseLost(id))
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
        definitions: &[String],
    ) -> Result<Vec<SagaRecord>> {
        let owner = owner.to_owned();
        let defs = serde_json::to_string(definitions).map_err(Error::Encode)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.job(move |c| {
            let tx = c.transaction().map_err(db)?;
            let rows = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "UPDATE sagas SET owner = ?1, fence = fence + 1, lease_until = ?3 \
                         WHERE id IN (SELECT id FROM sagas \
                            WHERE status IN ('running', 'compensating') \
                            AND (wake_at IS NULL OR wake_at <= ?2) \
                            AND (owner IS NULL OR lease_until < ?2) \
                            AND def_key IN (SELECT value FROM json_each(?4)) \
                            ORDER BY wake_at, updated_at LIMIT ?5) \
                         RETURNING {COLUMNS}"
                    ))
                    .map_err(db)?;
                stmt.query_map(params![owner, now, lease_until, defs, limit], from_row)
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)?
            };
            tx.commit().map_err(db)?;
            Ok(rows)
        })
        .await
    }

    async fn release_owner(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.job(move |c| {
            let n = c
                .execute(
                    "UPDATE sagas SET owner = NULL WHERE owner = ?1",
                    params![owner],
                )
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    async fn request_cancel(&self, id: SagaId) -> Result<()> {
        self.job(move |c| {
            let n = c
                .execute(
                    "UPDATE sagas SET cancel_requested = 1 WHERE id = ?1",
                    params![id.to_string()],
                )
                .map_err(db)?;
            if n == 0 {
                Err(Error::NotFound(id))
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn load(&self, id: SagaId) -> Result<Option<SagaRecord>> {
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reader
            .prepare_cached(&format!("SELECT {COLUMNS} FROM sagas WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row(params![id.to_string()], from_row).optional())
            .map_err(db)
    }

    async fn history(&self, id: SagaId) -> Result<Vec<HistoryEvent>> {
        self.job(move |c| {
            // One statement: spilled chunks in order, then the row's own tail.
            let mut stmt = c
                .prepare_cached(
                    "SELECT body FROM (\
                        SELECT seq AS k, body FROM saga_history WHERE saga_id = ?1 \
                        UNION ALL SELECT 9223372036854775807 AS k, history AS body \
                        FROM sagas WHERE id = ?1) ORDER BY k",
                )
                .map_err(db)?;
            let bodies = stmt
                .query_map(params![id.to_string()], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            parse_history(bodies.iter().map(String::as_str)).map_err(|e| Error::backend(BACKEND, e))
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaRecord>> {
        let q = query.clone();
        self.job(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM sagas WHERE (?1 IS NULL OR status = ?1) \
                     AND (?2 IS NULL OR updated_at < ?2) AND (?3 IS NULL OR name = ?3) \
                     ORDER BY updated_at, id LIMIT ?4"
                ))
                .map_err(db)?;
            stmt.query_map(
                params![
                    q.status.map(SagaStatus::as_str),
                    q.updated_before,
                    q.name,
                    i64::try_from(q.limit).unwrap_or(i64::MAX)
                ],
                from_row,
            )
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)
        })
        .await
    }

    async fn unfinished_definitions(&self) -> Result<Vec<String>> {
        self.job(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT DISTINCT def_key FROM sagas \
                     WHERE status NOT IN ('completed', 'compensated') ORDER BY def_key",
                )
                .map_err(db)?;
            stmt.query_map([], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A file written before history moved into the saga row: the store adds the column, the
    /// old history rows (one JSON event each) read back first, new events follow.
    #[tokio::test]
    async fn opens_a_file_from_before_in_row_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let id = uuid::Uuid::new_v4();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace(",\n    history TEXT NOT NULL DEFAULT ''", ""))
                .unwrap();
            conn.execute(
                &format!(
                    "INSERT INTO sagas ({COLUMNS}, def_key) VALUES (?1, 'old', 1, 'running', 0, \
                     1, 0, '{{}}', NULL, NULL, 0, NULL, 'me', 3, 0, 0, 0, 'old@v1')"
                ),
                params![id.to_string()],
            )
            .unwrap();
            let columns: i64 = conn
                .query_row("SELECT count(*) FROM pragma_table_info('sagas')", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(columns, 18, "the old layout has no history column");
            for (at, event) in [(1, "started"), (2, "step_completed")] {
                conn.execute(
                    "INSERT INTO saga_history (saga_id, body) VALUES (?1, ?2)",
                    params![
                        id.to_string(),
                        serde_json::to_string(&HistoryEvent::new(at, event)).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        let (events, rec) = crate::store::tests::continue_old_saga(&store, id).await;
        assert_eq!(events, crate::store::tests::continued_history());
        assert_eq!(store.load(id).await.unwrap().unwrap(), rec);
    }
}
