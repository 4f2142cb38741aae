//! The admin listener: the JSON API (the admin API contract; README and
//! `docs/operations.md` describe it), `/metrics`, the status page, liveness
//! and readiness. Writes need `Authorization: Bearer TOKEN` when a token is configured (the
//! token is compared in constant time); every error is JSON that says what is wrong. What a
//! browser can be made to send (cross-site writes, DNS rebinding, framing) is refused by
//! [`guard`].

mod api;
mod guard;
mod page;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use sitesteer_probes::HealthHandle;
use subtle::ConstantTimeEq;

use crate::availability::Availability;
use crate::cluster::Cluster;
use crate::conns::Registry;
use crate::events::EventLog;
use crate::incidents::Incidents;
use crate::metrics::Metrics;
use crate::operator::Operator;
use crate::secrets::AdminToken;

/// Largest admin request body.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// What the admin handlers share.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The health state.
    pub health: HealthHandle,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Operator actions.
    pub operator: Arc<Operator>,
    /// The fleet membership, with `[cluster]`.
    pub cluster: Option<Arc<Cluster>>,
    /// The events log.
    pub events: Arc<EventLog>,
    /// Open long-lived connections.
    pub registry: Arc<Registry>,
    /// Long-window availability.
    pub availability: Arc<Availability>,
    /// Measured failovers.
    pub incidents: Arc<Incidents>,
    /// The bearer token writes need, when configured (replaced by reloads).
    pub token: AdminToken,
}

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The admin router.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(page::status_page))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/sites", get(api::sites))
        .route("/api/v1/sites/{name}", get(api::site))
        .route("/api/v1/sites/{name}/weight", put(api::set_weight))
        .route("/api/v1/sites/{name}/drain", post(api::drain))
        .route("/api/v1/sites/{name}/undrain", post(api::undrain))
        .route("/api/v1/sites/{name}/maintenance", post(api::maintenance))
        .route("/api/v1/failover", post(api::failover))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/events/stream", get(api::event_stream))
        .route("/api/v1/reload", post(api::reload))
        .route(
            "/api/v1/incidents",
            get(api::incidents).post(api::record_drill),
        )
        .route("/api/v1/sites/{name}/fault", post(api::fault))
        .route("/api/v1/info", get(api::info))
        .route("/api/v1/cluster", get(api::cluster))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn(guard::same_site_writes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::known_host,
        ))
        .layer(middleware::from_fn(guard::no_framing))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Refuses writes without the right bearer token.
async fn authorize(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (true, Some(token)) = (write, state.token.current()) {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = presented.as_bytes().ct_eq(token.as_bytes()).into();
        if !ok {
            return error(
                StatusCode::UNAUTHORIZED,
                "this write needs `Authorization: Bearer TOKEN` with the admin token",
            );
        }
    }
    next.run(req).await
}
