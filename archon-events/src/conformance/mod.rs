//! The universal conformance suite every backend passes (feature `conformance`).
//!
//! A port of Watermill's `pubsub/tests` suite plus Archon's own cases. A backend implements
//! [`Harness`] (how to connect to its broker, what [`Features`] it has) and expands
//! [`conformance_tests!`](crate::conformance_tests) in a test file; each case becomes one
//! `#[tokio::test]` on its own topic (`topic-<uuid>`). Cases a backend's features rule out
//! return early and log why.
//!
//! Sizes are small by default (CI); set `ARCHON_FULL=1` for Watermill's full stress sizes.
//!
//! ```ignore
//! // tests/conformance_memory.rs (the test crate needs tokio with `macros` and
//! // `rt-multi-thread`)
//! use std::sync::Arc;
//! use archon_events::conformance::Harness;
//! use archon_events::{EventBus, Features, MemoryBus};
//!
//! #[derive(Debug, Default)]
//! struct Memory(MemoryBus);
//!
//! #[async_trait::async_trait]
//! impl Harness for Memory {
//!     fn features(&self) -> Features { self.0.features() }
//!     async fn connect(&self) -> archon_events::Result<Arc<dyn EventBus>> {
//!         Ok(Arc::new(self.0.connect()))
//!     }
//! }
//!
//! archon_events::conformance_tests!(Memory::default());
//! ```

// A test suite: failing cases panic with a message, like any test.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod cases;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Error, EventBus, Features, Result};

/// How the suite reaches one backend.
///
/// Each test builds a fresh harness (the macro's argument), so a harness may own a broker
/// of its own or point at a shared one; every case uses unique topic names either way.
#[async_trait]
pub trait Harness: Send + Sync + fmt::Debug + 'static {
    /// What the backend guarantees; it decides which cases run.
    fn features(&self) -> Features;
    /// A new client (publisher and subscriber) to the same broker as every other client of
    /// this harness.
    async fn connect(&self) -> Result<Arc<dyn EventBus>>;
    /// Restarts the broker (only called when [`Features::broker_restart`] is set).
    async fn restart_broker(&self) -> Result<()> {
        Err(Error::NotSupported {
            feature: "broker restart",
        })
    }
}

/// Expands one `#[tokio::test]` per conformance case for a harness expression.
///
/// ```ignore
/// archon_events::conformance_tests!(MyHarness::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            publish_subscribe,
            concurrent_subscribe,
            many_topics,
            resend_on_nack,
            no_ack_blocks_next,
            continue_after_subscriber_close,
            concurrent_close,
            continue_after_errors,
            in_order_per_key,
            publisher_close,
            topic_isolation,
            subscription_cancel,
            new_subscriber_receives_old_events,
            reconnect_after_broker_restart,
            consumer_groups,
            delayed_nack,
            dead_letter_after_attempts,
            headers_and_trace_context,
            batch_publish,
            per_key_order_with_concurrency,
            graceful_shutdown_drains,
            malformed_payload_is_dead_lettered,
            oversized_event_is_rejected,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::conformance::cases::$case(&harness).await;
            }
        )*
    };
}
