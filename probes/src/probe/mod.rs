//! Active probes and their scheduler: one task per (site, probe), each with its own interval,
//! timeout and jitter, so that a hanging site never delays the probes of another.

pub mod client;
pub mod mcp;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::Method;
use sitesteer_config::{Config, McpProtocol, Probe, ProbeKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::observation::{Failure, Observation, SiteId};
use crate::snapshot::Snapshot;
use crate::table::probe_applies;

/// A failed probe: the failure and, for the state reason, a detail.
pub type ProbeFailure = (Failure, Option<String>);

/// One probe of one site.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The site.
    pub site: SiteId,
    /// Site name (for logs).
    pub site_name: String,
    /// Index of the probe in `Config::probes`.
    pub probe: usize,
    /// The probe's settings.
    pub spec: Probe,
    /// The endpoint probed.
    pub addr: SocketAddr,
    /// The `Host` header sent.
    pub host: String,
    /// How to reach `addr`: plain, or TLS for `[site.tls]` sites.
    pub dial: client::Dial,
}

/// Every (site, probe) pair of `config`.
pub fn targets(config: &Config) -> Vec<ProbeTarget> {
    let mut out = Vec::new();
    for (site_id, site) in config.sites.iter().enumerate() {
        for (probe_id, spec) in config.probes.iter().enumerate() {
            if !probe_applies(config, probe_id, site) {
                continue;
            }
            let Some(addr) = site.endpoints.get(spec.endpoint) else {
                continue;
            };
            out.push(ProbeTarget {
                site: site_id,
                site_name: site.name.clone(),
                probe: probe_id,
                spec: spec.clone(),
                addr,
                host: site.host.clone().unwrap_or_else(|| addr.to_string()),
                dial: match (&site.tls, site.tls_server_name(addr)) {
                    (Some(tls), Some(name)) => client::Dial::tls(addr, &name, &tls.ca_file),
                    _ => client::Dial::plain(addr),
                },
            });
        }
    }
    out
}

/// Starts one task per (site, probe) of `config`. Each stops when `generation` moves past
/// `current` (a reload) or its sender closes. Each run looks in the published `snapshot`
/// for a drill's `hang` fault on its site, and probes the hang sink instead while it lasts.
pub fn spawn_all(
    config: &Arc<Config>,
    current: u64,
    tx: mpsc::Sender<Observation>,
    generation: watch::Receiver<u64>,
    snapshot: Arc<ArcSwap<Snapshot>>,
) -> Vec<JoinHandle<()>> {
    // Outcomes in a row after a change that settle a probe's state (rise or fall).
    let settle = config.health.rise.max(config.health.fall);
    targets(config)
        .into_iter()
        .map(|target| {
            let span = tracing::debug_span!("probe", site = %target.site_name, kind = target.spec.kind.as_str());
            let run = run(target, current, tx.clone(), generation.clone(), snapshot.clone(), settle);
            tokio::spawn(run.instrument(span))
        })
        .collect()
}

/// `target` as reached through a drill fault that acts in the path ([`crate::in_path`]):
/// every connection goes to the fault's stand-in. `None` when the site has no such fault in
/// `snapshot` (of generation `current`), or the stand-in cannot start.
fn through_fault(target: &ProbeTarget, snapshot: &Snapshot, current: u64) -> Option<ProbeTarget> {
    if snapshot.generation != current {
        return None;
    }
    let stand_in = crate::in_path_of(snapshot, target.site, target.addr)?;
    Some(ProbeTarget {
        addr: stand_in,
        dial: client::Dial::plain(stand_in),
        ..target.clone()
    })
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(
        0..max.as_nanos().min(u64::MAX as u128) as u64,
    ))
}

async fn run(
    target: ProbeTarget,
    current: u64,
    tx: mpsc::Sender<Observation>,
    mut generation: watch::Receiver<u64>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    settle: u32,
) {
    let mut learned: Option<McpProtocol> = None;
    let mut cadence = Cadence::new(settle);
    // Spread the first round over one interval so that probes do not move in lockstep.
    let mut next = Instant::now() + jitter(target.spec.interval.min(Duration::from_millis(50)));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = generation.changed() => {
                if changed.is_err() || *generation.borrow() != current { return; }
                continue;
            }
        }
        let started = Instant::now();
        let faulted = through_fault(&target, &snapshot.load(), current);
        let probed = faulted.as_ref().unwrap_or(&target);
        let outcome =
            match tokio::time::timeout(target.spec.timeout, check(probed, &mut learned)).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                Ok(Err(f)) => Err(f),
                Err(_) => Err((
                    Failure::Timeout,
                    Some(format!("no answer within {:?}", target.spec.timeout)),
                )),
            };
        if let Err((failure, detail)) = &outcome {
            tracing::debug!(
                failure = failure.as_str(),
                detail = detail.as_deref().unwrap_or(""),
                "probe failed"
            );
        }
        let (outcome, detail) = match outcome {
            Ok(latency) => (Ok(latency), None),
            Err((f, d)) => (Err(f), d),
        };
        let obs_ok = outcome.is_ok();
        let obs = Observation::probe(target.site, current, target.probe, outcome, detail);
        if tx.send(obs).await.is_err() {
            return;
        }
        next = match cadence.after(obs_ok, target.spec.interval) {
            // Settled: every interval from the start of the last run.
            Pace::Steady => started + target.spec.interval,
            // Changing: a quarter interval after this run ended, so that `rise` passes
            // stay that far apart even when a hung site answers a run late.
            Pace::Fast(after) => Instant::now() + after,
        } + jitter(target.spec.jitter);
        if next < Instant::now() {
            next = Instant::now();
        }
    }
}

/// How often a probe runs: every `interval`, and four times as often while its outcome is
/// changing (HAProxy's `fastinter`), from the first outcome unlike the one before until
/// `settle` (the larger of `rise` and `fall`) alike in a row, so that a site that fails or
/// comes back is judged in a fraction of the time at no cost while it is steady.
#[derive(Debug)]
struct Cadence {
    settle: u32,
    last: Option<bool>,
    alike: u32,
}

impl Cadence {
    fn new(settle: u32) -> Self {
        Self {
            settle: settle.max(1),
            last: None,
            alike: u32::MAX,
        }
    }

    /// How soon the next run comes, after one whose outcome was `ok`.
    fn after(&mut self, ok: bool, interval: Duration) -> Pace {
        match self.last {
            Some(last) if last != ok => self.alike = 1,
            Some(_) => self.alike = self.alike.saturating_add(1),
            // The first outcome is a steady state, not a change.
            None => self.alike = u32::MAX,
        }
        self.last = Some(ok);
        if self.alike < self.settle {
            Pace::Fast((interval / 4).max(Duration::from_millis(5)))
        } else {
            Pace::Steady
        }
    }
}

/// The next run: one interval after the start of the last, or this long after its end.
#[derive(Debug, PartialEq, Eq)]
enum Pace {
    Steady,
    Fast(Duration),
}

/// Runs the probe once (without its timeout).
pub async fn check(
    target: &ProbeTarget,
    learned: &mut Option<McpProtocol>,
) -> Result<(), ProbeFailure> {
    let spec = &target.spec;
    match spec.kind {
        ProbeKind::Tcp => client::connect(target.addr)
            .await
            .map(drop)
            .map_err(|f| (f, None)),
        ProbeKind::Http => http(target).await,
        ProbeKind::Mcp if spec.endpoint == sitesteer_config::EndpointKind::Tcp => {
            stream::tcp_ping(target).await
        }
        ProbeKind::Mcp => {
            mcp::probe(
                &target.dial,
                &spec.path,
                &target.host,
                spec.mcp_protocol,
                learned,
            )
            .await
        }
        ProbeKind::Sse => stream::sse(target).await,
        ProbeKind::Ws => stream::ws(target).await,
    }
}

async fn http(target: &ProbeTarget) -> Result<(), ProbeFailure> {
    let spec = &target.spec;
    let answer = client::request_via(
        &target.dial,
        Method::GET,
        &spec.path,
        &target.host,
        &[],
        None,
    )
    .await
    .map_err(|f| (f, None))?;
    let code = answer.status.as_u16();
    if code < spec.expect_status.0 || code > spec.expect_status.1 {
        return Err((Failure::Status(code), Some(format!("HTTP {code}"))));
    }
    if let Some(needle) = &spec.body_contains {
        let body = String::from_utf8_lossy(&answer.body);
        if !body.contains(needle.as_str()) {
            return Err((Failure::BadAnswer, Some(format!("body lacks {needle:?}"))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Cadence, Pace};
    use std::time::Duration;

    #[test]
    fn probes_run_four_times_as_often_while_the_outcome_changes() {
        let every = Duration::from_millis(100);
        let fast = Pace::Fast(Duration::from_millis(25));
        let mut c = Cadence::new(2);
        assert_eq!(c.after(true, every), Pace::Steady, "steady from the start");
        assert_eq!(c.after(true, every), Pace::Steady);
        assert_eq!(c.after(false, every), fast, "a change: look again soon");
        assert_eq!(
            c.after(false, every),
            Pace::Steady,
            "fall (2) alike: settled"
        );
        assert_eq!(c.after(false, every), Pace::Steady);
        assert_eq!(c.after(true, every), fast, "coming back");
        assert_eq!(c.after(true, every), Pace::Steady);
        let mut slow = Cadence::new(3);
        slow.after(true, every);
        assert_eq!(slow.after(false, every), fast);
        assert_eq!(
            slow.after(false, every),
            fast,
            "rise/fall 3: not settled after 2"
        );
        assert_eq!(slow.after(false, every), Pace::Steady);
    }
}
