//! Environment overrides: `<PREFIX>_A__B=value` sets `a.b`.

use crate::error::{ConfigError, ConfigErrorKind, ConfigOrigin};

/// One environment variable that set a key.
#[derive(Debug, Clone)]
pub(super) struct Override {
    pub(super) var: String,
    key: String,
}

impl Override {
    /// Whether an error about `key` is about this variable's value.
    pub(super) fn covers(&self, key: &str) -> bool {
        key == self.key
            || key
                .strip_prefix(self.key.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    }
}

/// The process's variables that start with `<prefix>_` (without panicking on non-UTF-8 ones).
pub(super) fn process_vars(prefix: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let wanted = format!("{prefix}_");
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|k| k.starts_with(&wanted)) else {
            continue;
        };
        let Ok(value) = value.into_string() else {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "value is not valid UTF-8",
            )
            .with_origin(Some(ConfigOrigin::Env {
                var: key.to_owned(),
            })));
        };
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

/// Merges the matching variables into `root`, in name order, and says which keys they set.
pub(super) fn apply_overrides(
    root: &mut toml::Table,
    prefix: &str,
    vars: Vec<(String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let wanted = format!("{prefix}_");
    let mut vars: Vec<_> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(&wanted))
        .collect();
    vars.sort();
    let mut applied = Vec::with_capacity(vars.len());
    for (var, raw) in vars {
        let segments: Vec<String> = var[wanted.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "empty key segment in variable name (use `__` between nested keys)",
            )
            .with_origin(Some(ConfigOrigin::Env { var })));
        }
        let key = segments.join(".");
        set_path(root, &segments, parse_value(&raw)).map_err(|conflict| {
            ConfigError::new(
                ConfigErrorKind::InvalidType,
                format!("`{conflict}` is not a table, so `{key}` cannot be set inside it"),
            )
            .with_key(key.clone())
            .with_origin(Some(ConfigOrigin::Env { var: var.clone() }))
        })?;
        applied.push(Override { var, key });
    }
    Ok(applied)
}

/// Reads the text as a TOML value; what is not valid TOML (or is a date) stays a string.
fn parse_value(raw: &str) -> toml::Value {
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(toml::Value::Datetime(_)) | None => toml::Value::String(raw.to_owned()),
        Some(value) => value,
    }
}

/// Sets `root[segments...] = value`, creating tables on the way; `Err` names a non-table parent.
fn set_path(root: &mut toml::Table, segments: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = segments.split_last() else {
        return Ok(());
    };
    let mut table = root;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(segments[..=depth].join(".")),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_toml_or_kept_as_strings() {
        assert_eq!(parse_value("8080"), toml::Value::Integer(8080));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("5s"), toml::Value::String("5s".into()));
        assert_eq!(parse_value("\"8080\""), toml::Value::String("8080".into()));
        assert_eq!(
            parse_value("2024-01-01"),
            toml::Value::String("2024-01-01".into())
        );
    }

    #[test]
    fn nested_keys_use_double_underscore() {
        let mut root = toml::Table::new();
        let applied = apply_overrides(
            &mut root,
            "APP",
            vec![
                ("APP_SERVER__HTTP_PORT".into(), "1".into()),
                ("OTHER_X".into(), "2".into()),
            ],
        )
        .unwrap();
        assert_eq!(applied.len(), 1);
        assert!(applied[0].covers("server.http_port"));
        assert!(!applied[0].covers("server.http_port_extra"));
        assert_eq!(root["server"]["http_port"], toml::Value::Integer(1));
    }

    #[test]
    fn override_inside_a_scalar_is_an_error() {
        let mut root: toml::Table = "server = 5".parse().unwrap();
        let err = apply_overrides(
            &mut root,
            "APP",
            vec![("APP_SERVER__PORT".into(), "1".into())],
        )
        .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidType);
        assert_eq!(err.key(), Some("server.port"));
    }
}
