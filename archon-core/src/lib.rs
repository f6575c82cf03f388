//! # archon-core
//!
//! The small, stable core every Archon crate and service builds on:
//!
//! | module | what it gives you |
//! |---|---|
//! | [`config`] | a typed configuration from TOML with `PREFIX_A__B` environment overrides and errors that name the key, the file and line or variable, and what was expected |
//! | [`logging`] | JSON-lines (or human) logs on `tracing`, each line with the service and the trace/correlation ids |
//! | [`context`] | correlation, causation, tenant and W3C trace context, carried the same way in HTTP headers, gRPC metadata and event headers |
//! | [`health`] | liveness/readiness checks with timeouts and caching, served as `/livez` + `/readyz` and as `grpc.health.v1.Health` |
//! | [`shutdown`] | SIGINT/SIGTERM handling: readiness off, drain, then cancel; a runner for axum + tonic servers |
//! | [`ServiceInfo`] | the service's name, version, instance and environment |
//!
//! ## Feature flags
//! - `http` (default): the axum health router and [`shutdown::Servers::http`].
//! - `grpc` (default): the tonic health service and [`shutdown::Servers::grpc`].
//!
//! ## Example
//! ```
//! use archon_core::{config::ConfigLoader, config::LogConfig, service_info};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     #[serde(default)]
//!     log: LogConfig,
//! }
//! let config: Config = ConfigLoader::new("MYSVC")
//!     .toml_str("[log]\nformat = 'human'")
//!     .env_vars([("MYSVC_LOG__FILTER", "debug")])
//!     .load()?;
//! assert_eq!(config.log.filter, "debug");
//! let service = service_info!();
//! # let _ = service;
//! // archon_core::logging::init(&service, &config.log)?;
//! # Ok::<(), archon_core::Error>(())
//! ```

pub mod config;
pub mod context;
mod error;
pub mod health;
pub mod logging;
mod service;
pub mod shutdown;

pub use self::error::{BoxError, Error, Result};
pub use self::service::ServiceInfo;
