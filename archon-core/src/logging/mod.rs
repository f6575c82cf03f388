//! Structured logging on `tracing`: JSON lines by default, or human-readable text.
//!
//! Every line carries the service's name, version and instance, and — when the current span or
//! one of its parents records them — `trace_id`, `span_id`, `correlation_id` and `tenant_id`
//! (see [`Metadata::span`](crate::context::Metadata::span)). `RUST_LOG`, when set, overrides the
//! configured filter.
//!
//! ```no_run
//! use archon_core::{config::LogConfig, logging, service_info};
//! logging::init(&service_info!(), &LogConfig::default())?;
//! tracing::info!(order_id = 42, "order placed");
//! // {"timestamp":"…","level":"INFO","target":"my_service","message":"order placed",
//! //  "fields":{"order_id":42},"service":"my-service","version":"0.1.0","instance":"…"}
//! # Ok::<(), archon_core::Error>(())
//! ```

mod format;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, LogConfig};
use crate::{Error, Result, ServiceInfo};

pub use self::format::ContextFieldsLayer;

/// Installs the global logger: the configured filter and format, written to standard output.
///
/// # Errors
/// [`Error::Config`] for an invalid filter, [`Error::Logging`] if a global logger is already set.
pub fn init(service: &ServiceInfo, config: &LogConfig) -> Result<()> {
    tracing_subscriber::registry()
        .with(filter(config)?)
        .with(layer(service, config, std::io::stdout))
        .try_init()
        .map_err(|e| Error::Logging(Box::new(e)))
}

/// The filter [`init`] uses: `RUST_LOG` when set, else `config.filter`.
///
/// # Errors
/// [`Error::Config`] naming `log.filter` (or `RUST_LOG`) when the directive does not parse.
pub fn filter(config: &LogConfig) -> Result<EnvFilter> {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| {
                Error::Config(ConfigError::env_invalid(
                    "RUST_LOG",
                    format!("invalid filter: {e}"),
                ))
            })
        }
        _ => EnvFilter::try_new(&config.filter).map_err(|e| {
            Error::Config(ConfigError::invalid(
                "log.filter",
                format!("invalid filter: {e}"),
            ))
        }),
    }
}

/// The formatting layer [`init`] installs, writing to `writer`: compose it with your own layers
/// (an OpenTelemetry layer, a test writer).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// use archon_core::{config::LogConfig, logging, service_info};
///
/// let subscriber = tracing_subscriber::registry()
///     .with(logging::layer(&service_info!(), &LogConfig::default(), std::io::sink));
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
/// ```
pub fn layer<S, W>(
    service: &ServiceInfo,
    config: &LogConfig,
    writer: W,
) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let format = format::ArchonFormat::new(service, config.format);
    ContextFieldsLayer::default().and_then(
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .event_format(format),
    )
}
