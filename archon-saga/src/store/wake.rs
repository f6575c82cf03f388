//! A store's wake-up signal: "claimable work may have appeared" (PostgreSQL `LISTEN/NOTIFY`).

use std::sync::Arc;

use tokio::{sync::Notify, task::JoinHandle};

/// Tells an engine that claimable work may have appeared in a shared store, so it claims
/// now instead of at its next poll. Returned by [`SagaStore::work_signal`](crate::SagaStore::work_signal).
///
/// A signal is a hint: it may fire with nothing to claim, and several fires may collapse
/// into one. Polling stays the fallback for anything it misses. A store that listens for
/// notifications in a background task hands that task over with [`with_task`](Self::with_task);
/// it is aborted when the signal is dropped (when the engine shuts down).
///
/// ```
/// use std::sync::Arc;
/// use archon_saga::WorkSignal;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let notify = Arc::new(tokio::sync::Notify::new());
/// let signal = WorkSignal::new(notify.clone());
/// notify.notify_one(); // e.g. from a task that received a database notification
/// signal.notified().await;
/// # }
/// ```
#[derive(Debug)]
pub struct WorkSignal {
    notify: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl WorkSignal {
    /// A signal fired through `notify` (`notify_one`, so a fire while nobody waits is kept).
    pub fn new(notify: Arc<Notify>) -> Self {
        Self { notify, task: None }
    }

    /// The background task that feeds this signal; aborted when the signal is dropped.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use archon_saga::WorkSignal;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let notify = Arc::new(tokio::sync::Notify::new());
    /// let feeder = tokio::spawn({
    ///     let notify = notify.clone();
    ///     async move { notify.notify_one() }
    /// });
    /// let signal = WorkSignal::new(notify).with_task(feeder);
    /// signal.notified().await;
    /// # }
    /// ```
    #[must_use]
    pub fn with_task(mut self, task: JoinHandle<()>) -> Self {
        self.task = Some(task);
        self
    }

    /// Wait for the next fire.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # async fn f(signal: archon_saga::WorkSignal) {
    /// signal.notified().await;
    /// # }
    /// ```
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for WorkSignal {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
