//! The universal conformance suite on the in-memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use archon_events::conformance::Harness;
use archon_events::{EventBus, Features, MemoryBus};

#[derive(Debug, Default)]
struct Memory(MemoryBus);

#[async_trait::async_trait]
impl Harness for Memory {
    fn features(&self) -> Features {
        self.0.features()
    }
    async fn connect(&self) -> archon_events::Result<Arc<dyn EventBus>> {
        Ok(Arc::new(self.0.connect()))
    }
}

archon_events::conformance_tests!(Memory::default());
