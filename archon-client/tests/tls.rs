#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "rustls")]
//! https upstreams with the `rustls` feature: a self-signed certificate (rcgen) on local
//! axum and tonic servers.

use std::sync::Arc;
use std::time::Duration;

use archon_client::balance::{BalanceConfig, DnsConfig};
use archon_client::http::{HttpClient, HttpClientConfig, HttpTlsConfig, UpstreamConfig};
use archon_client::{ErrorKind, ResiliencePolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Cert {
    pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn self_signed() -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    Cert {
        pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
        key_der: ck.signing_key.serialize_der(),
    }
}

/// A TCP listener that does the TLS handshake before axum sees the connection.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects the certificate aborts its handshake: wait for the next.
            if let Ok(tls) = self.tls.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serves `/hello` ("secure") and `/host` (the request's Host header) over TLS with `cert`
/// on each listener.
fn serve_tls(cert: &Cert, listeners: Vec<TcpListener>) {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
        )
        .unwrap();
    let tls = TlsAcceptor::from(Arc::new(config));
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "secure" }))
        .route(
            "/host",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get(axum::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }),
        );
    for tcp in listeners {
        let listener = TlsListener {
            tcp,
            tls: tls.clone(),
        };
        let app = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
}

async fn https_server(cert: &Cert) -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    serve_tls(cert, vec![tcp]);
    port
}

/// A server on every address `localhost` resolves to (127.0.0.1 here; also ::1 on hosts
/// that resolve it so), all on one port.
async fn https_localhost_server(cert: &Cert) -> u16 {
    let mut addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .collect();
    addrs.sort();
    addrs.dedup();
    let first = TcpListener::bind(addrs[0]).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let mut listeners = vec![first];
    for mut addr in addrs.into_iter().skip(1) {
        addr.set_port(port);
        listeners.push(TcpListener::bind(addr).await.unwrap());
    }
    serve_tls(cert, listeners);
    port
}

/// The certificate written to a PEM file of its own (removed by the test).
fn ca_file(cert: &Cert) -> std::path::PathBuf {
    pem_file(&cert.pem)
}

fn pem_file(contents: &str) -> std::path::PathBuf {
    use std::hash::{BuildHasher, RandomState};
    let suffix = RandomState::new().hash_one(std::time::SystemTime::now());
    let path = std::env::temp_dir().join(format!(
        "archon-client-tls-{}-{suffix}.pem",
        std::process::id()
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

fn upstream(base: String) -> HttpClientConfig {
    HttpClientConfig::default().upstream(
        "secure",
        UpstreamConfig::new(
            base,
            ResiliencePolicy::default().timeout(Duration::from_secs(5)),
        ),
    )
}

/// The body of a successful GET of `path` on `upstream`.
async fn text(client: &HttpClient, upstream: &str, path: &str) -> String {
    client
        .get(upstream, path)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn https_upstream_with_a_trusted_self_signed_certificate() {
    let cert = self_signed();
    let port = https_server(&cert).await;
    let reqwest = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let client =
        HttpClient::with_reqwest(&reqwest, &upstream(format!("https://localhost:{port}"))).unwrap();
    let body = text(&client, "secure", "/hello").await;
    assert_eq!(body, "secure");
}

#[tokio::test]
async fn untrusted_certificate_is_a_transport_error() {
    let cert = self_signed();
    let port = https_server(&cert).await;
    // The platform's roots do not include the self-signed certificate.
    let client = HttpClient::new(&upstream(format!("https://localhost:{port}"))).unwrap();
    let err = client.get("secure", "/hello").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
}

#[tokio::test]
async fn https_upstream_trusts_its_configured_ca_file() {
    let cert = self_signed();
    let port = https_server(&cert).await;
    let ca = ca_file(&cert);
    let cfg: HttpClientConfig = toml::from_str(&format!(
        r#"
        [upstreams.trusted]
        base_url = "https://localhost:{port}"
        tls = {{ ca_file = '{}' }}
        [upstreams.plain]
        base_url = "https://localhost:{port}"
        "#,
        ca.display()
    ))
    .unwrap();
    let client = HttpClient::new(&cfg).unwrap();
    let body = text(&client, "trusted", "/hello").await;
    assert_eq!(body, "secure");
    // The CA is the upstream's own: another upstream of the same client does not trust it.
    let err = client.get("plain", "/hello").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    std::fs::remove_file(ca).unwrap();
}

#[test]
fn unusable_ca_file_is_a_config_error() {
    let cert = self_signed();
    let missing = std::env::temp_dir().join("archon-client-tls-does-not-exist.pem");
    let no_cert = pem_file("not a certificate\n");
    let key_only = pem_file(&cert.key_pem);
    let broken = pem_file("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    for path in [&missing, &no_cert, &key_only, &broken] {
        let up = UpstreamConfig::new("https://localhost:1", ResiliencePolicy::default())
            .tls(HttpTlsConfig::ca_file(path));
        let err = HttpClient::new(&HttpClientConfig::default().upstream("secure", up)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{}: {err}", path.display());
        assert!(err.to_string().contains("tls.ca_file"), "{err}");
    }
    // A caller's client brings its own roots: a ca_file beside it would be ignored.
    let good = ca_file(&cert);
    let up = UpstreamConfig::new("https://localhost:1", ResiliencePolicy::default())
        .tls(HttpTlsConfig::ca_file(&good));
    let cfg = HttpClientConfig::default().upstream("secure", up);
    assert!(HttpClient::new(&cfg).is_ok());
    let err = HttpClient::with_reqwest(&reqwest::Client::new(), &cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    for path in [no_cert, key_only, broken, good] {
        std::fs::remove_file(path).unwrap();
    }
}

#[tokio::test]
async fn https_balanced_over_dns_keeps_the_base_host_for_the_certificate() {
    // The certificate names `localhost` only, not 127.0.0.1.
    let cert = self_signed();
    let port = https_localhost_server(&cert).await;
    let ca = ca_file(&cert);
    let up = UpstreamConfig::new("https://localhost", ResiliencePolicy::default())
        .tls(HttpTlsConfig::ca_file(&ca))
        .balance(BalanceConfig::dns(DnsConfig::new("localhost", port)));
    let client = HttpClient::new(&HttpClientConfig::default().upstream("secure", up)).unwrap();
    for _ in 0..4 {
        let host = text(&client, "secure", "/host").await;
        // Sent to a resolved address, with the base URL's host.
        assert_eq!(host, "localhost");
    }
    let endpoints = client.endpoint_breakers("secure");
    assert!(
        endpoints
            .iter()
            .any(|(ep, _)| *ep == format!("127.0.0.1:{port}")),
        "{endpoints:?}"
    );
    std::fs::remove_file(ca).unwrap();
}

#[cfg(feature = "grpc")]
mod grpc {
    use super::*;
    use archon_client::grpc::{GrpcConfig, channel};
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    async fn grpcs_server(cert: &Cert) -> u16 {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let identity = Identity::from_pem(&cert.pem, &cert.key_pem);
        tokio::spawn(async move {
            Server::builder()
                .tls_config(ServerTlsConfig::new().identity(identity))
                .unwrap()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        port
    }

    #[tokio::test]
    async fn grpcs_endpoint_with_a_configured_ca_file() {
        let cert = self_signed();
        let port = grpcs_server(&cert).await;
        let ca = ca_file(&cert);
        let cfg: GrpcConfig = toml::from_str(&format!(
            "endpoint = 'https://localhost:{port}'\ntls = {{ ca_file = '{}' }}\n",
            ca.display()
        ))
        .unwrap();
        let mut client = HealthClient::new(channel(&cfg).await.unwrap());
        let resp = client.check(HealthCheckRequest::default()).await.unwrap();
        assert_eq!(resp.get_ref().status, 1);

        // Without the CA the handshake fails.
        let untrusted = GrpcConfig::new(
            format!("https://localhost:{port}"),
            ResiliencePolicy::default(),
        );
        assert!(channel(&untrusted).await.is_err());
        std::fs::remove_file(ca).unwrap();
    }

    #[tokio::test]
    async fn balanced_grpcs_checks_the_certificate_against_the_endpoint_host() {
        let cert = self_signed();
        let port = grpcs_server(&cert).await;
        let ca = ca_file(&cert);
        // The balancer dials 127.0.0.1, the certificate is for `localhost` (the base host).
        let mut cfg = GrpcConfig::new("https://localhost", ResiliencePolicy::default())
            .balance(BalanceConfig::endpoints([format!("127.0.0.1:{port}")]));
        cfg.tls.ca_file = Some(ca.clone());
        let mut client = HealthClient::new(channel(&cfg).await.unwrap());
        let resp = client.check(HealthCheckRequest::default()).await.unwrap();
        assert_eq!(resp.get_ref().status, 1);
        std::fs::remove_file(ca).unwrap();
    }
}
