//! `LISTEN/NOTIFY` wake-ups for the PostgreSQL store.
//!
//! The store announces a write that makes a saga claimable right now with a `NOTIFY`
//! (payload: the definition key) once the write has committed: a saga inserted unowned, a
//! saga written unowned with no timer pending or a timer already due (operator actions), the
//! leases of an instance released (an instance restarting under its id). The writes of an
//! owned saga's ordinary transitions, claims and lease renewals are not announced, so the hot
//! path pays nothing: no trigger is evaluated on the sagas table (an earlier version's row
//! trigger was, on every write) and no commit takes the cluster-wide notify lock. A listening connection per engine turns the
//! notifications into a [`WorkSignal`]. Work that nothing announces is found by polling: a
//! crashed instance's sagas once their leases expire, timers that fall due later, and rows
//! written by programs other than this store.

use std::{future::poll_fn, sync::Arc, task::Poll, time::Duration};

use tokio::{sync::Notify, task::JoinHandle};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{db, quote_ident};
use crate::{Result, store::WorkSignal};

/// The channel of one schema: a fixed-length name (channel names are limited to 63 bytes),
/// derived with FNV-1a so every process computes the same one.
pub(super) fn channel(schema: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("archon_saga_{h:016x}")
}

/// The row trigger that announced claimable work before the store announced its own writes.
const OLD_TRIGGER: &str = "archon_saga_work_v1";

/// Drop an earlier version's notify trigger, if the table still has it (its evaluation cost
/// every write; the store announces its writes itself now). Looked up first, so an instance
/// finding no trigger takes no lock on the sagas table under running instances.
pub(super) async fn drop_old_trigger(client: &Client, schema: &str) -> Result<()> {
    let installed = client
        .query_opt(
            "SELECT 1 FROM pg_trigger t
               JOIN pg_class c ON c.oid = t.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = 'sagas' AND t.tgname = $2",
            &[&schema, &OLD_TRIGGER],
        )
        .await
        .map_err(db)?;
    if installed.is_none() {
        return Ok(());
    }
    let s = quote_ident(schema);
    client
        .batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {OLD_TRIGGER} ON {s}.sagas;
             DROP FUNCTION IF EXISTS {s}.archon_saga_notify();"
        ))
        .await
        .map_err(db)
}

/// What the store keeps to open listening connections.
#[derive(Debug, Clone)]
pub(super) struct Listen {
    config: Arc<str>,
    channel: String,
}

impl Listen {
    pub(super) fn new(config: &str, schema: &str) -> Self {
        Self {
            config: config.into(),
            channel: channel(schema),
        }
    }

    /// Open a listening connection and return a signal fed by it. The connection is
    /// re-opened (with backoff) when it drops; the signal fires after each reconnect, since
    /// notifications sent meanwhile are lost.
    pub(super) async fn signal(&self) -> Result<WorkSignal> {
        let notify = Arc::new(Notify::new());
        let first = Session::open(&self.config, &self.channel, &notify).await?;
        let task = tokio::spawn(keep_listening(self.clone(), Arc::clone(&notify), first));
        Ok(WorkSignal::new(notify).with_task(task))
    }
}

/// One listening connection: the client (dropping it closes the connection) and the task
/// reading its messages.
struct Session {
    _client: Client,
    reader: JoinHandle<()>,
}

impl Session {
    async fn open(config: &str, channel: &str, notify: &Arc<Notify>) -> Result<Self> {
        let (client, mut conn) = tokio_postgres::connect(config, NoTls).await.map_err(db)?;
        let to = Arc::clone(notify);
        let reader = tokio::spawn(async move {
            let ended = poll_fn(|cx| {
                loop {
                    match conn.poll_message(cx) {
                        Poll::Ready(Some(Ok(AsyncMessage::Notification(_)))) => to.notify_one(),
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(e)),
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            match ended {
                Some(e) => tracing::warn!(error = %e, "saga notification connection failed"),
                None => tracing::debug!("saga notification connection closed"),
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await
        {
            reader.abort();
            return Err(db(e));
        }
        Ok(Self {
            _client: client,
            reader,
        })
    }
}

async fn keep_listening(listen: Listen, notify: Arc<Notify>, mut session: Session) {
    loop {
        let _ = (&mut session.reader).await;
        let mut backoff = Duration::from_millis(100);
        session = loop {
            tokio::time::sleep(backoff).await;
            match Session::open(&listen.config, &listen.channel, &notify).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "reconnecting the saga notification listener");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        };
        notify.notify_one();
    }
}
