//! Configuration: each kind of bad input gives a typed error naming the key and its origin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::time::Duration;

use archon_core::Error;
use archon_core::config::{
    ConfigError, ConfigErrorKind, ConfigLoader, ConfigOrigin, LogConfig, LogFormat, Validate,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Server {
    host: String,
    port: u16,
    #[serde(with = "archon_core::config::duration")]
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct AppConfig {
    name: String,
    server: Server,
    #[serde(default)]
    log: LogConfig,
}

impl Validate for AppConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.host.is_empty() {
            return Err(ConfigError::invalid("server.host", "must not be empty"));
        }
        Ok(())
    }
}

const GOOD: &str = r#"
name = "orders"

[server]
host = "localhost"
port = 8080
timeout = "5s"
"#;

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn config_error(result: archon_core::Result<AppConfig>) -> ConfigError {
    match result {
        Err(Error::Config(err)) => err,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
    }
}

#[test]
fn loads_a_valid_file() {
    let file = file_with(GOOD);
    let cfg: AppConfig = ConfigLoader::new("APP")
        .file(file.path())
        .env_vars(no_env())
        .load_validated()
        .unwrap();
    assert_eq!(cfg.name, "orders");
    assert_eq!(cfg.server.port, 8080);
    assert_eq!(cfg.server.timeout, Duration::from_secs(5));
    assert_eq!(cfg.log, LogConfig::default());
}

#[test]
fn environment_overrides_win_over_the_file() {
    let file = file_with(GOOD);
    let cfg: AppConfig = ConfigLoader::new("APP")
        .file(file.path())
        .env_vars([
            ("APP_SERVER__PORT", "9090"),
            ("APP_SERVER__TIMEOUT", "250ms"),
            ("APP_LOG__FORMAT", "human"),
            ("OTHER_SERVER__PORT", "1"),
        ])
        .load()
        .unwrap();
    assert_eq!(cfg.server.port, 9090);
    assert_eq!(cfg.server.timeout, Duration::from_millis(250));
    assert_eq!(cfg.log.format, LogFormat::Human);
}

#[test]
fn missing_required_value_names_the_key() {
    let file = file_with("name = 'orders'\n[server]\nhost = 'h'\ntimeout = '1s'\n");
    let err = config_error(
        ConfigLoader::new("APP")
            .file(file.path())
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::Missing);
    assert_eq!(err.key(), Some("server.port"));
    assert!(matches!(err.origin(), Some(ConfigOrigin::File { path, .. }) if path == file.path()));
    assert!(err.to_string().contains("missing field `port`"), "{err}");
}

#[test]
fn wrong_type_names_the_key_file_and_line() {
    let file = file_with(&GOOD.replace("port = 8080", "port = \"eighty\""));
    let err = config_error(
        ConfigLoader::new("APP")
            .file(file.path())
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::InvalidType);
    assert_eq!(err.key(), Some("server.port"));
    assert_eq!(
        err.origin(),
        Some(&ConfigOrigin::File {
            path: file.path().to_path_buf(),
            line: Some(6)
        })
    );
    assert!(err.message().contains("expected u16"), "{err}");
}

#[test]
fn wrong_type_from_the_environment_names_the_variable() {
    let file = file_with(GOOD);
    let err = config_error(
        ConfigLoader::new("APP")
            .file(file.path())
            .env_vars([("APP_SERVER__PORT", "http")])
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::InvalidType);
    assert_eq!(err.key(), Some("server.port"));
    assert_eq!(
        err.origin(),
        Some(&ConfigOrigin::Env {
            var: "APP_SERVER__PORT".into()
        })
    );
}

#[test]
fn unknown_key_is_denied_by_default() {
    let file = file_with(&GOOD.replace("port = 8080", "port = 8080\nprot = 1"));
    let err = config_error(
        ConfigLoader::new("APP")
            .file(file.path())
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::UnknownKey);
    assert_eq!(err.key(), Some("server.prot"));
    assert_eq!(
        err.origin(),
        Some(&ConfigOrigin::File {
            path: file.path().to_path_buf(),
            line: Some(7)
        })
    );

    let cfg: AppConfig = ConfigLoader::new("APP")
        .file(file.path())
        .env_vars(no_env())
        .allow_unknown_keys()
        .load()
        .unwrap();
    assert_eq!(cfg.server.port, 8080);
}

#[test]
fn unknown_key_from_the_environment_names_the_variable() {
    let err = config_error(
        ConfigLoader::new("APP")
            .toml_str(GOOD)
            .env_vars([("APP_SERVER__PROT", "1")])
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::UnknownKey);
    assert_eq!(
        err.origin(),
        Some(&ConfigOrigin::Env {
            var: "APP_SERVER__PROT".into()
        })
    );
}

#[test]
fn unknown_key_inside_a_section_with_deny_unknown_fields() {
    let err = config_error(
        ConfigLoader::new("APP")
            .toml_str(format!("{GOOD}\n[log]\nfromat = 'json'\n"))
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::UnknownKey);
    assert_eq!(err.key(), Some("log.fromat"));
    assert_eq!(err.origin(), Some(&ConfigOrigin::Inline { line: Some(10) }));
}

#[test]
fn invalid_duration_is_a_typed_error() {
    let file = file_with(&GOOD.replace("\"5s\"", "\"5 parsecs\""));
    let err = config_error(
        ConfigLoader::new("APP")
            .file(file.path())
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
    assert_eq!(err.key(), Some("server.timeout"));
    assert!(
        err.message().contains("5 parsecs") && err.message().contains("duration"),
        "{err}"
    );
    assert_eq!(
        err.origin(),
        Some(&ConfigOrigin::File {
            path: file.path().to_path_buf(),
            line: Some(7)
        })
    );
}

#[test]
fn out_of_range_number_is_an_invalid_value() {
    let err = config_error(
        ConfigLoader::new("APP")
            .toml_str(GOOD)
            .env_vars([("APP_SERVER__PORT", "70000")])
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
    assert_eq!(err.key(), Some("server.port"));
}

#[test]
fn syntax_error_gives_the_line() {
    let file = file_with("name = 'orders'\n[server\nport = 1\n");
    let err = config_error(
        ConfigLoader::new("APP")
            .file(file.path())
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::Syntax);
    assert!(
        matches!(err.origin(), Some(ConfigOrigin::File { line: Some(2), .. })),
        "{err:?}"
    );
}

#[test]
fn missing_file_is_an_io_error_unless_optional() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = config_error(
        ConfigLoader::new("APP")
            .file(&path)
            .env_vars(no_env())
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::Io);

    #[derive(Debug, Deserialize)]
    struct OnlyEnv {
        port: u16,
    }
    let cfg: OnlyEnv = ConfigLoader::new("APP")
        .optional_file(&path)
        .env_vars([("APP_PORT", "1234")])
        .load()
        .unwrap();
    assert_eq!(cfg.port, 1234);
}

#[test]
fn validation_rule_names_the_key() {
    let err = config_error(
        ConfigLoader::new("APP")
            .toml_str(GOOD.replace("host = \"localhost\"", "host = \"\""))
            .env_vars(no_env())
            .load_validated(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
    assert_eq!(err.key(), Some("server.host"));
    assert_eq!(err.origin(), Some(&ConfigOrigin::Validation));
}

#[test]
fn malformed_environment_variable_name_is_an_error() {
    let err = config_error(
        ConfigLoader::new("APP")
            .toml_str(GOOD)
            .env_vars([("APP_SERVER____PORT", "1")])
            .load(),
    );
    assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
    assert_eq!(
        err.origin(),
        Some(&ConfigOrigin::Env {
            var: "APP_SERVER____PORT".into()
        })
    );
}
