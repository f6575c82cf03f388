//! Checks shared by the durable stores' own unit tests.
#![allow(clippy::unwrap_used)]

use super::{HistoryEvent, SagaRecord, SagaStore, Transition};
use crate::SagaId;

/// The history every migration test expects after [`continue_old_saga`].
pub(super) fn continued_history() -> Vec<(i64, String)> {
    vec![
        (1, "started".to_owned()),
        (2, "step_completed".to_owned()),
        (3, "step_completed".to_owned()),
    ]
}

/// Continue saga `id`, written in an older layout at fence 3 with history `started` (at 1)
/// and `step_completed` (at 2): write one more step and return the history read back as
/// (at, event), and the record written.
pub(super) async fn continue_old_saga(
    store: &dyn SagaStore,
    id: SagaId,
) -> (Vec<(i64, String)>, SagaRecord) {
    let mut rec = store.load(id).await.unwrap().unwrap();
    rec.step = 2;
    store
        .write(&Transition {
            expected_fence: 3,
            record: rec.clone(),
            event: HistoryEvent::new(3, "step_completed"),
        })
        .await
        .unwrap();
    let events = store
        .history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.at, e.event))
        .collect();
    (events, rec)
}
