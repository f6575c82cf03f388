//! The PostgreSQL store: several orchestrator instances share the tables through leases with
//! fencing tokens; work is claimed with `FOR UPDATE SKIP LOCKED`; concurrent writes are
//! committed together (group commit).

mod notify;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls, Row};

use super::{
    HistoryEvent, ListQuery, SagaRecord, SagaStatus, SagaStore, Transition,
    record::{HISTORY_SPILL_BYTES, history_line, parse_history},
};
use crate::{Error, Result, SagaId};

const BACKEND: &str = "postgres";
const MAX_BATCH: usize = 512;
/// Writer connections: while one batch waits for its commit, the next is sent on another, and
/// the server flushes them together.
const WRITERS: usize = 4;

fn db(e: tokio_postgres::Error) -> Error {
    Error::backend(BACKEND, e)
}

enum Cmd {
    Create(
        Box<SagaRecord>,
        String,
        oneshot::Sender<Result<Option<bool>>>,
    ),
    Write(
        Box<Transition>,
        String,
        oneshot::Sender<Result<Option<bool>>>,
    ),
}

impl Cmd {
    /// The definition key to announce (`NOTIFY`) once this write has committed, if it makes
    /// its saga claimable right now: unowned, running or compensating, and no timer pending
    /// or one already due at `now_ms`. An owned saga's transitions are never announced.
    fn announced(&self, now_ms: i64) -> Option<String> {
        let r = match self {
            Cmd::Create(r, _, _) => &**r,
            Cmd::Write(t, _, _) => &t.record,
        };
        (r.owner.is_none() && r.status.is_active() && r.wake_at.is_none_or(|w| w <= now_ms))
            .then(|| r.definition_key())
    }
}

/// Now as Unix milliseconds (the wall clock: other instances compare wake-up times with it).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Send one notification per distinct key on the schema's channel (after the writes that made
/// the work claimable have committed). Best effort: a lost notification leaves the work to
/// polling.
async fn announce(client: &Client, sql: &Sql, mut keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    keys.sort_unstable();
    keys.dedup();
    if let Err(e) = client.execute(&sql.announce, &[&sql.channel, &keys]).await {
        tracing::warn!(error = %e, "announcing claimable sagas failed; polling will find them");
    }
}

struct Sql {
    create: String,
    write: String,
    create_many: String,
    write_many: String,
    spill: String,
    claim: String,
    select: String,
    /// `NOTIFY` on `channel` once per key of an array.
    announce: String,
    /// Release an instance's leases and announce the sagas that became claimable, in one
    /// statement (the notifications go out when it commits).
    release_owner: String,
    /// The schema's `LISTEN/NOTIFY` channel.
    channel: String,
}

/// A [`SagaStore`] on PostgreSQL, for one or several orchestrator instances.
///
/// - Every saga is owned through a lease with a fencing token; each write checks the token,
///   so an instance that lost its lease can never overwrite the new owner's progress.
/// - [`claim`](SagaStore::claim) uses `FOR UPDATE SKIP LOCKED`: concurrent instances never
///   claim the same saga, and a crashed instance's sagas are taken over once its leases expire.
///   The store sends a `NOTIFY` after committing a write that makes a saga claimable right
///   now (inserted unowned, lease released, timer already due); each engine listens on its
///   own connection and claims at once ([`SagaStore::work_signal`]). Polling is the fallback
///   for what no write announces (expired leases of a crashed instance, timers falling due
///   later).
/// - A transition is one statement updating one row (the saga's recent history lives in its
///   row and moves to a history table in chunks). Writes from concurrent sagas are queued to a
///   writer task that commits them in one transaction (group commit) as set-based statements,
///   each row with its own fencing check and result.
///
/// Tables live in their own schema (created if missing), so tests and tenants can be isolated.
///
/// ```no_run
/// # async fn f() -> archon_saga::Result<()> {
/// let store = archon_saga::PostgresStore::connect(
///     "host=127.0.0.1 user=postgres dbname=test",
///     "sagas",
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    client: Arc<Client>,
    writes: mpsc::UnboundedSender<Cmd>,
    schema: String,
    sql: Arc<Sql>,
    load_stmt: tokio_postgres::Statement,
    renew_stmt: tokio_postgres::Statement,
    stmts: Arc<Stmts>,
    /// Writes in flight: when none are, a write goes straight to the server (one round trip,
    /// no hand-off); when some are, it joins the writer task's next batch.
    in_flight: Arc<AtomicUsize>,
    /// `LISTEN/NOTIFY` wake-ups (see the `notify` module).
    listen: notify::Listen,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, name, version, status, compensating, step, attempt, data, wake_at, \
    deadline, cancel_requested, error, owner, fence, lease_until, created_at, updated_at";

async fn connect_client(config: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(config, NoTls).await.map_err(db)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn from_row(row: &Row) -> Result<SagaRecord> {
    let status: String = row.try_get("status").map_err(db)?;
    Ok(SagaRecord {
        id: row.try_get("id").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        version: u32_of(row.try_get("version").map_err(db)?),
        status: status
            .parse::<SagaStatus>()
            .map_err(|e| Error::backend(BACKEND, e))?,
        compensating: row.try_get("compensating").map_err(db)?,
        step: u32_of(row.try_get("step").map_err(db)?),
        attempt: u32_of(row.try_get("attempt").map_err(db)?),
        data: row.try_get("data").map_err(db)?,
        wake_at: row.try_get("wake_at").map_err(db)?,
        deadline: row.try_get("deadline").map_err(db)?,
        cancel_requested: row.try_get("cancel_requested").map_err(db)?,
        error: row.try_get("error").map_err(db)?,
        owner: row.try_get("owner").map_err(db)?,
        fence: row.try_get("fence").map_err(db)?,
        lease_until: row.try_get("lease_until").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

impl PostgresStore {
    /// Connect (libpq-style `config`, e.g. `host=127.0.0.1 user=postgres dbname=test`) and
    /// create the schema and tables if missing.
    pub async fn connect(config: &str, schema: &str) -> Result<Self> {
        let client = connect_client(config).await?;
        let s = quote_ident(schema);
        // One row per saga, its recent history included (`history`, JSON lines): a transition
        // is one UPDATE of one row. No index covers the columns every transition changes
        // (step, data, history, updated_at, fence, lease), and pages keep free space: most
        // transitions are HOT updates with no index maintenance. Listing by age sorts the rows
        // of one status instead. History longer than `HISTORY_SPILL_BYTES` moves to
        // `saga_history` in chunks (see `spill`).
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.sagas (
                    id UUID PRIMARY KEY,
                    name TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    def_key TEXT NOT NULL,
                    status TEXT NOT NULL,
                    compensating BOOLEAN NOT NULL,
                    step BIGINT NOT NULL,
                    attempt BIGINT NOT NULL,
                    data TEXT NOT NULL,
                    wake_at BIGINT,
                    deadline BIGINT,
                    cancel_requested BOOLEAN NOT NULL,
                    error TEXT,
                    owner TEXT,
                    fence BIGINT NOT NULL,
                    lease_until BIGINT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    history TEXT NOT NULL DEFAULT '') WITH (fillfactor = 70);
                 ALTER TABLE {s}.sagas ADD COLUMN IF NOT EXISTS history TEXT NOT NULL DEFAULT '';
                 CREATE INDEX IF NOT EXISTS sagas_status_wake ON {s}.sagas(status, wake_at);
                 CREATE TABLE IF NOT EXISTS {s}.saga_history (
                    saga_id UUID NOT NULL,
                    seq BIGSERIAL,
                    body TEXT NOT NULL,
                    PRIMARY KEY (saga_id, seq));"
            ))
            .await
            .map_err(db)?;
        notify::drop_old_trigger(&client, schema).await?;
        let sql = Arc::new(Sql {
            create: format!(
                "INSERT INTO {s}.sagas ({COLUMNS}, def_key, history) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                 $19) ON CONFLICT (id) DO NOTHING"
            ),
            // The history tail comes back only once it is long enough to spill.
            write: format!(
                "UPDATE {s}.sagas SET status = $3, compensating = $4, step = $5, \
                 attempt = $6, data = $7, wake_at = $8, deadline = $9, \
                 cancel_requested = (cancel_requested OR $10), error = $11, owner = $12, \
                 fence = $13, lease_until = $14, updated_at = $15, history = history || $16 \
                 WHERE id = $1 AND fence = $2 \
                 RETURNING cancel_requested, \
                 CASE WHEN octet_length(history) > {HISTORY_SPILL_BYTES} THEN history END"
            ),
            // A batch's creates as one statement (arrays, one element per saga).
            create_many: format!(
                "INSERT INTO {s}.sagas ({COLUMNS}, def_key, history) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], \
                 $5::bool[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], \
                 $11::bool[], $12::text[], $13::text[], $14::bigint[], $15::bigint[], \
                 $16::bigint[], $17::bigint[], $18::text[], $19::text[]) \
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            ),
            // A batch's writes as one statement, each row with its own fencing check.
            write_many: format!(
                "UPDATE {s}.sagas s SET status = v.status, compensating = v.compensating, \
                 step = v.step, attempt = v.attempt, data = v.data, wake_at = v.wake_at, \
                 deadline = v.deadline, cancel_requested = (s.cancel_requested OR v.cancel), \
                 error = v.error, owner = v.owner, fence = v.fence, lease_until = v.lease_until, \
                 updated_at = v.updated_at, history = s.history || v.line \
                 FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bool[], $5::bigint[], \
                 $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bool[], $11::text[], \
                 $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[]) \
                 AS v(id, expected_fence, status, compensating, step, attempt, data, wake_at, \
                 deadline, cancel, error, owner, fence, lease_until, updated_at, line) \
                 WHERE s.id = v.id AND s.fence = v.expected_fence \
                 RETURNING s.id, s.cancel_requested, \
                 CASE WHEN octet_length(s.history) > {HISTORY_SPILL_BYTES} THEN s.history END"
            ),
            // Moves exactly the tail the writer saw (if it is still the row's prefix) to the
            // history table, atomically: history content never changes, only where it lives.
            spill: format!(
                "WITH moved AS (UPDATE {s}.sagas SET history = substr(history, length($2) + 1) \
                 WHERE id = $1 AND starts_with(history, $2) RETURNING id) \
                 INSERT INTO {s}.saga_history (saga_id, body) SELECT id, $2 FROM moved"
            ),
            claim: format!(
                "UPDATE {s}.sagas SET owner = $1, fence = fence + 1, lease_until = $3 \
                 WHERE id IN (SELECT id FROM {s}.sagas \
                    WHERE status IN ('running', 'compensating') \
                    AND (wake_at IS NULL OR wake_at <= $2) \
                    AND (owner IS NULL OR lease_until < $2) \
                    AND def_key = ANY($4) \
                    ORDER BY wake_at NULLS FIRST, updated_at LIMIT $5 \
                    FOR UPDATE SKIP LOCKED) \
                 RETURNING {COLUMNS}"
            ),
            select: format!("SELECT {COLUMNS} FROM {s}.sagas"),
            announce: "SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k".to_owned(),
            release_owner: format!(
                "WITH released AS (UPDATE {s}.sagas SET owner = NULL WHERE owner = $1 \
                    RETURNING def_key, status, wake_at), \
                 announced AS (SELECT pg_notify($2, k) FROM (SELECT DISTINCT def_key AS k \
                    FROM released WHERE status IN ('running', 'compensating') \
                    AND (wake_at IS NULL OR wake_at <= $3)) d) \
                 SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM announced)"
            ),
            channel: notify::channel(schema),
        });
        let load_stmt = client
            .prepare(&format!("{} WHERE id = $1", sql.select))
            .await
            .map_err(db)?;
        let renew_stmt = client
            .prepare(&format!(
                "UPDATE {s}.sagas SET lease_until = $3 WHERE id = $1 AND fence = $2"
            ))
            .await
            .map_err(db)?;
        let stmts = Arc::new(Stmts::prepare(&client, &sql).await.map_err(db)?);
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            let writer = connect_client(config).await?;
            tokio::spawn(writer_loop(writer, Arc::clone(&rx), Arc::clone(&sql)));
        }
        Ok(Self {
            listen: notify::Listen::new(config, schema),
            stmts,
            in_flight: Arc::new(AtomicUsize::new(0)),
            load_stmt,
            renew_stmt,
            client: Arc::new(client),
            writes: tx,
            schema: schema.to_owned(),
            sql,
        })
    }

    /// Drop the schema and everything in it (for tests and teardown).
    pub async fn drop_schema(&self) -> Result<()> {
        self.client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&self.schema)
            ))
            .await
            .map_err(db)
    }

    /// Overwrite a saga's stored data without any checks (test hook for corrupt data).
    #[doc(hidden)]
    pub async fn corrupt_data(&self, id: SagaId, data: &str) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "UPDATE {}.sagas SET data = $2 WHERE id = $1",
                    quote_ident(&self.schema)
                ),
                &[&id, &data],
            )
            .await
            .map_err(db)
            .map(|_| ())
    }

    /// Run the write directly if no other write is in flight (one round trip, no hand-off);
    /// otherwise hand it to the group-commit writer and wait for its batch to commit.
    async fn submit(
        &self,
        cmd: Cmd,
        rx: oneshot::Receiver<Result<Option<bool>>>,
    ) -> Result<Option<bool>> {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _in_flight = InFlight(&self.in_flight);
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            let applied = run_one(&self.client, &self.stmts, &cmd).await.map_err(db)?;
            spill(&self.client, &self.stmts, &cmd, applied.spill).await;
            if applied.outcome.is_some()
                && let Some(key) = cmd.announced(unix_ms())
            {
                announce(&self.client, &self.sql, vec![key]).await;
            }
            return Ok(applied.outcome);
        }
        self.writes.send(cmd).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    fn t(&self, table: &str) -> String {
        format!("{}.{table}", quote_ident(&self.schema))
    }
}

fn closed() -> Error {
    Error::backend(BACKEND, "writer task stopped")
}

/// The write statements, prepared once per connection.
struct Stmts {
    create: tokio_postgres::Statement,
    write: tokio_postgres::Statement,
    create_many: tokio_postgres::Statement,
    write_many: tokio_postgres::Statement,
    spill: tokio_postgres::Statement,
}

impl Stmts {
    async fn prepare(client: &Client, sql: &Sql) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            create: client.prepare(&sql.create).await?,
            write: client.prepare(&sql.write).await?,
            create_many: client.prepare(&sql.create_many).await?,
            write_many: client.prepare(&sql.write_many).await?,
            spill: client.prepare(&sql.spill).await?,
        })
    }
}

/// What one create or write did: `outcome` is `Some(cancel flag)` if it applied, `None` if it
/// did not (create: id taken; write: fence moved on); `spill` is the saga's in-row history
/// when it has grown long enough to move to the history table.
struct Applied {
    outcome: Option<bool>,
    spill: Option<String>,
}

async fn writer_loop(
    client: Client,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Cmd>>>,
    sql: Arc<Sql>,
) {
    let Ok(stmts) = Stmts::prepare(&client, &sql).await else {
        return;
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Take the next batch; the lock is released before committing it, so another writer
        // collects the following batch meanwhile.
        if rx.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let outcome = commit_batch(&client, &stmts, &batch).await;
        let now = unix_ms();
        let keys = batch
            .iter()
            .zip(&outcome)
            .filter(|(_, res)| {
                matches!(
                    res,
                    Ok(Applied {
                        outcome: Some(_),
                        ..
                    })
                )
            })
            .filter_map(|(cmd, _)| cmd.announced(now))
            .collect();
        announce(&client, &sql, keys).await;
        for (cmd, res) in batch.drain(..).zip(outcome) {
            let res = match res {
                Ok(applied) => {
                    spill(&client, &stmts, &cmd, applied.spill).await;
                    Ok(applied.outcome)
                }
                Err(e) => Err(Error::backend(BACKEND, e)),
            };
            let reply = match cmd {
                Cmd::Create(_, _, reply) | Cmd::Write(_, _, reply) => reply,
            };
            let _ = reply.send(res);
        }
    }
}

/// Move a committed history tail to the history table (rare: once per
/// `HISTORY_SPILL_BYTES` of history). Content-preserving, so it needs no fence and may fail:
/// the tail then stays in the row and the next write offers it again.
async fn spill(client: &Client, stmts: &Stmts, cmd: &Cmd, tail: Option<String>) {
    let (Some(tail), Cmd::Write(t, _, _)) = (tail, cmd) else {
        return;
    };
    if let Err(e) = client.execute(&stmts.spill, &[&t.record.id, &tail]).await {
        tracing::warn!(error = %e, saga.id = %t.record.id, "moving saga history failed");
    }
}

async fn run_one(
    client: &Client,
    stmts: &Stmts,
    cmd: &Cmd,
) -> Result<Applied, tokio_postgres::Error> {
    match cmd {
        Cmd::Create(r, line, _) => {
            let version = i64::from(r.version);
            let step = i64::from(r.step);
            let attempt = i64::from(r.attempt);
            let status = r.status.as_str();
            let key = r.definition_key();
            let n = client
                .execute(
                    &stmts.create,
                    &[
                        &r.id,
                        &r.name,
                        &version,
                        &status,
                        &r.compensating,
                        &step,
                        &attempt,
                        &r.data,
                        &r.wake_at,
                        &r.deadline,
                        &r.cancel_requested,
                        &r.error,
                        &r.owner,
                        &r.fence,
                        &r.lease_until,
                        &r.created_at,
                        &r.updated_at,
                        &key,
                        line,
                    ],
                )
                .await?;
            Ok(Applied {
                outcome: (n > 0).then_some(false),
                spill: None,
            })
        }
        Cmd::Write(t, line, _) => {
            let r = &t.record;
            let step = i64::from(r.step);
            let attempt = i64::from(r.attempt);
            let status = r.status.as_str();
            let row = client
                .query_opt(
                    &stmts.write,
                    &[
                        &r.id,
                        &t.expected_fence,
                        &status,
                        &r.compensating,
                        &step,
                        &attempt,
                        &r.data,
                        &r.wake_at,
                        &r.deadline,
                        &r.cancel_requested,
                        &r.error,
                        &r.owner,
                        &r.fence,
                        &r.lease_until,
                        &r.updated_at,
                        line,
                    ],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Applied {
                    outcome: None,
                    spill: None,
                });
            };
            Ok(Applied {
                outcome: Some(row.try_get(0)?),
                spill: row.try_get(1)?,
            })
        }
    }
}

/// True if no saga appears twice in the batch (a set-based statement applies one change per
/// row, so a second write of the same saga would be lost rather than fenced).
fn distinct_ids(batch: &[Cmd]) -> bool {
    let mut ids: Vec<SagaId> = batch
        .iter()
        .map(|c| match c {
            Cmd::Create(r, _, _) => r.id,
            Cmd::Write(t, _, _) => t.record.id,
        })
        .collect();
    ids.sort_unstable();
    ids.windows(2).all(|w| w[0] != w[1])
}

/// The batch as (at most) two set-based statements, one for its creates and one for its
/// writes, in one transaction, pipelined: one round trip, and the server plans and runs two
/// statements instead of one per saga.
async fn run_sets(
    client: &Client,
    stmts: &Stmts,
    batch: &[Cmd],
) -> Result<Vec<Applied>, tokio_postgres::Error> {
    let creates: Vec<&SagaRecord> = batch
        .iter()
        .filter_map(|c| match c {
            Cmd::Create(r, _, _) => Some(&**r),
            Cmd::Write(..) => None,
        })
        .collect();
    let writes: Vec<(&Transition, &str)> = batch
        .iter()
        .filter_map(|c| match c {
            Cmd::Write(t, line, _) => Some((&**t, line.as_str())),
            Cmd::Create(..) => None,
        })
        .collect();
    let create_lines: Vec<&str> = batch
        .iter()
        .filter_map(|c| match c {
            Cmd::Create(_, line, _) => Some(line.as_str()),
            Cmd::Write(..) => None,
        })
        .collect();
    let created = async {
        if creates.is_empty() {
            return Ok(Vec::new());
        }
        let i64s = |f: fn(&SagaRecord) -> i64| creates.iter().map(|r| f(r)).collect::<Vec<_>>();
        let keys: Vec<String> = creates.iter().map(|r| r.definition_key()).collect();
        client
            .query(
                &stmts.create_many,
                &[
                    &creates.iter().map(|r| r.id).collect::<Vec<_>>(),
                    &creates.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                    &i64s(|r| i64::from(r.version)),
                    &creates
                        .iter()
                        .map(|r| r.status.as_str())
                        .collect::<Vec<_>>(),
                    &creates.iter().map(|r| r.compensating).collect::<Vec<_>>(),
                    &i64s(|r| i64::from(r.step)),
                    &i64s(|r| i64::from(r.attempt)),
                    &creates.iter().map(|r| r.data.as_str()).collect::<Vec<_>>(),
                    &creates.iter().map(|r| r.wake_at).collect::<Vec<_>>(),
                    &creates.iter().map(|r| r.deadline).collect::<Vec<_>>(),
                    &creates
                        .iter()
                        .map(|r| r.cancel_requested)
                        .collect::<Vec<_>>(),
                    &creates
                        .iter()
                        .map(|r| r.error.as_deref())
                        .collect::<Vec<_>>(),
                    &creates
                        .iter()
                        .map(|r| r.owner.as_deref())
                        .collect::<Vec<_>>(),
                    &i64s(|r| r.fence),
                    &i64s(|r| r.lease_until),
                    &i64s(|r| r.created_at),
                    &i64s(|r| r.updated_at),
                    &keys,
                    &create_lines,
                ],
            )
            .await
    };
    let written = async {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let i64s = |f: fn(&Transition) -> i64| writes.iter().map(|(t, _)| f(t)).collect::<Vec<_>>();
        let recs = || writes.iter().map(|(t, _)| &t.record);
        client
            .query(
                &stmts.write_many,
                &[
                    &recs().map(|r| r.id).collect::<Vec<_>>(),
                    &i64s(|t| t.expected_fence),
                    &recs().map(|r| r.status.as_str()).collect::<Vec<_>>(),
                    &recs().map(|r| r.compensating).collect::<Vec<_>>(),
                    &i64s(|t| i64::from(t.record.step)),
                    &i64s(|t| i64::from(t.record.attempt)),
                    &recs().map(|r| r.data.as_str()).collect::<Vec<_>>(),
                    &recs().map(|r| r.wake_at).collect::<Vec<_>>(),
                    &recs().map(|r| r.deadline).collect::<Vec<_>>(),
                    &recs().map(|r| r.cancel_requested).collect::<Vec<_>>(),
                    &recs().map(|r| r.error.as_deref()).collect::<Vec<_>>(),
                    &recs().map(|r| r.owner.as_deref()).collect::<Vec<_>>(),
                    &i64s(|t| t.record.fence),
                    &i64s(|t| t.record.lease_until),
                    &i64s(|t| t.record.updated_at),
                    &writes.iter().map(|(_, line)| *line).collect::<Vec<_>>(),
                ],
            )
            .await
    };
    let (created, written) = if creates.is_empty() || writes.is_empty() {
        // One statement is atomic on its own.
        futures::join!(created, written)
    } else {
        let begin = client.batch_execute("BEGIN");
        let commit = client.batch_execute("COMMIT");
        let (b, created, written, c) = futures::join!(begin, created, written, commit);
        let (created, written) = b.and_then(|()| Ok((created?, written?)))?;
        c?;
        (Ok(created), Ok(written))
    };
    let created: std::collections::HashSet<SagaId> = created?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut written: std::collections::HashMap<SagaId, Applied> = written?
        .iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                Applied {
                    outcome: Some(row.try_get(1)?),
                    spill: row.try_get(2)?,
                },
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(batch
        .iter()
        .map(|c| match c {
            Cmd::Create(r, _, _) => Applied {
                outcome: created.contains(&r.id).then_some(false),
                spill: None,
            },
            Cmd::Write(t, _, _) => written.remove(&t.record.id).unwrap_or(Applied {
                outcome: None,
                spill: None,
            }),
        })
        .collect())
}

/// One transaction for the whole batch, statements pipelined.
async fn commit_batch(
    client: &Client,
    stmts: &Stmts,
    batch: &[Cmd],
) -> Vec<Result<Applied, String>> {
    let one = |cmd| run_one(client, stmts, cmd);
    let result = if let [cmd] = batch {
        // One statement is atomic on its own: autocommit, one round trip.
        one(cmd).await.map(|r| vec![r])
    } else if distinct_ids(batch) {
        run_sets(client, stmts, batch).await
    } else {
        // BEGIN, every statement and COMMIT are pipelined: one round trip for the batch.
        // A failed statement aborts the transaction (COMMIT then rolls back), and we report
        // the whole batch as failed.
        let begin = client.batch_execute("BEGIN");
        let statements = join_all(batch.iter().map(one));
        let commit = client.batch_execute("COMMIT");
        let (b, results, c) = futures::join!(begin, statements, commit);
        b.and_then(|()| results.into_iter().collect::<Result<Vec<_>, _>>())
            .and_then(|r| c.map(|()| r))
    };
    match result {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) => {
            let msg = e.to_string();
            batch.iter().map(|_| Err(msg.clone())).collect()
        }
    }
}

#[async_trait]
impl SagaStore for PostgresStore {
    async fn create(&self, record: &SagaRecord, event: &HistoryEvent) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Create(Box::new(record.clone()), history_line(event)?, reply);
        match self.submit(cmd, rx).await? {
            Some(_) => Ok(()),
            None => Err(Error::AlreadyExists(record.id)),
        }
    }

    async fn write(&self, transition: &Transition) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Write(
            Box::new(transition.clone()),
            history_line(&transition.event)?,
            reply,
        );
        self.submit(cmd, rx)
            .await?
            .ok_or(Error::LeaseLost(transition.record.id))
    }

    async fn renew(&self, id: SagaId, fence: i64, lease_until: i64) -> Result<()> {
        let n = self
            .client
            .execute(&self.renew_stmt, &[&id, &fence, &lease_until])
            .await
            .map_err(db)?;
        if n == 0 {
            Err(Error::LeaseLost(id))
        } else {
            Ok(())
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                &self.sql.claim,
                &[&owner, &now, &lease_until, &definitions, &limit],
            )
            .await
            .map_err(db)?;
        rows.iter().map(from_row).collect()
    }

    async fn release_owner(&self, owner: &str) -> Result<u64> {
        let row = self
            .client
            .query_one(
                &self.sql.release_owner,
                &[&owner, &self.sql.channel, &unix_ms()],
            )
            .await
            .map_err(db)?;
        let released: i64 = row.try_get(0).map_err(db)?;
        Ok(u64::try_from(released).unwrap_or(0))
    }

    async fn request_cancel(&self, id: SagaId) -> Result<()> {
        let n = self
            .client
            .execute(
                &format!(
                    "UPDATE {} SET cancel_requested = TRUE WHERE id = $1",
                    self.t("sagas")
                ),
                &[&id],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            Err(Error::NotFound(id))
        } else {
            Ok(())
        }
    }

    async fn load(&self, id: SagaId) -> Result<Option<SagaRecord>> {
        let row = self
            .client
            .query_opt(&self.load_stmt, &[&id])
            .await
            .map_err(db)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn history(&self, id: SagaId) -> Result<Vec<HistoryEvent>> {
        // One statement (one snapshot): spilled chunks in order, then the row's own tail.
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT body FROM (\
                        SELECT seq AS k, body FROM {} WHERE saga_id = $1 \
                        UNION ALL SELECT 9223372036854775807 AS k, history AS body \
                        FROM {} WHERE id = $1) h ORDER BY k",
                    self.t("saga_history"),
                    self.t("sagas")
                ),
                &[&id],
            )
            .await
            .map_err(db)?;
        let bodies = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0).map_err(db))
            .collect::<Result<Vec<_>>>()?;
        parse_history(bodies.iter().map(String::as_str)).map_err(|e| Error::backend(BACKEND, e))
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<SagaRecord>> {
        let status = query.status.map(SagaStatus::as_str);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                &format!(
                    "{} WHERE ($1::TEXT IS NULL OR status = $1) \
                     AND ($2::BIGINT IS NULL OR updated_at < $2) \
                     AND ($3::TEXT IS NULL OR name = $3) \
                     ORDER BY updated_at, id LIMIT $4",
                    self.sql.select
                ),
                &[&status, &query.updated_before, &query.name, &limit],
            )
            .await
            .map_err(db)?;
        rows.iter().map(from_row).collect()
    }

    async fn unfinished_definitions(&self) -> Result<Vec<String>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT DISTINCT def_key FROM {} \
                     WHERE status NOT IN ('completed', 'compensated') ORDER BY def_key",
                    self.t("sagas")
                ),
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map_err(db))
            .collect()
    }

    async fn work_signal(&self) -> Result<Option<super::WorkSignal>> {
        self.listen.signal().await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

    /// Tables made before history moved into the saga row: connecting adds the column, the
    /// old history rows (one JSON event each) read back first, new events follow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connects_to_tables_from_before_in_row_history() {
        let schema = format!("saga_migrate_{}", uuid::Uuid::new_v4().simple());
        let s = quote_ident(&schema);
        let admin = connect_client(PG).await.unwrap();
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.sagas (id UUID PRIMARY KEY, name TEXT NOT NULL,
                    version BIGINT NOT NULL, def_key TEXT NOT NULL, status TEXT NOT NULL,
                    compensating BOOLEAN NOT NULL, step BIGINT NOT NULL, attempt BIGINT NOT NULL,
                    data TEXT NOT NULL, wake_at BIGINT, deadline BIGINT,
                    cancel_requested BOOLEAN NOT NULL, error TEXT, owner TEXT,
                    fence BIGINT NOT NULL, lease_until BIGINT NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
                 CREATE TABLE {s}.saga_history (saga_id UUID NOT NULL, seq BIGSERIAL,
                    body TEXT NOT NULL, PRIMARY KEY (saga_id, seq));"
            ))
            .await
            .unwrap();
        let id = uuid::Uuid::new_v4();
        admin
            .execute(
                &format!(
                    "INSERT INTO {s}.sagas ({COLUMNS}, def_key) VALUES ($1, 'old', 1, \
                     'running', false, 1, 0, '{{}}', NULL, NULL, false, NULL, 'me', 3, 0, 0, 0, \
                     'old@v1')"
                ),
                &[&id],
            )
            .await
            .unwrap();
        for (at, event) in [(1, "started"), (2, "step_completed")] {
            let body = serde_json::to_string(&HistoryEvent::new(at, event)).unwrap();
            admin
                .execute(
                    &format!("INSERT INTO {s}.saga_history (saga_id, body) VALUES ($1, $2)"),
                    &[&id, &body],
                )
                .await
                .unwrap();
        }
        let store = PostgresStore::connect(PG, &schema).await.unwrap();
        let (events, _) = crate::store::tests::continue_old_saga(&store, id).await;
        store.drop_schema().await.unwrap();
        assert_eq!(events, crate::store::tests::continued_history());
    }
}
