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
use sitesteer_probes::{SiteState, SiteView, Snapshot};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{error, AdminState};
use crate::availability::WINDOWS;
use crate::incidents::{DrillRecord, Incident};
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
        OpError::ClusterConflict => error(StatusCode::CONFLICT, e.to_string()),
        OpError::ClusterUnavailable | OpError::ClusterUncertain(_) | OpError::ClusterRefused(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// `GET /api/v1/cluster`: every instance's view of the sites, with `[cluster]`.
pub(super) async fn cluster(State(s): State<AdminState>) -> Response {
    match &s.cluster {
        Some(c) => Json(c.report(&s.health).await).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this sitesteer runs alone: there is no [cluster] section in its config",
        ),
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

/// A site as the API shows it: the Snapshot view plus connections, traffic, long-window
/// availability, and its objectives beside what was measured.
fn site_json(
    s: &AdminState,
    snap: &Snapshot,
    v: &SiteView,
    requests: u64,
    incidents: &[Incident],
) -> Value {
    let now = Instant::now();
    let mut out = serde_json::to_value(v).unwrap_or(Value::Null);
    let Value::Object(map) = &mut out else {
        return out;
    };
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
        json!(v
            .changed_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)),
    );
    map.insert("why".into(), json!(v.reason));
    if let Some(site) = snap.config.sites.get(v.id) {
        let o = &site.objectives;
        let last = incidents.iter().find(|i| i.site == v.name);
        map.insert(
            "objectives".into(),
            json!({
                "shift_time_ms": o.shift_time.as_millis() as u64,
                "failed_requests": o.failed_requests,
                "availability": o.availability,
                "measured": {
                    "last_shift_ms": last.map(|i| i.shift_ms),
                    "last_failed_requests": last.map(|i| i.failed_requests),
                    "last_incident_met": last.map(|i| i.met),
                    "availability_1d": s.availability.ratio(&v.name, 1440, now),
                },
            }),
        );
    }
    out
}

pub(super) async fn sites(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    let requests = s.metrics.requests_by_site();
    let incidents = s.incidents.list();
    let sites: Vec<Value> = snap
        .sites
        .iter()
        .map(|v| {
            site_json(
                &s,
                &snap,
                v,
                requests.get(&v.name).copied().unwrap_or(0),
                &incidents,
            )
        })
        .collect();
    let mut out = json!({"version": snap.version, "generation": snap.generation, "panic": snap.in_panic(), "sites": sites});
    if let Some(c) = &s.cluster {
        out["cluster"] = c.summary();
    }
    Json(out).into_response()
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
            Json(site_json(&s, &snap, v, requests, &s.incidents.list())).into_response()
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
    let incidents = s.incidents.list();
    for (view, site) in snap.sites.iter().zip(&snap.config.sites) {
        let last = incidents.iter().find(|i| i.site == view.name);
        let o = &site.objectives;
        let availability = s.availability.ratio(&view.name, 1440, now);
        let rows = [
            (
                "shift_time_seconds",
                o.shift_time.as_secs_f64(),
                last.map(|i| i.shift_ms as f64 / 1000.0),
            ),
            (
                "failed_requests",
                o.failed_requests as f64,
                last.map(|i| i.failed_requests as f64),
            ),
            ("availability", o.availability, Some(availability)),
        ];
        for (name, target, measured) in rows {
            let g = |value: &str| {
                s.metrics
                    .objectives
                    .with_label_values(&[view.name.as_str(), name, value])
            };
            g("target").set(target);
            if let Some(m) = measured {
                g("measured").set(m);
                let met = if name == "availability" {
                    m >= target
                } else {
                    m <= target
                };
                g("met").set(f64::from(u8::from(met)));
            }
        }
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    fault: Option<sitesteer_probes::Fault>,
}

pub(super) async fn fault(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let b: FaultBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    s.operator
        .set_fault(&name, b.fault, ACTOR)
        .await
        .map_or_else(op_error, view_or_ok)
}

pub(super) async fn info(State(s): State<AdminState>) -> Response {
    let snap = s.health.snapshot();
    let l = &snap.config.listen;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": {"http": l.http, "tcp": l.tcp, "dns": l.dns, "admin": l.admin},
        "generation": snap.generation,
    }))
    .into_response()
}

pub(super) async fn record_drill(State(s): State<AdminState>, bytes: Bytes) -> Response {
    let report: crate::drill::DrillReport = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let incident = s.incidents.record_drill(&DrillRecord {
        site: &report.site,
        started_ms: report.started_ms,
        shift_ms: report.shift_ms,
        failed: report.failed,
        objectives: &report.objectives,
        met: report.met,
        timeline: &report.timeline,
    });
    s.events.push(
        crate::events::NewEvent::new(
            crate::events::EventKind::System,
            "drill",
            format!(
                "drill of {} ({}): shift {}ms, {} of {} requests failed, objectives {}",
                report.site,
                report.mode,
                report.shift_ms.map_or("n/a".to_string(), |v| v.to_string()),
                report.failed,
                report.requests,
                if report.met { "met" } else { "NOT met" }
            ),
        )
        .site(&report.site),
    );
    Json(json!({"ok": true, "incident": incident})).into_response()
}
