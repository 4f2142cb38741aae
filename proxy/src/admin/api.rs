//! The JSON handlers of the admin API.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use sitesteer_probes::{SiteState, SiteView};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{error, AdminState};
use crate::availability::WINDOWS;
use crate::operator::OpError;

/// The actor name recorded for admin API writes.
const ACTOR: &str = "admin-api";

fn op_error(e: OpError) -> Response {
    match e {
        OpError::UnknownSite(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        OpError::Invalid(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        OpError::Reload(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "the new config is invalid; the running config stays",
                "errors": errors.errors.iter().map(|e| json!({"path": e.path, "line": e.line, "message": e.message})).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        OpError::NoConfigFile => error(StatusCode::CONFLICT, e.to_string()),
        OpError::Persist(_) | OpError::ShuttingDown => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Parses a JSON body, answering 400 with serde's words when it does not fit.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("bad JSON body: {e}"),
        ))
    })
}

fn site_json(s: &AdminState, v: &SiteView, requests: u64) -> Value {
    let now = Instant::now();
    let mut out = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut out {
        map.insert("open_connections".into(), json!(s.registry.count(&v.name)));
        map.insert("requests".into(), json!(requests));
        for (label, minutes) in WINDOWS {
            map.insert(
                format!("availability_{label}"),
                json!(s.availability.ratio(&v.name, minutes, now)),
            );
        }
        map.insert(
            "last_change_ms".into(),
            map.get("changed_at").cloned().unwrap_or(Value::Null),
        );
        map.insert(
            "why".into(),
            map.get("reason").cloned().unwrap_or(Value::Null),
        );
    }
    out
}

pub(super) async fn sites(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    let requests = s.metrics.requests_by_site();
    let sites: Vec<Value> = snap
        .sites
        .iter()
        .map(|v| site_json(&s, v, requests.get(&v.name).copied().unwrap_or(0)))
        .collect();
    Json(json!({"version": snap.version, "generation": snap.generation, "panic": crate::observe::in_panic(&snap), "sites": sites})).into_response()
}

pub(super) async fn site(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let snap = s.health.snapshot();
    match snap.sites.iter().find(|v| v.name == name) {
        Some(v) => {
            let requests = s
                .metrics
                .requests_by_site()
                .get(&name)
                .copied()
                .unwrap_or(0);
            Json(site_json(&s, v, requests)).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("unknown site {name:?}")),
    }
}

fn view_or_ok(view: Option<SiteView>) -> Response {
    match view {
        Some(v) => Json(json!({"ok": true, "site": v})).into_response(),
        None => Json(json!({"ok": true})).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: i64,
}

pub(super) async fn set_weight(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let b: WeightBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    s.operator
        .set_weight(&name, b.weight, ACTOR)
        .await
        .map_or_else(op_error, view_or_ok)
}

pub(super) async fn drain(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    s.operator
        .drain(&name, true, ACTOR)
        .await
        .map_or_else(op_error, view_or_ok)
}

pub(super) async fn undrain(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    s.operator
        .drain(&name, false, ACTOR)
        .await
        .map_or_else(op_error, view_or_ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    on: bool,
}

pub(super) async fn maintenance(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let b: MaintenanceBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    s.operator
        .maintenance(&name, b.on, ACTOR)
        .await
        .map_or_else(op_error, view_or_ok)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    from: String,
    to: Option<String>,
}

pub(super) async fn failover(State(s): State<AdminState>, bytes: Bytes) -> Response {
    let b: FailoverBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match s.operator.failover(&b.from, b.to.as_deref(), ACTOR).await {
        Ok(()) => Json(json!({"ok": true, "from": b.from, "to": b.to})).into_response(),
        Err(e) => op_error(e),
    }
}

pub(super) async fn reload(State(s): State<AdminState>) -> Response {
    match s.operator.reload(ACTOR).await {
        Ok(report) => Json(json!({"ok": true, "reload": report})).into_response(),
        Err(e) => op_error(e),
    }
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    limit: Option<usize>,
}

pub(super) async fn events(State(s): State<AdminState>, Query(q): Query<EventsQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(crate::events::CAPACITY);
    Json(json!({"events": s.events.recent(limit)})).into_response()
}

pub(super) async fn event_stream(
    State(s): State<AdminState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    return Some((
                        Ok(SseEvent::default()
                            .event("event")
                            .id(e.id.to_string())
                            .data(data)),
                        rx,
                    ));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

pub(super) async fn readyz(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    let serving = snap
        .sites
        .iter()
        .filter(|v| v.state != SiteState::Maintenance)
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

pub(super) async fn metrics(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    s.metrics.observe_snapshot(&snap);
    let now = Instant::now();
    for site in &snap.sites {
        for (label, minutes) in WINDOWS {
            s.metrics.set_availability(
                &site.name,
                label,
                s.availability.ratio(&site.name, minutes, now),
            );
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

pub(super) async fn incidents(State(s): State<AdminState>) -> Response {
    Json(json!({"incidents": s.incidents.list()})).into_response()
}
