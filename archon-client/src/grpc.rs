//! The resilience stack around a tonic `Channel` (or any `tower::Service<http::Request<_>>`),
//! so a generated client works unchanged:
//!
//! ```no_run
//! use archon_client::grpc::{GrpcConfig, channel};
//! use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg: GrpcConfig = toml::from_str(r#"
//!     endpoint = "http://inventory:50051"
//!     [policy]
//!     timeout = "500ms"
//!     deadline = "2s"
//!     retry = {}
//!     circuit_breaker = {}
//! "#)?;
//! let mut client = HealthClient::new(channel(&cfg).await?);
//! client.check(HealthCheckRequest::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Request bodies (the encoded messages) up to `max_replay_bytes` are buffered so retries and
//! hedges can send them again; a bigger (or streaming) body is sent once. Retries apply to the
//! gRPC codes listed in the retry policy (default `UNAVAILABLE`), honour
//! `grpc-retry-pushback-ms`, and every attempt carries the time left before the deadline as
//! `grpc-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use archon_core::BoxError;
use bytes::{Bytes, BytesMut};
use http_body::Frame;
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_service::Service;

use crate::balance::BalanceConfig;
use crate::builder::ResiliencePolicy;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::{DefaultRetryClassifier, RetryAction, RetryClassifier, RetryRequest};
use crate::timeout::GrpcTimeoutLayer;

/// A gRPC channel with the resilience stack: give it to any generated client.
///
/// ```
/// use archon_client::grpc::{GrpcChannel, GrpcConfig, channel_lazy};
/// use archon_client::ResiliencePolicy;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cfg = GrpcConfig::new("http://127.0.0.1:50051", ResiliencePolicy::default());
/// // Connects on first use: a generated client takes it as its transport,
/// // e.g. `InventoryClient::new(channel)`.
/// let channel: GrpcChannel = channel_lazy(&cfg).unwrap();
/// # drop(channel);
/// # }
/// ```
pub type GrpcChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// Where a gRPC upstream is and how to call it.
///
/// ```
/// let cfg: archon_client::grpc::GrpcConfig = toml::from_str("endpoint = 'http://127.0.0.1:50051'").unwrap();
/// assert_eq!(cfg.max_replay_bytes, 64 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GrpcConfig {
    /// The server's URI (`http://host:port`).
    pub endpoint: String,
    /// Its resilience policy.
    pub policy: ResiliencePolicy,
    /// Time allowed to connect.
    #[serde(with = "archon_core::config::option_duration")]
    pub connect_timeout: Option<Duration>,
    /// Request bodies up to this size are kept so they can be sent again.
    pub max_replay_bytes: usize,
    /// Balance over several endpoints (a static list of `host:port` or a DNS name) instead
    /// of `endpoint`'s host; `endpoint` then gives only the scheme (and, with TLS, the
    /// server name checked against the certificate). Each endpoint is connected lazily and
    /// has its own ejection breaker; the per-attempt `timeout` applies per endpoint, so the
    /// endpoint's breaker counts it.
    ///
    /// ```
    /// let cfg: archon_client::grpc::GrpcConfig = toml::from_str(r#"
    ///     endpoint = "http://inventory"
    ///     [balance]
    ///     dns = { host = "inventory.internal", port = 50051, every = "10s" }
    /// "#).unwrap();
    /// assert!(cfg.balance.is_some());
    /// ```
    pub balance: Option<BalanceConfig>,
    /// TLS settings for an `https` endpoint (needs the `rustls` feature). An `https`
    /// endpoint uses the platform's trust roots plus `tls.ca_file`, and checks the
    /// certificate against `tls.domain` or else the endpoint's host (also when balancing
    /// over addresses).
    pub tls: GrpcTlsConfig,
}

/// TLS for an `https` gRPC endpoint (used with the `rustls` feature; without it an `https`
/// endpoint is a configuration error).
///
/// ```
/// let cfg: archon_client::grpc::GrpcConfig = toml::from_str(r#"
///     endpoint = "https://inventory.internal:50051"
///     tls = { ca_file = "/etc/archon/ca.pem", domain = "inventory.internal" }
/// "#).unwrap();
/// assert!(cfg.tls.ca_file.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GrpcTlsConfig {
    /// A PEM file of extra certificate authorities to trust (e.g. a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must be valid for; default: the endpoint's host.
    pub domain: Option<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            policy: ResiliencePolicy::default(),
            connect_timeout: None,
            max_replay_bytes: 64 * 1024,
            balance: None,
            tls: GrpcTlsConfig::default(),
        }
    }
}

impl GrpcConfig {
    /// A config for `endpoint` with `policy`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, grpc::GrpcConfig};
    /// let policy = ResiliencePolicy::default().timeout(Duration::from_millis(500));
    /// let cfg = GrpcConfig::new("http://inventory:50051", policy);
    /// assert_eq!(cfg.endpoint, "http://inventory:50051");
    /// assert_eq!(cfg.max_replay_bytes, 64 * 1024);
    /// assert!(cfg.connect_timeout.is_none() && cfg.balance.is_none());
    /// ```
    pub fn new(endpoint: impl Into<String>, policy: ResiliencePolicy) -> Self {
        Self {
            endpoint: endpoint.into(),
            policy,
            ..Self::default()
        }
    }

    /// Balances over the endpoints of `balance`.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, balance::BalanceConfig, grpc::GrpcConfig};
    /// let cfg = GrpcConfig::new("http://inventory", ResiliencePolicy::default())
    ///     .balance(BalanceConfig::endpoints(["10.0.0.1:50051", "10.0.0.2:50051"]));
    /// assert!(cfg.balance.is_some());
    /// ```
    #[must_use]
    pub fn balance(mut self, balance: BalanceConfig) -> Self {
        self.balance = Some(balance);
        self
    }
}

fn endpoint(cfg: &GrpcConfig) -> Result<tonic::transport::Endpoint> {
    let mut ep = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone()).map_err(|e| {
        Error::new(ErrorKind::Config)
            .with_context(format!("endpoint `{}`", cfg.endpoint))
            .with_source(e.into())
    })?;
    if let Some(t) = cfg.connect_timeout {
        ep = ep.connect_timeout(t);
    }
    if let Some(tls) = tls(cfg)? {
        ep = tls.apply(ep)?;
    }
    Ok(ep)
}

/// What an `https` endpoint needs, read once.
#[derive(Clone)]
struct Tls {
    #[cfg(feature = "rustls")]
    config: tonic::transport::ClientTlsConfig,
}

impl Tls {
    #[cfg(feature = "rustls")]
    fn apply(&self, ep: tonic::transport::Endpoint) -> Result<tonic::transport::Endpoint> {
        ep.tls_config(self.config.clone()).map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_context("tls")
                .with_source(e.into())
        })
    }

    #[cfg(not(feature = "rustls"))]
    fn apply(&self, ep: tonic::transport::Endpoint) -> Result<tonic::transport::Endpoint> {
        Ok(ep)
    }
}

/// The TLS settings of `cfg`, when its endpoint is `https`.
fn tls(cfg: &GrpcConfig) -> Result<Option<Tls>> {
    let uri: http::Uri = cfg.endpoint.parse().map_err(|e: http::uri::InvalidUri| {
        Error::new(ErrorKind::Config)
            .with_context(format!("endpoint `{}`", cfg.endpoint))
            .with_source(e.into())
    })?;
    if uri.scheme_str() != Some("https") {
        return Ok(None);
    }
    #[cfg(feature = "rustls")]
    {
        use tonic::transport::{Certificate, ClientTlsConfig};
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &cfg.tls.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::new(ErrorKind::Config)
                    .with_context(format!("tls.ca_file `{}`", path.display()))
                    .with_source(e.into())
            })?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(domain) = cfg
            .tls
            .domain
            .clone()
            .or_else(|| uri.host().map(str::to_owned))
        {
            config = config.domain_name(domain);
        }
        Ok(Some(Tls { config }))
    }
    #[cfg(not(feature = "rustls"))]
    {
        Err(Error::new(ErrorKind::Config).with_context(format!(
            "endpoint `{}` is https: build archon-client with the `rustls` feature",
            cfg.endpoint
        )))
    }
}

/// Connects to `cfg.endpoint` and wraps the channel in `cfg.policy`. With `cfg.balance`,
/// balances over its endpoints instead, each connected on first use (as [`channel_lazy`]).
///
/// ```
/// use archon_client::{ErrorKind, grpc::{GrpcConfig, channel}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A config without its endpoint fails before any connection is tried.
/// let cfg: GrpcConfig = toml::from_str("policy = { timeout = '1s' }").unwrap();
/// let err = channel(&cfg).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// # }
/// ```
///
/// # Errors
/// `Config` for a bad endpoint or policy; `Transport` when the connection fails.
pub async fn channel(cfg: &GrpcConfig) -> Result<GrpcChannel> {
    if cfg.balance.is_some() {
        return balanced_channel(cfg);
    }
    let ch = endpoint(cfg)?
        .connect()
        .await
        .map_err(|e| Error::from_boxed(e.into()).with_context(cfg.endpoint.clone()))?;
    wrap(ch, &cfg.endpoint, &cfg.policy, cfg.max_replay_bytes)
}

/// Like [`channel`], but connects on first use (so a server that is down now does not fail
/// start-up; calls fail, and the breaker sees them, until it is up).
///
/// ```
/// use archon_client::{ResiliencePolicy, balance::BalanceConfig, grpc::{GrpcConfig, channel_lazy}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // Nothing listens on these endpoints: nothing is connected until the first call.
/// let cfg = GrpcConfig::new("http://inventory", ResiliencePolicy::default().circuit_breaker(Default::default()))
///     .balance(BalanceConfig::endpoints(["127.0.0.1:50051", "127.0.0.1:50052"]));
/// let channel = channel_lazy(&cfg).unwrap();
/// # drop(channel);
/// # }
/// ```
///
/// # Errors
/// `Config` for a bad endpoint or policy.
pub fn channel_lazy(cfg: &GrpcConfig) -> Result<GrpcChannel> {
    if cfg.balance.is_some() {
        return balanced_channel(cfg);
    }
    let ch = endpoint(cfg)?.connect_lazy();
    wrap(ch, &cfg.endpoint, &cfg.policy, cfg.max_replay_bytes)
}

/// The balanced channel of `cfg` (which has `balance`).
fn balanced_channel(cfg: &GrpcConfig) -> Result<GrpcChannel> {
    let Some(balance) = &cfg.balance else {
        return channel_lazy(cfg);
    };
    let base = endpoint(cfg)?;
    let scheme = base.uri().scheme_str().unwrap_or("http").to_owned();
    let connect_timeout = cfg.connect_timeout;
    let timeout = cfg.policy.timeout;
    let name = cfg.endpoint.clone();
    // Every endpoint is checked against the configured domain or the base endpoint's host.
    let tls = tls(cfg)?;
    let lb = balance
        .build(&name, move |authority: &str| {
            let mut ep =
                tonic::transport::Endpoint::from_shared(format!("{scheme}://{authority}"))?;
            if let Some(t) = connect_timeout {
                ep = ep.connect_timeout(t);
            }
            if let Some(tls) = &tls {
                ep = tls.apply(ep)?;
            }
            let channel = ep.connect_lazy();
            // The per-attempt timeout, per endpoint: its breaker sees the endpoint's timeouts.
            Ok(ServiceBuilder::new()
                .option_layer(timeout.map(tower::timeout::TimeoutLayer::new))
                .map_err(Into::<BoxError>::into)
                .service(channel))
        })
        .map_err(|e| {
            Error::new(ErrorKind::Config)
                .with_context(format!("`{name}`: balance"))
                .with_source(e.into())
        })?;
    wrap_with(lb, &name, &cfg.policy, cfg.max_replay_bytes, false)
}

/// Wraps any gRPC transport (`tower::Service<http::Request<Body>>`) in `policy`, named `name`
/// in metrics and logs.
///
/// ```
/// use archon_client::{ResiliencePolicy, grpc::wrap};
/// let transport = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
///     Ok::<_, std::io::Error>(http::Response::new(tonic::body::Body::empty()))
/// });
/// let channel = wrap(transport, "test", &ResiliencePolicy::default(), 1024).unwrap();
/// # drop(channel);
/// ```
///
/// # Errors
/// `Config` when the policy is invalid.
pub fn wrap<S>(
    transport: S,
    name: &str,
    policy: &ResiliencePolicy,
    max_replay_bytes: usize,
) -> Result<GrpcChannel>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
{
    wrap_with(transport, name, policy, max_replay_bytes, true)
}

/// [`wrap`], with the per-attempt timeout in the stack or left to the transport (balanced
/// endpoints apply it themselves).
fn wrap_with<S>(
    transport: S,
    name: &str,
    policy: &ResiliencePolicy,
    max_replay_bytes: usize,
    timeout_in_stack: bool,
) -> Result<GrpcChannel>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
{
    let mut stacked = policy.clone();
    if !timeout_in_stack {
        stacked.timeout = None;
    }
    let layer = stacked
        .build(name)
        .map_err(|e| Error::new(ErrorKind::Config).with_source(e.into()))?;
    let bottom = ServiceBuilder::new()
        .layer(GrpcTimeoutLayer::new(policy.timeout))
        .map_request(|req: http::Request<ReplayBody>| req.map(Body::new))
        .map_err(Into::<BoxError>::into)
        .service(transport);
    let stack = layer.wrap(bottom);
    let retry = policy
        .retry
        .as_ref()
        .map(|r| DefaultRetryClassifier::with_grpc_codes(r.grpc_codes().unwrap_or_default()));
    Ok(BoxCloneSyncService::new(Buffered {
        inner: stack,
        limit: max_replay_bytes,
        retry,
    }))
}

/// A request body kept in memory so it can be sent again, or a body streamed once.
///
/// The body type a [`GrpcChannel`]'s stack sees below its retry layer: a request whose body
/// fits in `max_replay_bytes` is buffered and may be retried or hedged; a larger one is
/// streamed once and not retried.
///
/// ```
/// use archon_client::grpc::ReplayBody;
/// use archon_client::retry::RetryRequest;
///
/// // A transport below the retry layer receives `http::Request<ReplayBody>`.
/// fn can_be_sent_again(req: &http::Request<ReplayBody>) -> bool {
///     req.try_clone().is_some()
/// }
/// # let _ = can_be_sent_again;
/// ```
#[derive(Debug)]
pub struct ReplayBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    /// Too big to keep: what was read already, then the rest.
    Stream(Option<Bytes>, Body),
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Stream(prefix, rest) => {
                if let Some(d) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Pin::new(rest).poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Stream(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
        }
    }
}

impl RetryRequest for http::Request<ReplayBody> {
    fn is_idempotent(&self) -> bool {
        crate::retry::RetryRequest::is_idempotent(&self.as_ref_parts())
    }

    fn try_clone(&self) -> Option<Self> {
        let Kind::Full(data) = &self.body().kind else {
            return None;
        };
        let parts = self.as_ref_parts().try_clone()?;
        Some(parts.map(|()| ReplayBody {
            kind: Kind::Full(data.clone()),
        }))
    }
}

trait AsRefParts {
    fn as_ref_parts(&self) -> http::Request<()>;
}

impl<B> AsRefParts for http::Request<B> {
    fn as_ref_parts(&self) -> http::Request<()> {
        let mut req = http::Request::new(());
        *req.method_mut() = self.method().clone();
        *req.uri_mut() = self.uri().clone();
        *req.version_mut() = self.version();
        *req.headers_mut() = self.headers().clone();
        *req.extensions_mut() = self.extensions().clone();
        req
    }
}

/// Reads up to `limit` bytes of the body into memory.
async fn buffer(body: Body, limit: usize) -> std::result::Result<ReplayBody, BoxError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut data = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BoxError::from)?;
        if let Ok(chunk) = frame.into_data() {
            data.extend_from_slice(&chunk);
            if data.len() > limit {
                return Ok(ReplayBody {
                    kind: Kind::Stream(Some(data.freeze()), body),
                });
            }
        }
    }
    Ok(ReplayBody {
        kind: Kind::Full((!data.is_empty()).then(|| data.freeze())),
    })
}

/// A retryable failure of a call that was not retried because its body was larger than
/// `max_replay_bytes` (so it could not be sent again).
///
/// ```
/// fn was_sent_once(err: &archon_core::BoxError) -> bool {
///     err.is::<archon_client::grpc::SentOnce>()
/// }
/// # let _ = was_sent_once;
/// ```
#[derive(Debug)]
pub struct SentOnce {
    limit: usize,
    source: BoxError,
}

impl SentOnce {
    fn reason(limit: usize) -> String {
        format!(
            "not retried: the request body is larger than max_replay_bytes ({limit}) and cannot be replayed"
        )
    }
}

impl std::fmt::Display for SentOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", Self::reason(self.limit), self.source)
    }
}

impl std::error::Error for SentOnce {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[derive(Clone)]
struct Buffered<S> {
    inner: S,
    limit: usize,
    /// What the retry policy retries, to explain calls that could not be retried.
    retry: Option<DefaultRetryClassifier>,
}

impl<S> Service<http::Request<Body>> for Buffered<S>
where
    S: Service<http::Request<ReplayBody>, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        // Readiness is checked on the clone that makes the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let limit = self.limit;
        let retry = self.retry;
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = buffer(body, limit).await?;
            let replayable = matches!(body.kind, Kind::Full(_));
            let mut result = inner.oneshot(http::Request::from_parts(parts, body)).await;
            let Some(classifier) = retry.filter(|_| !replayable) else {
                return result;
            };
            // The call would have been retried had its body been kept: say why it was not.
            match classifier.classify(&result) {
                RetryAction::Retry | RetryAction::RetryAfter(_) => {}
                RetryAction::Success | RetryAction::Fail => return result,
            }
            match &mut result {
                Ok(resp) => {
                    let old = resp
                        .headers()
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let text = format!("{}: {old}", SentOnce::reason(limit));
                    if let Ok(v) = http::HeaderValue::from_str(&text) {
                        resp.headers_mut().insert("grpc-message", v);
                    }
                    result
                }
                Err(_) => result.map_err(|source| Box::new(SentOnce { limit, source }) as BoxError),
            }
        })
    }
}
