//! The one public error of `archon-core`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A boxed error, as tower and tonic use for causes from other crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `archon-core`.
///
/// Match on the meaning, not on the text. The enum is `#[non_exhaustive]`: new failure modes are
/// added without breaking callers.
///
/// ```
/// use archon_core::{Error, config::ConfigErrorKind};
///
/// let err = archon_core::config::ConfigLoader::new("APP")
///     .toml_str("port = \"eighty\"")
///     .load::<std::collections::HashMap<String, u16>>()
///     .unwrap_err();
/// match &err {
///     Error::Config(cfg) => assert_eq!(cfg.kind(), ConfigErrorKind::InvalidType),
///     other => panic!("unexpected error: {other}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration could not be read, parsed or validated.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A server could not bind its listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A running server failed.
    #[error("{server} server failed: {source}")]
    Serve {
        /// `"http"` or `"grpc"`.
        server: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The global logger (tracing subscriber) could not be installed, usually because one is
    /// installed already.
    #[error("cannot install the logger: {0}")]
    Logging(#[source] BoxError),
    /// An incoming W3C trace context value is malformed.
    #[error("invalid trace context: {reason}")]
    TraceContext {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Listening for OS signals failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// What kind of configuration problem a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io,
    /// The file is not valid TOML.
    Syntax,
    /// A required value is missing.
    Missing,
    /// A value has the wrong type (a string where a number is expected, ...).
    InvalidType,
    /// A value has the right type but is not acceptable (`"5 parsecs"` as a duration, a port out
    /// of range, a failed validation rule).
    InvalidValue,
    /// A key that the configuration type does not know (denied by default: usually a typo).
    UnknownKey,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigOrigin {
    /// A file, with the 1-based line when it is known.
    File {
        /// The file's path.
        path: PathBuf,
        /// The 1-based line of the key, when known.
        line: Option<usize>,
    },
    /// A TOML string given in code (see [`ConfigLoader::toml_str`](crate::config::ConfigLoader::toml_str)).
    Inline {
        /// The 1-based line of the key, when known.
        line: Option<usize>,
    },
    /// An environment variable.
    Env {
        /// The variable's name, e.g. `ARCHON_SERVER__PORT`.
        var: String,
    },
    /// A validation rule that looked at the whole configuration.
    Validation,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display()),
            Self::File { path, line: None } => write!(f, "{}", path.display()),
            Self::Inline { line: Some(line) } => write!(f, "inline config line {line}"),
            Self::Inline { line: None } => f.write_str("inline config"),
            Self::Env { var } => write!(f, "environment variable {var}"),
            Self::Validation => f.write_str("validation"),
        }
    }
}

/// A configuration problem: which key, where it came from, and what was expected.
///
/// Opaque on purpose: inspect it with [`kind`](Self::kind), [`key`](Self::key),
/// [`origin`](Self::origin) and [`message`](Self::message).
///
/// ```
/// use archon_core::config::{ConfigErrorKind, ConfigLoader};
/// #[derive(serde::Deserialize, Debug)]
/// struct Cfg { port: u16 }
///
/// let err = ConfigLoader::new("APP").toml_str("port = 80\nprot = 1").load::<Cfg>().unwrap_err();
/// let archon_core::Error::Config(err) = err else { unreachable!() };
/// assert_eq!(err.kind(), ConfigErrorKind::UnknownKey);
/// assert_eq!(err.key(), Some("prot"));
/// assert_eq!(err.to_string(), "config key `prot` (inline config line 2): unknown key");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    key: Option<String>,
    origin: Option<ConfigOrigin>,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            key: None,
            origin: None,
            message: message.into(),
        }
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.key = (!key.is_empty()).then_some(key);
        self
    }

    pub(crate) fn with_origin(mut self, origin: Option<ConfigOrigin>) -> Self {
        self.origin = origin;
        self
    }

    pub(crate) fn env_invalid(var: &str, message: impl Into<String>) -> Self {
        Self::new(ConfigErrorKind::InvalidValue, message).with_origin(Some(ConfigOrigin::Env {
            var: var.to_owned(),
        }))
    }

    /// A failed validation rule on `key`, for use in
    /// [`Validate::validate`](crate::config::Validate::validate).
    ///
    /// ```
    /// use archon_core::config::{ConfigError, ConfigErrorKind};
    /// let err = ConfigError::invalid("pool.size", "must be at least 1");
    /// assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
    /// ```
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ConfigErrorKind::InvalidValue, message)
            .with_key(key)
            .with_origin(Some(ConfigOrigin::Validation))
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The dotted key the problem is about (`server.port`), when there is one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Where the offending value came from, when known.
    pub fn origin(&self) -> Option<&ConfigOrigin> {
        self.origin.as_ref()
    }

    /// What was wrong and what was expected, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, &self.origin) {
            (Some(key), Some(origin)) => {
                write!(f, "config key `{key}` ({origin}): {}", self.message)
            }
            (Some(key), None) => write!(f, "config key `{key}`: {}", self.message),
            (None, Some(origin)) => write!(f, "config ({origin}): {}", self.message),
            (None, None) => write!(f, "config: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
