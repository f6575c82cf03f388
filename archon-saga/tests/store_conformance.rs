//! The store conformance suite on every store: memory, SQLite and (feature `postgres`)
//! PostgreSQL at 127.0.0.1:5432, database `test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(archon_saga::MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = archon_saga::SqliteStore::open(dir.path().join("sagas.db")).unwrap();
    conformance::run_all(Arc::new(store)).await;
}

/// On a current-thread runtime every SQLite write goes through the writer thread (a write
/// commits inline only on a multi-threaded runtime).
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "current_thread")]
async fn sqlite_store_conforms_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = archon_saga::SqliteStore::open(dir.path().join("sagas.db")).unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let schema = format!("saga_conf_{}", uuid::Uuid::new_v4().simple());
    let store = archon_saga::PostgresStore::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        &schema,
    )
    .await
    .unwrap();
    let store = Arc::new(store);
    conformance::run_all(store.clone()).await;
    store.drop_schema().await.unwrap();
}
