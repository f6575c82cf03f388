//! The Prometheus recorder and the `/metrics` route.

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use archon_core::ServiceInfo;

use crate::names::{self, attr};
use crate::{Error, Result};

/// Histogram buckets for durations, in seconds: the OpenTelemetry advice for HTTP and RPC
/// durations. (The OpenTelemetry SDK's own defaults are millisecond-scale and Prometheus'
/// exporter renders summaries without buckets, so Archon always sets these.)
///
/// ```
/// assert_eq!(archon_metrics::DURATION_BUCKETS.first(), Some(&0.005));
/// assert_eq!(archon_metrics::DURATION_BUCKETS.last(), Some(&10.0));
/// ```
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The `Content-Type` of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How [`install`] sets up the Prometheus recorder.
///
/// ```
/// use archon_metrics::MetricsConfig;
/// let config = MetricsConfig::new(&archon_core::ServiceInfo::new("orders", "1.0.0"))
///     .with_label("region", "eu-west-1")
///     .with_buckets(&[0.01, 0.1, 1.0]);
/// assert_eq!(config.buckets(), &[0.01, 0.1, 1.0]);
/// ```
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    labels: Vec<(String, String)>,
    buckets: Vec<f64>,
    upkeep_interval: Duration,
}

impl MetricsConfig {
    /// Labels every series with the service's name, version and instance id, with the
    /// [`DURATION_BUCKETS`].
    pub fn new(service: &ServiceInfo) -> Self {
        Self {
            labels: vec![
                (attr::SERVICE_NAME.to_owned(), service.name.clone()),
                (attr::SERVICE_VERSION.to_owned(), service.version.clone()),
                (
                    attr::SERVICE_INSTANCE_ID.to_owned(),
                    service.instance_id.clone(),
                ),
            ],
            buckets: DURATION_BUCKETS.to_vec(),
            upkeep_interval: Duration::from_secs(5),
        }
    }

    /// Adds a label to every series (for example the region or the cluster).
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Replaces the histogram buckets (upper bounds, in seconds, strictly increasing).
    #[must_use]
    pub fn with_buckets(mut self, buckets: &[f64]) -> Self {
        self.buckets = buckets.to_vec();
        self
    }

    /// How often histogram samples are folded into buckets between scrapes (default 5 s), so
    /// memory stays bounded when nobody scrapes.
    #[must_use]
    pub fn with_upkeep_interval(mut self, interval: Duration) -> Self {
        self.upkeep_interval = interval;
        self
    }

    /// The histogram buckets.
    pub fn buckets(&self) -> &[f64] {
        &self.buckets
    }

    /// The labels added to every series.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    fn builder(&self) -> Result<PrometheusBuilder> {
        let increasing = self.buckets.windows(2).all(|w| w[0] < w[1]);
        if self.buckets.is_empty() || !increasing || self.buckets.iter().any(|b| !b.is_finite()) {
            return Err(Error::Config {
                key: "metrics.buckets",
                reason: format!(
                    "buckets must be finite, strictly increasing and not empty, got {:?}",
                    self.buckets
                ),
            });
        }
        let mut builder = PrometheusBuilder::new()
            .with_recommended_naming(true)
            .set_buckets(&self.buckets)
            .map_err(|e| Error::Config {
                key: "metrics.buckets",
                reason: e.to_string(),
            })?;
        for (key, value) in &self.labels {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(Error::Config {
                    key: "metrics.labels",
                    reason: format!("`{key}` is not a valid Prometheus label name"),
                });
            }
            builder = builder.add_global_label(key.clone(), value.clone());
        }
        Ok(builder)
    }
}

/// Installs the process-wide Prometheus recorder for the [`metrics`] facade, describes every
/// Archon instrument ([`names::ALL`]) and starts a small upkeep thread. No listener is opened:
/// serve [`MetricsHandle::router`] from your own axum server.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// let service = archon_core::service_info!();
/// let metrics = archon_metrics::install(&archon_metrics::MetricsConfig::new(&service))?;
/// let app: axum::Router = axum::Router::new().merge(metrics.router());
/// # let _ = app; Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Config`] for invalid buckets or labels, [`Error::AlreadyInstalled`] when a global
/// `metrics` recorder is already set.
pub fn install(config: &MetricsConfig) -> Result<MetricsHandle> {
    let (recorder, handle) = build_recorder(config)?;
    metrics::set_global_recorder(recorder).map_err(|_| Error::AlreadyInstalled {
        what: "metrics recorder",
    })?;
    names::describe_all();
    crate::observe::series::enable();
    let upkeep = handle.clone();
    let interval = config.upkeep_interval;
    let spawned = std::thread::Builder::new()
        .name("archon-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                upkeep.inner.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; samples are folded at scrape time only");
    }
    Ok(handle)
}

/// Builds the recorder without installing it, for tests and for users who compose recorders
/// (use it with [`metrics::with_local_recorder`] or a fanout). Call
/// [`MetricsHandle::describe_all`] under the recorder to get units and help text.
///
/// ```
/// let config = archon_metrics::MetricsConfig::new(&archon_core::ServiceInfo::new("svc", "1.0.0"));
/// let (recorder, handle) = archon_metrics::build_recorder(&config)?;
/// metrics::with_local_recorder(&recorder, || {
///     archon_metrics::MetricsHandle::describe_all();
///     metrics::counter!("archon.retry.attempts").increment(1);
/// });
/// assert!(handle.render().contains("archon_retry_attempts_total"));
/// # Ok::<(), archon_metrics::Error>(())
/// ```
///
/// # Errors
/// [`Error::Config`] for invalid buckets or labels.
pub fn build_recorder(config: &MetricsConfig) -> Result<(PrometheusRecorder, MetricsHandle)> {
    let recorder = config.builder()?.build_recorder();
    let handle = MetricsHandle {
        inner: recorder.handle(),
    };
    Ok((recorder, handle))
}

/// Renders the exposition and serves it as `GET /metrics`.
///
/// ```
/// let config = archon_metrics::MetricsConfig::new(&archon_core::ServiceInfo::new("svc", "1.0.0"));
/// let (_recorder, handle) = archon_metrics::build_recorder(&config)?;
/// let router: axum::Router = handle.router();
/// # let _ = router;
/// # Ok::<(), archon_metrics::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    inner: PrometheusHandle,
}

impl MetricsHandle {
    /// The current exposition in the Prometheus text format.
    pub fn render(&self) -> String {
        self.inner.render()
    }

    /// A router answering `GET /metrics` with the exposition and
    /// `Content-Type: text/plain; version=0.0.4`. Merge it into the service's router (or serve
    /// it on an admin port).
    pub fn router<S>(&self) -> axum::Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let handle = Arc::new(self.clone());
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = Arc::clone(&handle);
                async move {
                    (
                        [(http::header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                        handle.render(),
                    )
                        .into_response()
                }
            }),
        )
    }

    /// The underlying exporter handle.
    pub fn prometheus(&self) -> &PrometheusHandle {
        &self.inner
    }

    /// Describes every Archon instrument (unit and help) to the current recorder. [`install`]
    /// does this; call it yourself under a local recorder from [`build_recorder`].
    pub fn describe_all() {
        names::describe_all();
    }
}
