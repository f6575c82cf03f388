//! The standard `grpc.health.v1.Health` service, answering from a [`HealthRegistry`].

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{HealthRegistry, HealthStatus};

/// `grpc.health.v1.Health` backed by a [`HealthRegistry`].
///
/// The service name `""` is the whole server's readiness (NOT_SERVING while draining); the name
/// of a registered check is that check alone; any other name is `NOT_FOUND` (`Check`) or
/// `SERVICE_UNKNOWN` (`Watch`). `Watch` sends the current status at once, then every change:
/// checks are re-evaluated every `health.cache_ttl`, and draining is pushed immediately, after
/// which the stream ends so that it does not hold the server's graceful shutdown open.
///
/// ```
/// use archon_core::health::{GrpcHealth, HealthRegistry};
/// let routes = tonic::service::Routes::new(GrpcHealth::new(HealthRegistry::default()).into_server());
/// # drop(routes);
/// ```
#[derive(Debug, Clone)]
pub struct GrpcHealth {
    registry: HealthRegistry,
}

impl GrpcHealth {
    /// Wraps a registry.
    pub fn new(registry: HealthRegistry) -> Self {
        Self { registry }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> HealthServer<Self> {
        HealthServer::new(self)
    }

    async fn status_of(&self, service: &str) -> Option<ServingStatus> {
        let status = if service.is_empty() {
            let ready = self.registry.readiness().await.status;
            let live = self.registry.liveness().await.status;
            if ready == HealthStatus::Up && live == HealthStatus::Up {
                HealthStatus::Up
            } else {
                HealthStatus::Down
            }
        } else {
            let report = self.registry.check(service).await?;
            if self.registry.is_draining() {
                HealthStatus::Down
            } else {
                report.status
            }
        };
        Some(match status {
            HealthStatus::Up => ServingStatus::Serving,
            HealthStatus::Down => ServingStatus::NotServing,
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

struct WatchState {
    health: GrpcHealth,
    service: String,
    last: Option<ServingStatus>,
    changes: tokio::sync::watch::Receiver<()>,
    done: bool,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for GrpcHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status_of(&service).await {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service `{service}`"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let interval = self
            .registry
            .config()
            .cache_ttl
            .max(std::time::Duration::from_millis(50));
        let changes = self.registry.subscribe();
        let state = WatchState {
            health: self.clone(),
            service,
            last: None,
            changes,
            done: false,
        };
        let stream = futures::stream::unfold(state, move |mut state| async move {
            if state.done {
                return None;
            }
            loop {
                let status = state
                    .health
                    .status_of(&state.service)
                    .await
                    .unwrap_or(ServingStatus::ServiceUnknown);
                if state.last != Some(status) {
                    state.last = Some(status);
                    // Once draining has been reported, end the stream so that it does not hold
                    // the server's graceful shutdown open.
                    state.done = state.health.registry.is_draining();
                    return Some((Ok(response(status)), state));
                }
                if state.health.registry.is_draining() {
                    return None;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    changed = state.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
