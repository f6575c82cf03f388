//! Run with: cargo run -p hello-service
//!
//! The smallest Archon service: typed config (embedded defaults, a file, `HELLO_*` environment
//! overrides), JSON logs, `/livez` and `/readyz`, the standard gRPC health service, and graceful
//! shutdown on Ctrl-C, SIGTERM or after `--for <duration>`.
//!
//! The app is built by [`start`], so tests drive the same code `main` runs.

use std::net::SocketAddr;
use std::path::Path;

use archon_core::config::{ConfigLoader, HealthConfig, LogConfig, ServerConfig, ShutdownConfig};
use archon_core::health::{self, CheckKind, GrpcHealth, HealthRegistry};
use archon_core::shutdown::{Servers, Shutdown, ShutdownReport, bind};
use archon_core::{Result, ServiceInfo};
use axum::Json;
use axum::routing::get;
use serde::Deserialize;

/// The configuration compiled into the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Prefix of the environment overrides: `HELLO_SERVER__HTTP=127.0.0.1:9090`.
pub const ENV_PREFIX: &str = "HELLO";

/// `[service]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Service name.
    pub name: String,
    /// Deployment environment.
    pub environment: String,
}

/// hello-service's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity.
    pub service: ServiceSection,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Listeners.
    #[serde(default)]
    pub server: ServerConfig,
    /// Health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Shutdown timings.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

impl Config {
    /// The service identity this configuration describes.
    pub fn service_info(&self) -> ServiceInfo {
        ServiceInfo::new(self.service.name.clone(), env!("CARGO_PKG_VERSION"))
            .with_environment(self.service.environment.clone())
    }
}

/// Loads the configuration: the file if given, else the embedded defaults; then `HELLO_*`
/// environment overrides.
///
/// # Errors
/// A typed config error naming the key and where the value came from.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let loader = ConfigLoader::new(ENV_PREFIX);
    match path {
        Some(path) => loader.file(path).load(),
        None => loader.toml_str(DEFAULT_CONFIG).load(),
    }
}

/// A started service: listeners bound, not yet serving.
#[derive(Debug)]
pub struct App {
    /// The health checks; register more before [`run`](Self::run).
    pub health: HealthRegistry,
    /// The shutdown coordinator; [`Shutdown::trigger`] stops the service.
    pub shutdown: Shutdown,
    /// Where HTTP listens (`/`, `/livez`, `/readyz`).
    pub http_addr: SocketAddr,
    /// Where gRPC listens (`grpc.health.v1.Health`).
    pub grpc_addr: SocketAddr,
    servers: Servers,
}

impl App {
    /// Serves until shutdown completes.
    ///
    /// # Errors
    /// If a server fails.
    pub async fn run(self) -> Result<ShutdownReport> {
        self.servers.run().await
    }
}

/// Binds the listeners and assembles the service.
///
/// # Errors
/// [`archon_core::Error::Bind`] when a port is taken.
pub async fn start(config: &Config) -> Result<App> {
    let info = config.service_info();
    let health = HealthRegistry::new(config.health.clone());
    health.register("self", CheckKind::Liveness, || async { Ok(()) });
    let shutdown = Shutdown::new(config.shutdown.clone()).with_health(health.clone());

    let http = bind(config.server.http).await?;
    let grpc = bind(config.server.grpc).await?;
    let http_addr = http
        .local_addr()
        .map_err(|source| archon_core::Error::Bind {
            addr: config.server.http,
            source,
        })?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|source| archon_core::Error::Bind {
            addr: config.server.grpc,
            source,
        })?;

    let hello = serde_json::json!({ "service": info.name, "version": info.version });
    let router = axum::Router::new()
        .route("/", get(move || std::future::ready(Json(hello.clone()))))
        .merge(health::router(health.clone()));
    let routes = tonic::service::Routes::new(GrpcHealth::new(health.clone()).into_server());
    let servers = Servers::new(shutdown.clone())
        .http(http, router)
        .grpc(grpc, routes);
    Ok(App {
        health,
        shutdown,
        http_addr,
        grpc_addr,
        servers,
    })
}
