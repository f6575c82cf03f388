//! Middleware for router handlers: tower layers over [`HandlerService`](super::HandlerService).
//!
//! Each is a plain [`tower_layer::Layer`], so layers from elsewhere (archon-client's, tower's)
//! compose with them as long as they keep the `EventContext -> Result<(), HandlerError>` shape.

mod dedupe;
mod metrics;
mod retry;
mod timeout;
mod trace;

pub use self::dedupe::{Dedupe, DedupeLayer, DedupeStore, MemoryDedupeStore};
pub use self::metrics::{MeteredPublisher, Metrics, MetricsLayer, names as metric_names};
pub use self::retry::{Retry, RetryLayer};
pub use self::timeout::{Elapsed, Timeout, TimeoutLayer};
pub use self::trace::{Tracing, TracingLayer};
