//! Who this service is: name, version, instance, environment.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a running service, carried in logs, metrics and health output.
///
/// ```
/// let info = archon_core::ServiceInfo::new("orders", "1.4.2").with_environment("staging");
/// assert_eq!(info.name, "orders");
/// assert_eq!(info.environment, "staging");
/// assert!(!info.instance_id.is_empty());
///
/// // Or from the calling crate's Cargo metadata:
/// let info = archon_core::service_info!();
/// assert_eq!(info.name, "archon-core");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    /// The service's name (`service.name` in OpenTelemetry terms).
    pub name: String,
    /// The service's version (`service.version`).
    pub version: String,
    /// This process's unique id (`service.instance.id`). Defaults to a fresh UUIDv7.
    #[serde(default = "new_instance_id")]
    pub instance_id: String,
    /// Where it runs (`deployment.environment.name`): `development`, `staging`, `production`...
    #[serde(default = "default_environment")]
    pub environment: String,
}

impl ServiceInfo {
    /// A service with a fresh instance id in the `development` environment.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            instance_id: new_instance_id(),
            environment: default_environment(),
        }
    }

    /// Sets the environment.
    #[must_use]
    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = environment.into();
        self
    }

    /// Sets the instance id (for example the pod name).
    #[must_use]
    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = instance_id.into();
        self
    }
}

impl fmt::Display for ServiceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}, {})",
            self.name, self.version, self.instance_id, self.environment
        )
    }
}

fn new_instance_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn default_environment() -> String {
    "development".to_owned()
}

/// A [`ServiceInfo`] named after the calling crate (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`).
///
/// ```
/// let info = archon_core::service_info!();
/// assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
/// ```
#[macro_export]
macro_rules! service_info {
    () => {
        $crate::ServiceInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
    };
}
