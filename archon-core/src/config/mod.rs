//! Typed configuration: a TOML file, overridden by environment variables, then validated.
//!
//! Your service defines one `serde` struct for its configuration and loads it with
//! [`ConfigLoader`]. Values are merged in this order, later winning:
//!
//! 1. the TOML file (or an inline TOML string),
//! 2. environment variables `<PREFIX>_<KEY>`, where `__` separates nested keys:
//!    `ARCHON_SERVER__PORT=8081` sets `server.port`. Their values are read as TOML values
//!    (`8081` is an integer, `true` a boolean, `[1, 2]` an array); anything that is not valid TOML
//!    is taken as a plain string (`5s`, `localhost`).
//!
//! Then the result is deserialised into your type. Every failure is an
//! [`Error::Config`](crate::Error::Config) carrying a [`ConfigError`] that names the key, where the
//! value came from (file and line, or environment variable) and what was expected. Keys your type
//! does not know are errors by default (they are usually typos); see
//! [`ConfigLoader::allow_unknown_keys`].
//!
//! Durations are written the human way (`"250ms"`, `"5s"`, `"1h 30m"`) with
//! `#[serde(with = "archon_core::config::duration")]`.
//!
//! ```
//! use std::time::Duration;
//! use archon_core::config::{ConfigLoader, ConfigError, Validate};
//!
//! #[derive(Debug, serde::Deserialize)]
//! struct AppConfig {
//!     port: u16,
//!     #[serde(with = "archon_core::config::duration")]
//!     timeout: Duration,
//! }
//!
//! impl Validate for AppConfig {
//!     fn validate(&self) -> Result<(), ConfigError> {
//!         if self.port < 1024 {
//!             return Err(ConfigError::invalid("port", "must be 1024 or above"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let cfg: AppConfig = ConfigLoader::new("APP")
//!     .toml_str("port = 8080\ntimeout = \"2s\"")
//!     .env_vars([("APP_PORT", "9090")]) // in a service, leave this out to read the process env
//!     .load_validated()?;
//! assert_eq!(cfg.port, 9090);
//! assert_eq!(cfg.timeout, Duration::from_secs(2));
//! # Ok::<(), archon_core::Error>(())
//! ```

mod duration_serde;
mod env;
mod locate;
mod sections;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use self::duration_serde::{duration, option_duration};
pub use self::sections::{HealthConfig, LogConfig, LogFormat, ServerConfig, ShutdownConfig};
pub use crate::error::{ConfigError, ConfigErrorKind, ConfigOrigin};

use crate::Result;

/// A rule checked after the configuration has been loaded.
///
/// Return [`ConfigError::invalid`] naming the key, so the message points the operator at it.
///
/// ```
/// use archon_core::config::{ConfigError, Validate};
/// struct Pool { size: u32 }
/// impl Validate for Pool {
///     fn validate(&self) -> Result<(), ConfigError> {
///         if self.size == 0 {
///             return Err(ConfigError::invalid("pool.size", "must be at least 1"));
///         }
///         Ok(())
///     }
/// }
/// assert!(Pool { size: 0 }.validate().is_err());
/// ```
pub trait Validate {
    /// Checks the loaded configuration.
    fn validate(&self) -> Result<(), ConfigError>;
}

#[derive(Debug, Clone)]
enum Document {
    None,
    File { path: PathBuf, required: bool },
    Inline(String),
}

/// Loads a typed configuration from TOML and environment variables. See the
/// [module docs](self).
///
/// ```
/// use archon_core::config::ConfigLoader;
/// #[derive(serde::Deserialize)]
/// struct Cfg { name: String }
/// let cfg: Cfg = ConfigLoader::new("APP")
///     .toml_str("name = 'orders'")
///     .env_vars(Vec::<(String, String)>::new())
///     .load()?;
/// assert_eq!(cfg.name, "orders");
/// # Ok::<(), archon_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    prefix: String,
    document: Document,
    env: Option<Vec<(String, String)>>,
    deny_unknown: bool,
}

impl ConfigLoader {
    /// A loader whose environment overrides start with `<prefix>_` (for example `"ARCHON"`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            document: Document::None,
            env: None,
            deny_unknown: true,
        }
    }

    /// Reads this TOML file; a missing file is an error.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.document = Document::File {
            path: path.as_ref().to_path_buf(),
            required: true,
        };
        self
    }

    /// Reads this TOML file if it exists; a missing file means "environment and defaults only".
    pub fn optional_file(mut self, path: impl AsRef<Path>) -> Self {
        self.document = Document::File {
            path: path.as_ref().to_path_buf(),
            required: false,
        };
        self
    }

    /// Uses this TOML text instead of a file (embedded defaults, tests).
    pub fn toml_str(mut self, toml: impl Into<String>) -> Self {
        self.document = Document::Inline(toml.into());
        self
    }

    /// Uses these variables instead of the process environment. Only those starting with the
    /// prefix are looked at.
    pub fn env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Ignores keys the target type does not know instead of failing on them.
    pub fn allow_unknown_keys(mut self) -> Self {
        self.deny_unknown = false;
        self
    }

    /// Loads and deserialises the configuration.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for an unreadable file, invalid TOML, a missing
    /// value, a value of the wrong type or an unknown key.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T> {
        let (text, origin) = self.read_document()?;
        let mut root = match &text {
            Some(text) => text.parse::<toml::Table>().map_err(|e| {
                let line = e.span().map(|span| locate::line_of(text, span.start));
                ConfigError::new(ConfigErrorKind::Syntax, e.message().trim().to_owned())
                    .with_origin(Some(origin.at_line(line)))
            })?,
            None => toml::Table::new(),
        };
        let env_vars = match &self.env {
            Some(vars) => vars.clone(),
            None => env::process_vars(&self.prefix)?,
        };
        let overrides = env::apply_overrides(&mut root, &self.prefix, env_vars)?;
        let source = Source {
            text: text.as_deref(),
            origin: &origin,
            overrides: &overrides,
        };

        let mut unknown: Vec<String> = Vec::new();
        let value = toml::Value::Table(root);
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignoring = serde_ignored::Deserializer::new(value, &mut record);
        let parsed: std::result::Result<T, _> = serde_path_to_error::deserialize(ignoring);
        let parsed = parsed.map_err(|err| source.deserialize_error(&err))?;

        if self.deny_unknown
            && let Some(key) = unknown.into_iter().next()
        {
            let origin = source.origin_of(&key);
            return Err(ConfigError::new(ConfigErrorKind::UnknownKey, "unknown key")
                .with_key(key)
                .with_origin(origin)
                .into());
        }
        Ok(parsed)
    }

    /// Loads, deserialises, then runs [`Validate::validate`].
    ///
    /// # Errors
    /// As [`load`](Self::load), plus the validation rule's own error.
    pub fn load_validated<T: DeserializeOwned + Validate>(&self) -> Result<T> {
        let value: T = self.load()?;
        value.validate()?;
        Ok(value)
    }

    fn read_document(&self) -> Result<(Option<String>, DocOrigin)> {
        match &self.document {
            Document::None => Ok((None, DocOrigin::Inline)),
            Document::Inline(text) => Ok((Some(text.clone()), DocOrigin::Inline)),
            Document::File { path, required } => match std::fs::read_to_string(path) {
                Ok(text) => Ok((Some(text), DocOrigin::File(path.clone()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                    Ok((None, DocOrigin::File(path.clone())))
                }
                Err(e) => Err(
                    ConfigError::new(ConfigErrorKind::Io, format!("cannot read: {e}"))
                        .with_origin(Some(ConfigOrigin::File {
                            path: path.clone(),
                            line: None,
                        }))
                        .into(),
                ),
            },
        }
    }
}

#[derive(Debug, Clone)]
enum DocOrigin {
    Inline,
    File(PathBuf),
}

impl DocOrigin {
    fn at_line(&self, line: Option<usize>) -> ConfigOrigin {
        match self {
            Self::Inline => ConfigOrigin::Inline { line },
            Self::File(path) => ConfigOrigin::File {
                path: path.clone(),
                line,
            },
        }
    }
}

/// What was merged, to say where a key came from.
struct Source<'a> {
    text: Option<&'a str>,
    origin: &'a DocOrigin,
    overrides: &'a [env::Override],
}

impl Source<'_> {
    fn origin_of(&self, key: &str) -> Option<ConfigOrigin> {
        if let Some(over) = self.overrides.iter().find(|o| o.covers(key)) {
            return Some(ConfigOrigin::Env {
                var: over.var.clone(),
            });
        }
        let text = self.text?;
        Some(self.origin.at_line(locate::line_of_key(text, key)))
    }

    fn deserialize_error(&self, err: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = err.inner().message().trim().to_owned();
        let (kind, key) = classify(&message, &path);
        let origin = match kind {
            ConfigErrorKind::Missing => self.text.map(|_| self.origin.at_line(None)),
            _ => self.origin_of(&key),
        };
        let message = match (&origin, kind) {
            (Some(ConfigOrigin::Env { .. }), ConfigErrorKind::InvalidType) => format!(
                "{message} (environment values are read as TOML: quote a string, e.g. '\"8080\"')"
            ),
            _ => message,
        };
        ConfigError::new(kind, message)
            .with_key(key)
            .with_origin(origin)
    }
}

/// Sorts serde's standard messages into kinds; for a missing field the key is the field's path.
fn classify(message: &str, path: &str) -> (ConfigErrorKind, String) {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let key = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return (ConfigErrorKind::Missing, key);
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde_path_to_error already ends the path with the unknown field.
        let field = rest.split('`').next().unwrap_or_default();
        let key = if path.is_empty() {
            field.to_owned()
        } else if path == field || path.ends_with(&format!(".{field}")) {
            path.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return (ConfigErrorKind::UnknownKey, key);
    }
    let kind = if message.starts_with("invalid type") {
        ConfigErrorKind::InvalidType
    } else {
        ConfigErrorKind::InvalidValue
    };
    (kind, path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_sorts_serde_messages() {
        assert_eq!(
            classify("missing field `port`", "server").0,
            ConfigErrorKind::Missing
        );
        assert_eq!(classify("missing field `port`", "server").1, "server.port");
        assert_eq!(classify("missing field `port`", "").1, "port");
        assert_eq!(
            classify("invalid type: string \"x\", expected u16", "a").0,
            ConfigErrorKind::InvalidType
        );
        assert_eq!(
            classify("invalid value: integer `70000`, expected u16", "a").0,
            ConfigErrorKind::InvalidValue
        );
        assert_eq!(classify("unknown field `prot`", "s").1, "s.prot");
        assert_eq!(classify("unknown field `prot`", "s.prot").1, "s.prot");
    }
}
