//! The real-distance scenario: a near and a far site, each in its own network namespace,
//! sitesteer in the root namespace, steady requests through it. Latency-aware steering must
//! give the near site the larger share (by `effective weight × score`), and move traffic
//! away from it when its link becomes slow, then lossy, and back when it heals.

use std::time::Duration;

use super::lab::{Checks, Extra, Flavor, Proxy, Site, SiteSpec};
use super::load::{Load, LoadSpec, Outcome};
use super::netlab::{LabError, NetLab, Shaper};
use crate::{wait_until, Scratch};

/// Phase lengths and link settings.
#[derive(Clone, Copy, Debug)]
pub struct DistanceSpec {
    /// Time for the scores to follow a change of the link before measuring.
    pub settle: Duration,
    /// How long shares are measured in each phase.
    pub measure: Duration,
    /// The far site's delay (each packet leaving its namespace).
    pub far_delay: Duration,
    /// The near site's delay while it is made slow.
    pub slow_delay: Duration,
    /// The share of the near site's packets lost while it is made lossy.
    pub loss: f64,
}

/// Traffic shares and scores in one phase.
#[derive(Clone, Debug, Default)]
pub struct Share {
    /// Requests the near site answered.
    pub near: usize,
    /// Requests the far site answered.
    pub far: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Scores (near, far) and states at the end of the phase, from the admin API.
    pub scores: (f64, f64),
    /// States (near, far).
    pub states: (String, String),
    /// Latency EWMA (near, far), ms.
    pub ewma_ms: (f64, f64),
}

impl Share {
    /// The near site's share of the answered requests.
    pub fn near_share(&self) -> f64 {
        let total = self.near + self.far;
        if total == 0 {
            0.0
        } else {
            self.near as f64 / total as f64
        }
    }

    /// The near site's share the scores predict (equal weights, both up).
    pub fn expected_near_share(&self) -> f64 {
        let (n, f) = self.scores;
        if n + f <= 0.0 {
            0.0
        } else {
            n / (n + f)
        }
    }
}

/// The figures of the scenario.
#[derive(Clone, Debug)]
pub struct DistanceFigures {
    /// How delay and loss were applied.
    pub shaper: Shaper,
    /// Both links as configured: near 0 ms, far `far_delay`.
    pub baseline: Share,
    /// The near link slowed to `slow_delay`.
    pub slow: Share,
    /// The near link back to 0 ms but losing `loss` of its packets.
    pub lossy: Share,
    /// The near link healed.
    pub healed: Share,
    /// The spec it ran with.
    pub spec: DistanceSpec,
}

/// Why the scenario did not run to the end.
#[derive(Debug)]
pub enum NotRun {
    /// The machine cannot do it (not root, no `ip netns`, no shaper): skip, saying why.
    Skip(String),
    /// It could, and something went wrong.
    Failed(String),
}

async fn observe(proxy: &Proxy, load: &Load, spec: &DistanceSpec) -> Result<Share, NotRun> {
    tokio::time::sleep(spec.settle).await;
    let from = load.now();
    tokio::time::sleep(spec.measure).await;
    let records = load.between(from, load.now());
    let near = load.site_index("near");
    let far = load.site_index("far");
    let mut share = Share::default();
    for r in &records {
        match r.outcome {
            Outcome::Ok if r.site == near => share.near += 1,
            Outcome::Ok if r.site == far => share.far += 1,
            Outcome::Failed(_) => share.failed += 1,
            _ => {}
        }
    }
    let sites = super::lab::sites_json(proxy.admin).await;
    let pick = |name: &str, key: &str| {
        sites["sites"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .map(|s| s[key].clone())
            .unwrap_or_default()
    };
    share.scores = (
        pick("near", "score").as_f64().unwrap_or(0.0),
        pick("far", "score").as_f64().unwrap_or(0.0),
    );
    share.states = (
        pick("near", "state").as_str().unwrap_or("?").to_string(),
        pick("far", "state").as_str().unwrap_or("?").to_string(),
    );
    share.ewma_ms = (
        pick("near", "latency_ewma_ms").as_f64().unwrap_or(0.0),
        pick("far", "latency_ewma_ms").as_f64().unwrap_or(0.0),
    );
    Ok(share)
}

/// Runs the scenario. Makes two namespaces, a site in each, sitesteer in front; removes
/// everything before returning.
pub async fn run(spec: DistanceSpec) -> Result<DistanceFigures, NotRun> {
    let lab = NetLab::create(2).map_err(|e| match e {
        LabError::Unsupported(why) => NotRun::Skip(why),
        broken @ LabError::Broken(_) => NotRun::Failed(broken.to_string()),
    })?;
    let dir = Scratch::new("distance");
    let specs: Vec<SiteSpec> = ["near", "far"]
        .iter()
        .enumerate()
        .map(|(i, name)| SiteSpec {
            name: name.to_string(),
            http: lab.addr(i, 8080),
            tcp: lab.addr(i, 7070),
            netns: Some(lab.ns[i].name.clone()),
        })
        .collect();
    lab.shape(0, Duration::ZERO, 0.0).map_err(NotRun::Failed)?;
    lab.shape(1, spec.far_delay, 0.0).map_err(NotRun::Failed)?;
    let mut sites = Vec::new();
    for s in &specs {
        sites.push(
            Site::start(s.clone(), &dir.0)
                .await
                .map_err(NotRun::Failed)?,
        );
    }
    // Probes slow enough for a 30 ms link (a fresh connection per probe: two round trips),
    // a latency reference that tells 2 ms from 60 ms, and a short window so that a healed
    // site's error rate clears within the phase.
    let checks = Checks {
        interval_ms: 300,
        timeout_ms: 250,
        rise: 2,
        fall: 2,
        mcp: false,
    };
    let extra = Extra {
        health: "latency_reference = \"20ms\"\nwindow = \"3s\"\n".to_string(),
        tables: String::new(),
    };
    let proxy = Proxy::start(Flavor::Sitesteer, &specs, checks, &extra, &dir.0)
        .await
        .map_err(NotRun::Failed)?;
    let load = Load::start(&LoadSpec {
        http: proxy.http,
        tcp: proxy.tcp,
        workers: 4,
        pause: Duration::from_millis(10),
        conns_per_worker: 4,
        ws: 0,
        sse: 0,
        tcp_clients: 0,
        ll_pause: Duration::from_millis(100),
        ll_lifetime: Duration::from_secs(3600),
        sites: vec!["near".to_string(), "far".to_string()],
    });
    let result = async {
        let baseline = observe(&proxy, &load, &spec).await?;
        lab.shape(0, spec.slow_delay, 0.0).map_err(NotRun::Failed)?;
        let slow = observe(&proxy, &load, &spec).await?;
        lab.shape(0, Duration::ZERO, spec.loss)
            .map_err(NotRun::Failed)?;
        let lossy = observe(&proxy, &load, &spec).await?;
        lab.shape(0, Duration::ZERO, 0.0).map_err(NotRun::Failed)?;
        wait_until(Duration::from_secs(15), || async {
            proxy.state_of("near").await == "up"
        })
        .await;
        let healed = observe(&proxy, &load, &spec).await?;
        Ok(DistanceFigures {
            shaper: lab.shaper,
            baseline,
            slow,
            lossy,
            healed,
            spec,
        })
    }
    .await;
    load.stop().await;
    drop(proxy);
    drop(sites);
    drop(lab);
    result
}

/// A Markdown table of the figures.
pub fn table(f: &DistanceFigures) -> String {
    let mut out = String::from(
        "| phase | near link | far link | near share (measured) | near share (scores predict) | scores near / far | latency EWMA near / far | states near / far | failed |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let far = format!("{} ms", f.spec.far_delay.as_millis());
    let rows = [
        ("baseline", "0 ms".to_string(), &f.baseline),
        (
            "near made slow",
            format!("{} ms", f.spec.slow_delay.as_millis()),
            &f.slow,
        ),
        (
            "near made lossy",
            format!("0 ms, {:.0}% loss", f.spec.loss * 100.0),
            &f.lossy,
        ),
        ("near healed", "0 ms".to_string(), &f.healed),
    ];
    for (phase, near, s) in rows {
        out.push_str(&format!(
            "| {phase} | {near} | {far} | {:.0}% of {} | {:.0}% | {:.2} / {:.2} | {:.1} / {:.1} ms | {} / {} | {} |\n",
            s.near_share() * 100.0,
            s.near + s.far,
            s.expected_near_share() * 100.0,
            s.scores.0,
            s.scores.1,
            s.ewma_ms.0,
            s.ewma_ms.1,
            s.states.0,
            s.states.1,
            s.failed
        ));
    }
    out.push_str(&format!("\nShaping: {}.\n", f.shaper.describe()));
    out
}
