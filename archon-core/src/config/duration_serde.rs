//! Human-readable durations in configuration (`"250ms"`, `"5s"`, `"1h 30m"`).

/// `#[serde(with = "archon_core::config::duration")]` for a [`std::time::Duration`] written as
/// `"250ms"`, `"5s"` or `"1h 30m"`. An invalid text such as `"5 parsecs"` is a typed error.
///
/// ```
/// use std::time::Duration;
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Cfg {
///     #[serde(with = "archon_core::config::duration")]
///     timeout: Duration,
/// }
/// let cfg: Cfg = archon_core::config::ConfigLoader::new("APP")
///     .toml_str("timeout = '1m 30s'")
///     .env_vars(Vec::<(String, String)>::new())
///     .load()?;
/// assert_eq!(cfg.timeout, Duration::from_secs(90));
/// # Ok::<(), archon_core::Error>(())
/// ```
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) const EXPECTED: &str = "a duration such as \"250ms\", \"5s\" or \"1h 30m\"";

    /// Writes the duration as text (`"1m 30s"`).
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    /// Reads a duration from text.
    ///
    /// # Errors
    /// `invalid value` naming the text when it is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text)
    }

    pub(super) fn parse<E: de::Error>(text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text.trim())
            .map_err(|_| E::invalid_value(de::Unexpected::Str(text), &EXPECTED))
    }
}

/// `#[serde(with = "archon_core::config::option_duration", default)]` for an optional
/// [`std::time::Duration`]; see [`duration`].
///
/// ```
/// use std::time::Duration;
/// #[derive(serde::Deserialize)]
/// struct Cfg {
///     #[serde(with = "archon_core::config::option_duration", default)]
///     deadline: Option<Duration>,
/// }
/// let cfg: Cfg = archon_core::config::ConfigLoader::new("APP")
///     .toml_str("")
///     .env_vars(Vec::<(String, String)>::new())
///     .load()?;
/// assert_eq!(cfg.deadline, None);
/// # Ok::<(), archon_core::Error>(())
/// ```
pub mod option_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as text, or nothing.
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(&humantime::format_duration(*value)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an optional duration from text.
    ///
    /// # Errors
    /// `invalid value` naming the text when it is not a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::duration::parse(&text))
            .transpose()
    }
}
