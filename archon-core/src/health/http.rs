//! `/livez` and `/readyz` over axum.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use super::{HealthRegistry, HealthReport, HealthStatus};

/// An axum router serving `GET /livez` and `GET /readyz`: `200` when up, `503` when down, with
/// the [`HealthReport`] as JSON. Merge it into your service's router.
///
/// ```
/// use archon_core::health::{self, HealthRegistry};
/// let registry = HealthRegistry::default();
/// let app: axum::Router = axum::Router::new().merge(health::router(registry));
/// # drop(app);
/// ```
pub fn router(registry: HealthRegistry) -> axum::Router {
    axum::Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(registry)
}

async fn livez(State(registry): State<HealthRegistry>) -> impl IntoResponse {
    respond(registry.liveness().await)
}

async fn readyz(State(registry): State<HealthRegistry>) -> impl IntoResponse {
    respond(registry.readiness().await)
}

fn respond(report: HealthReport) -> impl IntoResponse {
    let code = match report.status {
        HealthStatus::Up => StatusCode::OK,
        HealthStatus::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(report))
}
