//! Failover drills: `sitesteer drill SITE` (and `[[drill]]` schedules) drive synthetic MCP
//! traffic through the proxy, put a fault on the site through sitesteer (never by touching
//! the site), measure the time until sitesteer detected it and traffic moved, every failed,
//! hedged and rescued request and the slowest one, clear the fault, and report against the
//! site's objectives. The default fault, `hang`, acts in the path to the site
//! (`crate::upstream`, the hang sink): sitesteer must detect it by timeouts as it would a
//! real hang, so a drill can miss its objectives. `maintenance`, `kill-probe` and
//! `blackhole` tell sitesteer directly.

pub(crate) mod cli;
mod report;
pub(crate) mod schedule;
mod traffic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sitesteer_config::DrillMode;

use crate::ctl::{AdminClient, CtlError};
use crate::exit::{EXIT_RUNTIME, EXIT_USAGE};
use crate::objectives::{judge, ObjectiveResult};
pub(crate) use report::{markdown, svg};
use traffic::Sample;

/// What a drill does.
#[derive(Clone, Debug)]
pub(crate) struct DrillPlan {
    /// The admin API URL.
    pub admin: String,
    /// The admin token.
    pub token: Option<String>,
    /// The site to take out.
    pub site: String,
    /// How.
    pub mode: DrillMode,
    /// Whole duration: a third before the fault, a third out, a third after.
    pub duration: Duration,
    /// Synthetic requests per second.
    pub rate: u32,
    /// Record the result in the incidents list (and so the webhooks).
    pub record: bool,
}

/// Traffic share per site in one time bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    /// Start of the bucket, ms since the drill started.
    pub t_ms: u64,
    /// Requests served per site (`failed` for failures).
    pub by_site: BTreeMap<String, u32>,
}

/// The result of a drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DrillReport {
    /// The site taken out.
    pub site: String,
    /// How it was taken out.
    pub mode: String,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// Fault injected, ms after the start.
    pub fault_at_ms: u64,
    /// Fault cleared, ms after the start.
    pub restore_at_ms: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Time from the fault until sitesteer took the site out of rotation and no new request
    /// landed on it, ms (`None`: never).
    pub shift_ms: Option<u64>,
    /// Time from the fault until the site's state left `up`, ms (`None`: not during the
    /// fault).
    #[serde(default)]
    pub detection_ms: Option<u64>,
    /// Requests hedged away from the site during the drill (sent to another site too because
    /// the site was slow).
    #[serde(default)]
    pub hedged: u64,
    /// Requests rescued from the site during the drill (sent elsewhere when it was judged
    /// down while they were on it).
    #[serde(default)]
    pub rescued: u64,
    /// The slowest request of the drill, ms.
    #[serde(default)]
    pub slowest_ms: u64,
    /// Time from the restore until the site served again, ms (`None`: not within the drill).
    pub restore_ms: Option<u64>,
    /// Each objective, target and measured.
    pub objectives: Vec<ObjectiveResult>,
    /// Every objective met.
    pub met: bool,
    /// Milestones: (ms since the epoch, what).
    pub timeline: Vec<(u64, String)>,
    /// Traffic share per 100 ms.
    pub share: Vec<Bucket>,
    /// The first failures, for diagnosis.
    pub failures: Vec<String>,
}

const BUCKET_MS: u64 = 100;

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn fault(api: &AdminClient, plan: &DrillPlan, on: bool) -> Result<(), CtlError> {
    let site = plan.site.replace('/', "%2F");
    match plan.mode {
        DrillMode::Maintenance => {
            api.call(
                Method::POST,
                &format!("/api/v1/sites/{site}/maintenance"),
                Some(json!({"on": on})),
            )
            .await?
        }
        DrillMode::Hang
        | DrillMode::Drop
        | DrillMode::Slow
        | DrillMode::Errors
        | DrillMode::KillProbe
        | DrillMode::Blackhole => {
            let fault = on.then_some(plan.mode.as_str());
            api.call(
                Method::POST,
                &format!("/api/v1/sites/{site}/fault"),
                Some(json!({"fault": fault})),
            )
            .await?
        }
    };
    Ok(())
}

/// The site's objectives as the admin API reports them (targets).
async fn objectives(
    api: &AdminClient,
    site: &str,
) -> Result<sitesteer_config::Objectives, CtlError> {
    let v = api
        .call(
            Method::GET,
            &format!("/api/v1/sites/{}", site.replace('/', "%2F")),
            None,
        )
        .await?;
    let o = &v["objectives"];
    let get = |k: &str| o.get(k).and_then(Value::as_f64);
    let (Some(shift), Some(failed), Some(avail)) = (
        get("shift_time_ms"),
        get("failed_requests"),
        get("availability"),
    ) else {
        return Err(CtlError(
            EXIT_RUNTIME,
            format!("the admin API did not report objectives for {site}"),
        ));
    };
    Ok(sitesteer_config::Objectives {
        shift_time: Duration::from_millis(shift as u64),
        failed_requests: failed as u64,
        availability: avail,
    })
}

/// Runs a drill against a running sitesteer.
pub(crate) async fn run(plan: &DrillPlan) -> Result<DrillReport, CtlError> {
    let api = AdminClient::connect(&plan.admin, plan.token.clone()).await?;
    let info = api.call(Method::GET, "/api/v1/info", None).await?;
    let proxy: SocketAddr = info["listen"]["http"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            CtlError(
                EXIT_USAGE,
                "this sitesteer has no HTTP listener to drive traffic through".into(),
            )
        })?;
    // A wildcard listener is reached on loopback.
    let proxy = if proxy.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], proxy.port()))
    } else {
        proxy
    };
    let targets = objectives(&api, &plan.site).await?;
    let sites = api.call(Method::GET, "/api/v1/sites", None).await?;
    let serving = sites["sites"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|s| s["name"] != plan.site.as_str() && s["state"] == "up")
            .count()
    });
    if serving == 0 {
        return Err(CtlError(
            EXIT_USAGE,
            format!(
                "no other site is up, so a drill of {} would take the service down; refusing",
                plan.site
            ),
        ));
    }

    let third = plan.duration / 3;
    let started_ms = epoch_ms();
    let load = traffic::Load::start(proxy, plan.rate);
    let mut timeline = vec![(
        started_ms,
        "drill started: synthetic MCP traffic through the proxy".to_string(),
    )];
    tokio::time::sleep(third).await;
    let before = rescue_counts(&api, &plan.site).await;
    let fault_at = load.elapsed();
    let result = fault(&api, plan, true).await;
    if let Err(e) = result {
        let _ = load.stop().await;
        return Err(e);
    }
    timeline.push((
        started_ms + fault_at.as_millis() as u64,
        format!("fault injected: {}", plan.mode.as_str()),
    ));
    let (detection, ()) = tokio::join!(detect(&api, &plan.site, third), tokio::time::sleep(third));
    let restore_at = load.elapsed();
    let restored = fault(&api, plan, false).await;
    timeline.push((
        started_ms + restore_at.as_millis() as u64,
        "fault cleared".to_string(),
    ));
    tokio::time::sleep(third).await;
    let samples = load.stop().await;
    restored?;
    let after = rescue_counts(&api, &plan.site).await;

    let mut report = analyse(
        plan, started_ms, fault_at, restore_at, &samples, &targets, timeline, detection,
    );
    report.hedged = after.0.saturating_sub(before.0);
    report.rescued = after.1.saturating_sub(before.1);
    if plan.record {
        api.call(
            Method::POST,
            "/api/v1/incidents",
            Some(serde_json::to_value(&report).unwrap_or(Value::Null)),
        )
        .await?;
    }
    Ok(report)
}

/// Polls the site's state every 20 ms until it leaves `up`, for at most `limit`; returns how
/// long that took.
async fn detect(api: &AdminClient, site: &str, limit: Duration) -> Option<Duration> {
    let path = format!("/api/v1/sites/{}", site.replace('/', "%2F"));
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(v) = api.call(Method::GET, &path, None).await {
            if v["state"].as_str().is_some_and(|s| s != "up") {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `sitesteer_hedges_total` and `sitesteer_rescues_total` of `site` now (0 when the metrics
/// cannot be read).
async fn rescue_counts(api: &AdminClient, site: &str) -> (u64, u64) {
    let Ok(text) = api.text("/metrics").await else {
        return (0, 0);
    };
    let label = format!("{{site=\"{site}\"}}");
    let count = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(label.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (
        count("sitesteer_hedges_total"),
        count("sitesteer_rescues_total"),
    )
}

#[allow(clippy::too_many_arguments)]
fn analyse(
    plan: &DrillPlan,
    started_ms: u64,
    fault_at: Duration,
    restore_at: Duration,
    samples: &[Sample],
    targets: &sitesteer_config::Objectives,
    mut timeline: Vec<(u64, String)>,
    detection: Option<Duration>,
) -> DrillReport {
    let ms = |d: Duration| d.as_millis() as u64;
    let requests = samples.len() as u64;
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.site.is_none()).collect();
    let during = |s: &&Sample| s.sent >= fault_at && s.sent < restore_at;
    let last_on_site = samples
        .iter()
        .filter(during)
        .filter(|s| s.site.as_deref() == Some(plan.site.as_str()))
        .map(|s| s.sent)
        .max();
    let landed = match last_on_site {
        Some(t) => ms(t - fault_at),
        None => 0,
    };
    // A fault that sitesteer must detect (a hang) is not shifted before it is detected, even
    // when every request sent meanwhile was hedged or rescued to another site.
    let detection_ms = detection.map(ms);
    let shift = landed.max(detection_ms.unwrap_or(0));
    if let Some(d) = detection_ms {
        timeline.push((
            started_ms + ms(fault_at) + d,
            "sitesteer detected the fault: the site left up".to_string(),
        ));
    }
    let slowest_ms = samples.iter().map(|s| ms(s.took)).max().unwrap_or(0);
    let back = samples
        .iter()
        .filter(|s| s.sent >= restore_at && s.site.as_deref() == Some(plan.site.as_str()))
        .map(|s| s.sent)
        .min();
    let restore_ms = back.map(|t| ms(t - restore_at));
    timeline.push((
        started_ms + ms(fault_at) + shift,
        "traffic shifted to other sites".to_string(),
    ));
    if let Some(r) = restore_ms {
        timeline.push((
            started_ms + ms(restore_at) + r,
            "traffic restored to the site".to_string(),
        ));
    }
    timeline.sort_by_key(|(t, _)| *t);
    let availability = if requests == 0 {
        1.0
    } else {
        (requests - failed.len() as u64) as f64 / requests as f64
    };
    let objectives = judge(targets, shift, failed.len() as u64, availability);
    let met = objectives.iter().all(|o| o.met);
    let mut share: BTreeMap<u64, BTreeMap<String, u32>> = BTreeMap::new();
    for s in samples {
        let bucket = ms(s.sent) / BUCKET_MS * BUCKET_MS;
        let key = s.site.clone().unwrap_or_else(|| "failed".into());
        *share.entry(bucket).or_default().entry(key).or_insert(0) += 1;
    }
    DrillReport {
        site: plan.site.clone(),
        mode: plan.mode.as_str().to_string(),
        started_ms,
        fault_at_ms: ms(fault_at),
        restore_at_ms: ms(restore_at),
        requests,
        failed: failed.len() as u64,
        shift_ms: Some(shift),
        detection_ms,
        hedged: 0,
        rescued: 0,
        slowest_ms,
        restore_ms,
        objectives,
        met,
        timeline,
        share: share
            .into_iter()
            .map(|(t_ms, by_site)| Bucket { t_ms, by_site })
            .collect(),
        failures: failed
            .iter()
            .take(20)
            .map(|s| s.error.clone().unwrap_or_default())
            .collect(),
    }
}
