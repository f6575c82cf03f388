//! An HTTP client on reqwest with named upstreams, each with its resilience policy (and
//! per-route policies), JSON helpers and trace/correlation header injection.
//!
//! ```no_run
//! use archon_client::http::{HttpClient, HttpClientConfig};
//!
//! #[derive(serde::Deserialize)]
//! struct Item { id: u64 }
//!
//! # async fn run() -> archon_client::Result<()> {
//! let config: HttpClientConfig = toml::from_str(r#"
//!     [upstreams.inventory]
//!     base_url = "http://inventory:8080"
//!     [upstreams.inventory.policy]
//!     timeout = "1s"
//!     retry = {}
//!     circuit_breaker = {}
//!     [upstreams.inventory.routes."/reports"]
//!     timeout = "30s"
//! "#).unwrap();
//! let client = HttpClient::new(&config)?;
//! let item: Item = client.get("inventory", "/items/1").send_json().await?;
//! # let _ = item.id;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use archon_core::BoxError;
use archon_core::context::Metadata;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::balance::{BalanceConfig, EndpointSet, split_authority};
use crate::builder::ResiliencePolicy;
use crate::circuit_breaker::CircuitBreakerHandle;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::{BudgetExhausted, IDEMPOTENCY_KEY, RetryRequest};

type Stack = BoxCloneSyncService<reqwest::Request, reqwest::Response, BoxError>;

/// One upstream service: where it is and how to call it.
///
/// ```
/// let up: archon_client::http::UpstreamConfig = toml::from_str(r#"
///     base_url = "http://127.0.0.1:8080/api/"
///     [policy]
///     timeout = "500ms"
/// "#).unwrap();
/// assert_eq!(up.max_replay_bytes, 64 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// Base URL; request paths are joined to it.
    pub base_url: String,
    /// The policy of every route without its own.
    pub policy: ResiliencePolicy,
    /// Policies by path prefix (the longest matching prefix wins). Each route has its own
    /// breaker, bulkhead and budget.
    pub routes: BTreeMap<String, ResiliencePolicy>,
    /// Request bodies up to this size are kept so they can be sent again; larger ones are
    /// streamed and sent once.
    pub max_replay_bytes: usize,
    /// Balance over several endpoints (a static list or a DNS name) instead of the base URL's
    /// host: each request keeps the base URL's scheme and path, and is sent to the endpoint
    /// picked by power-of-two-choices. Endpoints whose breaker opens are ejected. The
    /// per-attempt `timeout` of every route then applies per endpoint (as reqwest's request
    /// timeout, which also bounds reading the body), so the endpoint's breaker counts it.
    ///
    /// - A static endpoint replaces the URL's `host:port`, so with `https` its certificate
    ///   must be valid for the endpoint as written (list names, not addresses).
    /// - An address resolved from `dns` gets a reqwest client of its own that connects to
    ///   it while the request keeps the base URL's host (`Host` header, TLS server name,
    ///   certificate check), so the certificate names the service, not its addresses. The
    ///   address's port is used (it replaces a port written in the base URL). With a caller's
    ///   client ([`HttpClient::with_reqwest`]) or a base URL whose host is an IP address, the
    ///   address replaces the URL's `host:port` as for static endpoints.
    ///
    /// ```
    /// let up: archon_client::http::UpstreamConfig = toml::from_str(r#"
    ///     base_url = "http://inventory/api"
    ///     [balance]
    ///     endpoints = ["10.0.0.1:8080", "10.0.0.2:8080"]
    ///     ejection = { window_size = 20, minimum_calls = 10, wait_in_open = "10s" }
    /// "#).unwrap();
    /// assert_eq!(up.balance.unwrap().endpoints.len(), 2);
    /// ```
    pub balance: Option<BalanceConfig>,
    /// TLS settings of this upstream's own reqwest client (`tls.ca_file`, with the `rustls`
    /// feature).
    pub tls: HttpTlsConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            policy: ResiliencePolicy::default(),
            routes: BTreeMap::new(),
            max_replay_bytes: 64 * 1024,
            balance: None,
            tls: HttpTlsConfig::default(),
        }
    }
}

/// TLS for an `https` upstream. With `ca_file` the upstream gets its own reqwest client that
/// trusts the file's certificates besides the platform's roots (needs the `rustls` feature;
/// without it, or with a caller's client from [`HttpClient::with_reqwest`], a `ca_file` is a
/// `Config` error, as is a file that cannot be read or holds no PEM certificate).
///
/// ```
/// let up: archon_client::http::UpstreamConfig = toml::from_str(r#"
///     base_url = "https://inventory.internal:8443"
///     tls = { ca_file = "/etc/archon/ca.pem" }
/// "#).unwrap();
/// assert!(up.tls.ca_file.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpTlsConfig {
    /// A PEM file of certificate authorities to trust (e.g. a private CA), besides the
    /// platform's roots.
    pub ca_file: Option<PathBuf>,
}

impl HttpTlsConfig {
    /// Trusts the certificates of the PEM file at `path`.
    ///
    /// ```
    /// let tls = archon_client::http::HttpTlsConfig::ca_file("/etc/archon/ca.pem");
    /// assert_eq!(tls.ca_file.unwrap().to_str(), Some("/etc/archon/ca.pem"));
    /// ```
    pub fn ca_file(path: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: Some(path.into()),
        }
    }
}

impl UpstreamConfig {
    /// An upstream at `base_url` with `policy`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, http::UpstreamConfig};
    /// let policy = ResiliencePolicy::default().timeout(Duration::from_secs(1));
    /// let up = UpstreamConfig::new("http://inventory:8080", policy);
    /// assert_eq!(up.base_url, "http://inventory:8080");
    /// assert_eq!(up.policy.timeout, Some(Duration::from_secs(1)));
    /// assert!(up.routes.is_empty());
    /// ```
    pub fn new(base_url: impl Into<String>, policy: ResiliencePolicy) -> Self {
        Self {
            base_url: base_url.into(),
            policy,
            ..Self::default()
        }
    }

    /// Adds a policy for paths starting with `prefix`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, http::UpstreamConfig};
    /// let fast = ResiliencePolicy::default().timeout(Duration::from_secs(1));
    /// let up = UpstreamConfig::new("http://inventory", fast)
    ///     .route("/reports", ResiliencePolicy::default().timeout(Duration::from_secs(30)));
    /// assert_eq!(up.routes["/reports"].timeout, Some(Duration::from_secs(30)));
    /// ```
    #[must_use]
    pub fn route(mut self, prefix: impl Into<String>, policy: ResiliencePolicy) -> Self {
        self.routes.insert(prefix.into(), policy);
        self
    }

    /// Balances over the endpoints of `balance`.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, balance::BalanceConfig, http::UpstreamConfig};
    /// let up = UpstreamConfig::new("http://inventory", ResiliencePolicy::default())
    ///     .balance(BalanceConfig::endpoints(["10.0.0.1:8080", "10.0.0.2:8080"]));
    /// assert!(up.balance.is_some());
    /// ```
    #[must_use]
    pub fn balance(mut self, balance: BalanceConfig) -> Self {
        self.balance = Some(balance);
        self
    }

    /// Sets the TLS settings.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, http::{HttpTlsConfig, UpstreamConfig}};
    /// let up = UpstreamConfig::new("https://inventory.internal", ResiliencePolicy::default())
    ///     .tls(HttpTlsConfig::ca_file("/etc/archon/ca.pem"));
    /// assert!(up.tls.ca_file.is_some());
    /// ```
    #[must_use]
    pub fn tls(mut self, tls: HttpTlsConfig) -> Self {
        self.tls = tls;
        self
    }
}

/// The upstreams of an [`HttpClient`], by name.
///
/// ```
/// use archon_client::{ResiliencePolicy, http::{HttpClientConfig, UpstreamConfig}};
/// let cfg = HttpClientConfig::default()
///     .upstream("users", UpstreamConfig::new("http://users", ResiliencePolicy::default()));
/// assert!(cfg.upstreams.contains_key("users"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpClientConfig {
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

impl HttpClientConfig {
    /// Adds an upstream.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, http::{HttpClientConfig, UpstreamConfig}};
    /// let cfg = HttpClientConfig::default()
    ///     .upstream("users", UpstreamConfig::new("http://users:8080", ResiliencePolicy::default()))
    ///     .upstream("orders", UpstreamConfig::new("http://orders:8080", ResiliencePolicy::default()));
    /// assert_eq!(cfg.upstreams.keys().collect::<Vec<_>>(), ["orders", "users"]);
    /// assert_eq!(cfg.upstreams["users"].base_url, "http://users:8080");
    /// ```
    #[must_use]
    pub fn upstream(mut self, name: impl Into<String>, upstream: UpstreamConfig) -> Self {
        self.upstreams.insert(name.into(), upstream);
        self
    }
}

#[derive(Clone)]
struct Route {
    prefix: String,
    stack: Stack,
    breaker: Option<CircuitBreakerHandle>,
    /// Set on the request (reqwest's timeout) when the upstream is balanced.
    attempt_timeout: Option<std::time::Duration>,
}

struct Upstream {
    base: reqwest::Url,
    routes: Vec<Route>,
    max_replay_bytes: usize,
    endpoints: Option<Arc<EndpointSet>>,
}

impl Upstream {
    fn route(&self, path: &str) -> Option<&Route> {
        // Sorted longest prefix first; the last route has the empty prefix.
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }
}

/// An HTTP client whose every call to a named upstream passes that upstream's resilience
/// stack. Cheap to clone.
///
/// ```
/// use archon_client::{ResiliencePolicy, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
/// let client = HttpClient::new(&HttpClientConfig::default()
///     .upstream("users", UpstreamConfig::new("http://127.0.0.1:1", ResiliencePolicy::default())))
///     .unwrap();
/// assert!(client.circuit_breaker("users", "/").is_none());
/// ```
#[derive(Clone)]
pub struct HttpClient {
    upstreams: Arc<HashMap<String, Upstream>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl HttpClient {
    /// A client with reqwest clients of its own: one shared by the upstreams without
    /// `tls.ca_file`, one for each upstream with it, and on an upstream balanced over DNS one
    /// per resolved address (requests keep the base URL's host, see
    /// [`UpstreamConfig::balance`]).
    ///
    /// ```
    /// use archon_client::{ErrorKind, ResiliencePolicy, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
    /// let config = HttpClientConfig::default()
    ///     .upstream("users", UpstreamConfig::new("http://users:8080", ResiliencePolicy::default()));
    /// let client = HttpClient::new(&config).unwrap(); // nothing is connected yet
    /// # drop(client);
    /// let bad = HttpClientConfig::default() // a base URL without a scheme
    ///     .upstream("users", UpstreamConfig::new("users.internal/api", ResiliencePolicy::default()));
    /// assert_eq!(HttpClient::new(&bad).unwrap_err().kind(), ErrorKind::Config);
    /// ```
    ///
    /// # Errors
    /// `Config` when a base URL, a policy or a `tls.ca_file` is invalid, or a reqwest client
    /// cannot be built.
    pub fn new(config: &HttpClientConfig) -> Result<Self> {
        Self::build(None, config)
    }

    /// A client sending through `client` (for your TLS, pool and proxy settings), for every
    /// upstream and endpoint. A balanced upstream then sends each request to the endpoint's
    /// address written into its URL, also over DNS.
    ///
    /// ```
    /// use std::time::Duration;
    /// use archon_client::{ResiliencePolicy, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
    /// let reqwest_client = reqwest::Client::builder()
    ///     .pool_idle_timeout(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// let config = HttpClientConfig::default()
    ///     .upstream("users", UpstreamConfig::new("http://users:8080", ResiliencePolicy::default()));
    /// let client = HttpClient::with_reqwest(&reqwest_client, &config).unwrap();
    /// # drop(client);
    /// ```
    ///
    /// # Errors
    /// `Config` when a base URL or a policy is invalid, or an upstream sets `tls.ca_file`
    /// (trust roots then belong in `client`).
    pub fn with_reqwest(client: &reqwest::Client, config: &HttpClientConfig) -> Result<Self> {
        Self::build(Some(client), config)
    }

    fn build(caller: Option<&reqwest::Client>, config: &HttpClientConfig) -> Result<Self> {
        let mut shared: Option<reqwest::Client> = None;
        let mut upstreams = HashMap::new();
        for (name, up) in &config.upstreams {
            let base = reqwest::Url::parse(&up.base_url).map_err(|e| {
                Error::new(ErrorKind::Config)
                    .with_context(format!("upstream `{name}`: base_url"))
                    .with_source(e.into())
            })?;
            let roots = Roots::read(name, &up.tls)?;
            let (client, own_roots) = match (caller, roots) {
                (Some(_), Some(_)) => {
                    return Err(Error::new(ErrorKind::Config).with_context(format!(
                        "upstream `{name}`: tls.ca_file cannot be combined with a caller's \
                         reqwest client (add the certificate to that client instead)"
                    )));
                }
                (Some(client), None) => (client.clone(), None),
                (None, Some(roots)) => (roots.client(name)?, Some(roots)),
                (None, None) => {
                    let client = match &shared {
                        Some(client) => client.clone(),
                        None => shared.insert(Roots::default().client(name)?).clone(),
                    };
                    (client, Some(Roots::default()))
                }
            };
            // Over DNS with clients of our own, each address gets a client resolving the base
            // host to it, so requests keep the base host (Host header, TLS server name).
            let resolve = match (&own_roots, &up.balance, base.domain()) {
                (Some(roots), Some(balance), Some(domain)) if balance.dns.is_some() => {
                    Some((roots.clone(), domain.to_owned()))
                }
                _ => None,
            };
            let balancer = up
                .balance
                .as_ref()
                .map(|cfg| {
                    let client = client.clone();
                    let upstream = name.clone();
                    cfg.build(name, move |endpoint: &str| match &resolve {
                        Some((roots, domain)) => {
                            let addr: SocketAddr = endpoint.parse()?;
                            let client = roots
                                .builder()
                                .resolve(domain, addr)
                                .build()
                                .map_err(|e| client_error(&upstream, e))?;
                            Ok(ToEndpoint::resolved(client, addr.port()))
                        }
                        None => Ok(ToEndpoint::rewrite(client.clone(), endpoint)),
                    })
                })
                .transpose()
                .map_err(|e| {
                    Error::new(ErrorKind::Config)
                        .with_context(format!("upstream `{name}`: balance"))
                        .with_source(e.into())
                })?;
            let build = |label: String, policy: &ResiliencePolicy| -> Result<Route> {
                let config = |e: crate::builder::InvalidPolicy| {
                    Error::new(ErrorKind::Config).with_source(e.into())
                };
                Ok(match &balancer {
                    None => {
                        let layer = policy.build(&label).map_err(config)?;
                        Route {
                            prefix: String::new(),
                            stack: layer.wrap(client.clone()),
                            breaker: layer.circuit_breaker().cloned(),
                            attempt_timeout: None,
                        }
                    }
                    Some(lb) => {
                        // The per-attempt timeout moves below the balancer (onto the request),
                        // so each endpoint's breaker sees its own timeouts.
                        let mut above = policy.clone();
                        above.timeout = None;
                        let layer = above.build(&label).map_err(config)?;
                        Route {
                            prefix: String::new(),
                            stack: layer.wrap(lb.clone()),
                            breaker: layer.circuit_breaker().cloned(),
                            attempt_timeout: policy.timeout,
                        }
                    }
                })
            };
            let mut routes = Vec::new();
            for (prefix, policy) in &up.routes {
                let mut route = build(format!("{name}{prefix}"), policy)?;
                route.prefix.clone_from(prefix);
                routes.push(route);
            }
            routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
            routes.push(build(name.clone(), &up.policy)?);
            upstreams.insert(
                name.clone(),
                Upstream {
                    base,
                    routes,
                    max_replay_bytes: up.max_replay_bytes,
                    endpoints: balancer.as_ref().map(crate::balance::SharedBalancer::set),
                },
            );
        }
        Ok(Self {
            upstreams: Arc::new(upstreams),
        })
    }

    /// The circuit breaker guarding `path` on `upstream`, if its policy has one.
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
    /// let guarded = ResiliencePolicy::default().circuit_breaker(Default::default());
    /// let client = HttpClient::new(&HttpClientConfig::default().upstream(
    ///     "inventory",
    ///     UpstreamConfig::new("http://inventory", guarded.clone()).route("/reports", guarded),
    /// )).unwrap();
    /// assert_eq!(client.circuit_breaker("inventory", "/items/1").unwrap().name(), "inventory");
    /// // A route has a breaker of its own.
    /// assert_eq!(client.circuit_breaker("inventory", "/reports/daily").unwrap().name(), "inventory/reports");
    /// assert!(client.circuit_breaker("users", "/").is_none());
    /// ```
    pub fn circuit_breaker(&self, upstream: &str, path: &str) -> Option<CircuitBreakerHandle> {
        self.upstreams.get(upstream)?.route(path)?.breaker.clone()
    }

    /// The endpoints of a balanced `upstream` (`host:port`, sorted) with their ejection
    /// breakers; empty when the upstream is not balanced (or DNS has not answered yet).
    ///
    /// ```
    /// use archon_client::{ResiliencePolicy, balance::BalanceConfig, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
    /// let client = HttpClient::new(&HttpClientConfig::default().upstream(
    ///     "users",
    ///     UpstreamConfig::new("http://users", ResiliencePolicy::default())
    ///         .balance(BalanceConfig::endpoints(["127.0.0.1:1", "127.0.0.1:2"])),
    /// )).unwrap();
    /// let endpoints = client.endpoint_breakers("users");
    /// assert_eq!(endpoints[0].0, "127.0.0.1:1");
    /// ```
    pub fn endpoint_breakers(&self, upstream: &str) -> Vec<(String, CircuitBreakerHandle)> {
        self.upstreams
            .get(upstream)
            .and_then(|u| u.endpoints.as_ref())
            .map(|set| set.snapshot())
            .unwrap_or_default()
    }

    /// A request to `path` (joined to the upstream's base URL).
    ///
    /// ```no_run
    /// use http::Method;
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// let resp = client
    ///     .request(Method::PATCH, "users", "/users/7")
    ///     .idempotency_key("rename-7")
    ///     .json(&serde_json::json!({"name": "Ada"}))
    ///     .send()
    ///     .await?;
    /// # let _ = resp;
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: Method, upstream: &str, path: &str) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            method,
            upstream: upstream.to_owned(),
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: None,
            error: None,
        }
    }

    /// A GET request.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct User { name: String }
    ///
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// let user: User = client.get("users", "/users/7?fields=name").send_json().await?;
    /// println!("{}", user.name);
    /// # Ok(()) }
    /// ```
    pub fn get(&self, upstream: &str, path: &str) -> RequestBuilder<'_> {
        self.request(Method::GET, upstream, path)
    }

    /// A POST request.
    ///
    /// ```no_run
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// // Not retried unless it carries an Idempotency-Key.
    /// let resp = client
    ///     .post("orders", "/orders")
    ///     .json(&serde_json::json!({"sku": "A1", "qty": 2}))
    ///     .send()
    ///     .await?;
    /// println!("created: {}", resp.status());
    /// # Ok(()) }
    /// ```
    pub fn post(&self, upstream: &str, path: &str) -> RequestBuilder<'_> {
        self.request(Method::POST, upstream, path)
    }

    /// A PUT request.
    ///
    /// ```no_run
    /// # async fn run(client: archon_client::http::HttpClient, png: Vec<u8>) -> archon_client::Result<()> {
    /// client
    ///     .put("users", "/users/7/avatar")
    ///     .header("content-type", "image/png")
    ///     .body(png)
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn put(&self, upstream: &str, path: &str) -> RequestBuilder<'_> {
        self.request(Method::PUT, upstream, path)
    }

    /// A DELETE request.
    ///
    /// ```no_run
    /// use archon_client::ErrorKind;
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// match client.delete("users", "/users/7").send().await {
    ///     Ok(_) => {}
    ///     Err(e) if e.kind() == ErrorKind::Status(404) => {} // already gone
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, upstream: &str, path: &str) -> RequestBuilder<'_> {
        self.request(Method::DELETE, upstream, path)
    }
}

/// A request being put together; send it with [`send`](Self::send) or
/// [`send_json`](Self::send_json).
///
/// ```no_run
/// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
/// let resp = client
///     .post("orders", "/orders")
///     .idempotency_key("order-42")
///     .json(&serde_json::json!({"sku": "A1", "qty": 2}))
///     .send()
///     .await?;
/// # let _ = resp;
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder<'a> {
    client: &'a HttpClient,
    method: Method,
    upstream: String,
    path: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    error: Option<Error>,
}

impl fmt::Debug for RequestBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("upstream", &self.upstream)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RequestBuilder<'_> {
    /// Adds a header.
    ///
    /// ```
    /// use archon_client::{ErrorKind, ResiliencePolicy, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let client = HttpClient::new(&HttpClientConfig::default()
    ///     .upstream("users", UpstreamConfig::new("http://users", ResiliencePolicy::default())))
    ///     .unwrap();
    /// let req = client.get("users", "/users/7").header("x-tenant", "acme");
    /// # drop(req);
    /// // An invalid header fails the request when it is sent, before anything is connected.
    /// let err = client.get("users", "/users/7").header("x tenant", "acme").send().await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    /// # }
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                self.headers.append(n, v);
            }
            _ => {
                self.error = Some(
                    Error::new(ErrorKind::InvalidRequest)
                        .with_context(format!("invalid header `{name}`")),
                );
            }
        }
        self
    }

    /// Marks the request as safe to retry whatever its method.
    ///
    /// ```no_run
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// // The same key on every attempt: the server applies the payment once, so it may be retried.
    /// client
    ///     .post("payments", "/payments")
    ///     .idempotency_key("payment-2024-0042")
    ///     .json(&serde_json::json!({"amount": 1200, "currency": "EUR"}))
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header(IDEMPOTENCY_KEY, key)
    }

    /// Sets the body.
    ///
    /// ```no_run
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// client
    ///     .put("files", "/files/report.csv")
    ///     .header("content-type", "text/csv")
    ///     .body("id,qty\n1,2\n")
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body (and `content-type: application/json`).
    ///
    /// ```no_run
    /// #[derive(serde::Serialize)]
    /// struct NewOrder<'a> { sku: &'a str, qty: u32 }
    ///
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// client
    ///     .post("orders", "/orders")
    ///     .json(&NewOrder { sku: "A1", qty: 2 })
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                self.body = Some(bytes.into());
            }
            Err(e) => {
                self.error = Some(Error::new(ErrorKind::InvalidRequest).with_source(e.into()));
            }
        }
        self
    }

    /// Sends the request through the route's stack. Any HTTP status is returned as a
    /// response; see [`send`](Self::send) for one that fails on non-success statuses.
    ///
    /// ```
    /// use archon_client::{ErrorKind, ResiliencePolicy, http::{HttpClient, HttpClientConfig, UpstreamConfig}};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let policy = ResiliencePolicy::default().circuit_breaker(Default::default());
    /// let client = HttpClient::new(&HttpClientConfig::default()
    ///     .upstream("users", UpstreamConfig::new("http://users", policy)))
    ///     .unwrap();
    /// // An open circuit rejects the call without sending it.
    /// client.circuit_breaker("users", "/").unwrap().force_open();
    /// let err = client.get("users", "/users/7").send_raw().await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    /// assert!(err.is_rejected());
    /// # }
    /// ```
    ///
    /// # Errors
    /// Timeouts, rejections (open circuit, full bulkhead, rate limit), transport failures.
    pub async fn send_raw(self) -> Result<reqwest::Response> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(upstream) = self.client.upstreams.get(&self.upstream) else {
            return Err(Error::new(ErrorKind::UnknownUpstream).with_context(self.upstream));
        };
        let Some(route) = upstream.route(&self.path) else {
            return Err(Error::new(ErrorKind::UnknownUpstream).with_context(self.upstream));
        };
        let url = join(&upstream.base, &self.path);
        let mut req = reqwest::Request::new(self.method, url);
        *req.headers_mut() = self.headers;
        if route.attempt_timeout.is_some() {
            *req.timeout_mut() = route.attempt_timeout;
        }
        if let Some(md) = Metadata::current() {
            let mut md = md;
            md.traceparent = md.traceparent.map(|tp| tp.child());
            md.inject(req.headers_mut());
        }
        if let Some(body) = self.body {
            *req.body_mut() = Some(if body.len() <= upstream.max_replay_bytes {
                reqwest::Body::from(body)
            } else {
                // Too big to keep for a replay: stream it, and it is sent once.
                reqwest::Body::wrap_stream(futures::stream::once(async move {
                    Ok::<_, std::io::Error>(body)
                }))
            });
        }
        let why_once = if !req.is_idempotent() {
            Some(format!(
                "not retried: {} is not idempotent (send an Idempotency-Key to allow retries)",
                req.method()
            ))
        } else if req.try_clone().is_none() {
            Some(format!(
                "not retried: the body is larger than max_replay_bytes ({}) and cannot be replayed",
                upstream.max_replay_bytes
            ))
        } else {
            None
        };
        let context = format!("{} {}{}", req.method(), self.upstream, self.path);
        match route.stack.clone().oneshot(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let err = Error::from_boxed(e);
                let context = match why_once {
                    Some(why) if err.is_retryable() => format!("{context}; {why}"),
                    _ => context,
                };
                Err(err.with_context(context))
            }
        }
    }

    /// Sends the request; a non-success status is an error of kind `Status(code)`.
    ///
    /// ```no_run
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// match client.get("users", "/users/7").send().await {
    ///     Ok(resp) => println!("found: {}", resp.status()),
    ///     Err(e) if e.status() == Some(404) => println!("no such user"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`send_raw`](Self::send_raw), plus `Status` for 4xx and 5xx answers.
    pub async fn send(self) -> Result<reqwest::Response> {
        let context = format!("{} {}{}", self.method, self.upstream, self.path);
        let resp = self.send_raw().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let mut err = Error::new(ErrorKind::Status(status.as_u16())).with_context(context);
        if resp.extensions().get::<BudgetExhausted>().is_some() {
            err = err.with_source(Box::new(BudgetExhausted::new(None)));
        }
        Err(err)
    }

    /// Sends the request and decodes a JSON answer.
    ///
    /// ```no_run
    /// #[derive(serde::Deserialize)]
    /// struct Stock { sku: String, available: u32 }
    ///
    /// # async fn run(client: archon_client::http::HttpClient) -> archon_client::Result<()> {
    /// let stock: Vec<Stock> = client.get("inventory", "/stock?sku=A1,B2").send_json().await?;
    /// for s in &stock {
    ///     println!("{}: {}", s.sku, s.available);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send), plus `Decode` when the body is not the expected JSON.
    pub async fn send_json<T: DeserializeOwned>(self) -> Result<T> {
        let resp = self.send().await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::from_boxed(e.into()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(ErrorKind::Decode).with_source(e.into()))
    }
}

/// The trust roots of an upstream's own reqwest client: the platform's, plus those of
/// `tls.ca_file` (with the `rustls` feature).
#[derive(Clone, Default)]
struct Roots {
    #[cfg(feature = "rustls")]
    certs: Vec<reqwest::Certificate>,
}

impl Roots {
    /// The roots of `tls`, when it names a CA file (`None`: the upstream needs no client of
    /// its own).
    fn read(upstream: &str, tls: &HttpTlsConfig) -> Result<Option<Self>> {
        let Some(path) = &tls.ca_file else {
            return Ok(None);
        };
        let config = |why: String| {
            Error::new(ErrorKind::Config).with_context(format!(
                "upstream `{upstream}`: tls.ca_file `{}`: {why}",
                path.display()
            ))
        };
        #[cfg(feature = "rustls")]
        {
            let pem = std::fs::read(path)
                .map_err(|e| config("cannot be read".to_owned()).with_source(e.into()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config("is not PEM".to_owned()).with_source(e.into()))?;
            if certs.is_empty() {
                return Err(config("holds no PEM certificate".to_owned()));
            }
            Ok(Some(Self { certs }))
        }
        #[cfg(not(feature = "rustls"))]
        {
            Err(config(
                "build archon-client with the `rustls` feature to use a CA file".to_owned(),
            ))
        }
    }

    /// A reqwest client builder trusting these roots.
    fn builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder();
        #[cfg(feature = "rustls")]
        let builder = builder.tls_certs_merge(self.certs.iter().cloned());
        builder
    }

    fn client(&self, upstream: &str) -> Result<reqwest::Client> {
        self.builder()
            .build()
            .map_err(|e| client_error(upstream, e))
    }
}

fn client_error(upstream: &str, e: reqwest::Error) -> Error {
    Error::new(ErrorKind::Config)
        .with_context(format!(
            "upstream `{upstream}`: cannot build its reqwest client"
        ))
        .with_source(e.into())
}

/// A service sending each request to one endpoint.
#[derive(Clone)]
struct ToEndpoint {
    client: reqwest::Client,
    /// `Some`: the URL's host becomes the endpoint's (static endpoints, or a caller's client).
    /// `None`: the URL keeps its host and `client` resolves it to the endpoint's address.
    host: Option<String>,
    port: Option<u16>,
}

impl ToEndpoint {
    /// Rewrites the URL to `endpoint` (`host:port`).
    fn rewrite(client: reqwest::Client, endpoint: &str) -> Self {
        // Checked by `BalanceConfig::validate` (static) or a socket address (DNS).
        let (host, port) = split_authority(endpoint)
            .map_or((endpoint.to_owned(), None), |(h, p)| {
                (h.to_owned(), Some(p))
            });
        Self {
            client,
            host: Some(host),
            port,
        }
    }

    /// Keeps the URL's host; `client` resolves it to the endpoint's address, whose `port`
    /// replaces a port written in the URL (which would win over the resolved one).
    fn resolved(client: reqwest::Client, port: u16) -> Self {
        Self {
            client,
            host: None,
            port: Some(port),
        }
    }
}

impl tower_service::Service<reqwest::Request> for ToEndpoint {
    type Response = reqwest::Response;
    type Error = reqwest::Error;
    type Future = <reqwest::Client as tower_service::Service<reqwest::Request>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), reqwest::Error>> {
        tower_service::Service::<reqwest::Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, mut req: reqwest::Request) -> Self::Future {
        let url = req.url_mut();
        // Cannot fail for an http(s) URL and a checked host; a failure leaves the URL as is.
        match &self.host {
            Some(host) => {
                let _ = url.set_host(Some(host));
                let _ = url.set_port(self.port);
            }
            None if url.port().is_some() => {
                let _ = url.set_port(self.port);
            }
            None => {}
        }
        tower_service::Service::call(&mut self.client, req)
    }
}

fn join(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    let (path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    let joined = format!(
        "{}/{}",
        url.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url.set_query(query);
    url
}
