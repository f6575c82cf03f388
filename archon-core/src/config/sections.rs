//! Configuration sections that Archon's own parts read. Embed them in your service's config.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default: what log shippers read).
    #[default]
    Json,
    /// Human-readable text for a terminal.
    Human,
}

/// `[log]`: see [`logging::init`](crate::logging::init).
///
/// ```
/// use archon_core::config::{LogConfig, LogFormat};
/// let cfg = LogConfig { format: LogFormat::Human, ..LogConfig::default() };
/// assert_eq!(cfg.filter, "info");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (default) or `human`.
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,archon_events=debug`. `RUST_LOG`, when set, wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".to_owned(),
        }
    }
}

/// `[server]`: where the HTTP and gRPC servers listen.
///
/// Both default to loopback; set `0.0.0.0:PORT` explicitly to listen on every interface.
///
/// ```
/// let cfg = archon_core::config::ServerConfig::default();
/// assert_eq!(cfg.http.port(), 8080);
/// assert!(cfg.http.ip().is_loopback());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The HTTP listener (health, metrics, your routes). Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// The gRPC listener. Default `127.0.0.1:50051`.
    pub grpc: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            grpc: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
        }
    }
}

/// `[shutdown]`: see [`Shutdown`](crate::shutdown::Shutdown).
///
/// ```
/// use std::time::Duration;
/// let cfg = archon_core::config::ShutdownConfig::default();
/// assert_eq!(cfg.drain_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long after readiness turned NOT_SERVING the servers keep accepting, so load balancers
    /// stop sending traffic first. Default `0s`; a few seconds behind Kubernetes.
    #[serde(with = "super::duration")]
    pub readiness_delay: Duration,
    /// How long in-flight work may take to finish before it is cancelled. Default `10s`.
    #[serde(with = "super::duration")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            readiness_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// `[health]`: see [`HealthRegistry`](crate::health::HealthRegistry).
///
/// ```
/// use std::time::Duration;
/// let cfg = archon_core::config::HealthConfig::default();
/// assert_eq!(cfg.check_timeout, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How long one check may take before it counts as failed. Default `2s`.
    #[serde(with = "super::duration")]
    pub check_timeout: Duration,
    /// How long a result is reused, so a storm of probes does not hammer dependencies.
    /// Default `1s`.
    #[serde(with = "super::duration")]
    pub cache_ttl: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(1),
        }
    }
}
