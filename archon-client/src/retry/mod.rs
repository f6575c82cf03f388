//! Retries as a [`tower::retry::Policy`]: exponential backoff with full jitter, attempt and
//! time limits, a retry budget, `Retry-After` / `grpc-retry-pushback-ms`, and idempotency
//! rules.
//!
//! Use [`RetryPolicy`] with tower's own `Retry` service (`tower::retry::RetryLayer`): tower
//! already does the retry loop; this module adds the policy tower lacks.
//!
//! ```
//! use std::time::Duration;
//! use archon_client::retry::{ExponentialBackoff, RetryConfig, RetryPolicy};
//! use tower::{Service, ServiceExt, retry::RetryLayer, ServiceBuilder, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let seen = calls.clone();
//! let mut svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::new(
//!         &RetryConfig::default()
//!             .max_attempts(3)
//!             .backoff(ExponentialBackoff::new(Duration::from_millis(1), Duration::from_millis(5), 2.0)),
//!     )))
//!     .service(service_fn(move |_req: http::Request<()>| {
//!         let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move {
//!             let status = if n == 0 { 503 } else { 200 };
//!             Ok::<_, archon_core::BoxError>(http::Response::builder().status(status).body(()).unwrap())
//!         }
//!     }));
//! let resp = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
//! # }
//! ```

mod backoff;
mod budget;
mod classify;
mod error;
mod policy;
mod request;

pub use self::backoff::ExponentialBackoff;
pub use self::budget::{RetryBudget, RetryBudgetConfig};
pub use self::classify::{
    DefaultRetryClassifier, RetryAction, RetryClassifier, RetryableError, parse_retry_after,
};
pub use self::error::BudgetExhausted;
pub use self::policy::{RetryConfig, RetryPolicy};
pub use self::request::{IDEMPOTENCY_KEY, RetryRequest};
