//! Timeouts: per attempt (tower's own `Timeout`), an overall [`Deadline`] across retries, and
//! its propagation to gRPC servers as `grpc-timeout` ([`GrpcTimeout`]).
//!
//! The overall deadline is stored in the request (for `http::Request`, in its extensions) so
//! that layers below the retry loop see how much time is left: [`GrpcTimeout`] sends the
//! remaining time with every attempt, and fails at once when none is left.
//!
//! ```
//! use std::time::Duration;
//! use archon_client::timeout::{DeadlineExceeded, DeadlineLayer, GrpcTimeoutLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_millis(20)))
//!     .layer(GrpcTimeoutLayer::new(None))
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         assert!(req.headers().contains_key("grpc-timeout"));
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, archon_core::BoxError>(())
//!     }));
//! let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! assert!(err.is::<DeadlineExceeded>());
//! # }
//! ```

mod deadline;
mod grpc;

use std::fmt;

pub use self::deadline::{Deadline, DeadlineLayer, DeadlineRequest, ResponseFuture};
pub use self::grpc::{GrpcTimeout, GrpcTimeoutFuture, GrpcTimeoutLayer, format_grpc_timeout};

/// The overall deadline of a call passed (across all its attempts).
///
/// ```
/// let err: archon_core::BoxError = archon_client::timeout::DeadlineExceeded::new().into();
/// assert!(err.is::<archon_client::timeout::DeadlineExceeded>());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineExceeded(());

impl DeadlineExceeded {
    /// The marker.
    ///
    /// ```
    /// use archon_client::timeout::DeadlineExceeded;
    /// let err: archon_core::BoxError = DeadlineExceeded::new().into();
    /// assert_eq!(err.to_string(), "deadline exceeded");
    /// assert_eq!(err.downcast_ref::<DeadlineExceeded>(), Some(&DeadlineExceeded::new()));
    /// ```
    pub fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}
