//! Running an axum and a tonic server under a [`Shutdown`].

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{Shutdown, ShutdownReport};
use crate::{Error, Result};

/// Binds a TCP listener, with an error that names the address.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> archon_core::Result<()> {
/// let listener = archon_core::shutdown::bind("127.0.0.1:0".parse().unwrap()).await?;
/// assert!(listener.local_addr().unwrap().port() > 0);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Bind`] when the address is taken or not allowed.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// An HTTP (axum) and a gRPC (tonic) server that stop together under one [`Shutdown`]: they
/// stop accepting when draining begins, finish in-flight requests until the drain deadline, and
/// are cut after it. If either server fails, shutdown is triggered and the error returned.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> archon_core::Result<()> {
/// use archon_core::{config::ShutdownConfig, health::{self, GrpcHealth, HealthRegistry}};
/// use archon_core::shutdown::{Servers, Shutdown, bind};
///
/// let registry = HealthRegistry::default();
/// let shutdown = Shutdown::new(ShutdownConfig::default()).with_health(registry.clone());
/// shutdown.listen_for_signals()?;
/// let grpc = tonic::service::Routes::new(GrpcHealth::new(registry.clone()).into_server());
/// Servers::new(shutdown)
///     .http(bind("127.0.0.1:8080".parse().unwrap()).await?, health::router(registry))
///     .grpc(bind("127.0.0.1:50051".parse().unwrap()).await?, grpc)
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Servers {
    shutdown: Shutdown,
    #[cfg(feature = "http")]
    http: Option<(TcpListener, axum::Router)>,
    #[cfg(feature = "grpc")]
    grpc: Option<(TcpListener, tonic::service::Routes)>,
}

impl Servers {
    /// No servers yet.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            #[cfg(feature = "http")]
            http: None,
            #[cfg(feature = "grpc")]
            grpc: None,
        }
    }

    /// Serves `router` on `listener`.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn http(mut self, listener: TcpListener, router: axum::Router) -> Self {
        self.http = Some((listener, router));
        self
    }

    /// Serves the gRPC `routes` on `listener`.
    #[cfg(feature = "grpc")]
    #[must_use]
    pub fn grpc(mut self, listener: TcpListener, routes: tonic::service::Routes) -> Self {
        self.grpc = Some((listener, routes));
        self
    }

    /// Runs until shutdown completes.
    ///
    /// # Errors
    /// [`Error::Serve`] if a server failed (shutdown then ran all the same).
    pub async fn run(self) -> Result<ShutdownReport> {
        let (failed, mut failures) = mpsc::channel::<Error>(2);
        #[cfg(feature = "http")]
        if let Some((listener, router)) = self.http {
            let drain = self.shutdown.drain_token();
            let failed = failed.clone();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "HTTP server listening");
            }
            self.shutdown.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(drain.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    let _ = failed
                        .send(Error::Serve {
                            server: "http",
                            source: Box::new(e),
                        })
                        .await;
                }
            });
        }
        #[cfg(feature = "grpc")]
        if let Some((listener, routes)) = self.grpc {
            let drain = self.shutdown.drain_token();
            let failed = failed.clone();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "gRPC server listening");
            }
            self.shutdown.spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let served = tonic::transport::Server::builder()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, drain.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    let _ = failed
                        .send(Error::Serve {
                            server: "grpc",
                            source: Box::new(e),
                        })
                        .await;
                }
            });
        }
        drop(failed);
        let failure = tokio::select! {
            () = self.shutdown.triggered() => None,
            Some(error) = failures.recv() => {
                tracing::error!(%error, "server failed; shutting down");
                self.shutdown.trigger();
                Some(error)
            }
        };
        let report = self.shutdown.wait().await;
        match failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}
