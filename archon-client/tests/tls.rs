#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "rustls")]
//! https upstreams with the `rustls` feature: a self-signed certificate (rcgen) on local
//! axum and tonic servers.

use std::sync::Arc;
use std::time::Duration;

use archon_client::http::{HttpClient, HttpClientConfig, UpstreamConfig};
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

async fn https_server(cert: &Cert) -> u16 {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
        )
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        tls: TlsAcceptor::from(Arc::new(config)),
    };
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "secure" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
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
    let body = client
        .get("secure", "/hello")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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

#[cfg(feature = "grpc")]
mod grpc {
    use super::*;
    use archon_client::balance::BalanceConfig;
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

    fn ca_file(cert: &Cert) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "archon-client-tls-{}-{}.pem",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, &cert.pem).unwrap();
        path
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
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
