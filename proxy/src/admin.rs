//! The admin listener: liveness and readiness, the sites API and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sitesteer_probes::HealthHandle;

use crate::metrics::Metrics;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The health state.
    pub health: HealthHandle,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/api/v1/sites", get(sites))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    let serving = snap
        .sites
        .iter()
        .filter(|v| v.state != sitesteer_probes::SiteState::Maintenance)
        .count();
    let status = if serving > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": serving > 0, "sites_serving": serving, "snapshot": snap.version})),
    )
        .into_response()
}

async fn sites(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    Json(json!({"version": snap.version, "sites": snap.sites})).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    s.metrics.observe_snapshot(&s.health.snapshot());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
