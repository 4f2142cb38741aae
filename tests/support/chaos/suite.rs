//! A whole chaos run against one proxy: three demo sites (a, b, c), the proxy, steady mixed
//! load, every fault in turn on site a, then the end-of-run leak check; and the soak: steady
//! load for a long time with the proxy's RSS and file descriptors sampled.

use std::time::{Duration, Instant};

use super::faults::{self, Fault, Figures, Timing};
use super::lab::{fd_count, rss_kib, Checks, Extra, Flavor, Proxy, Site, SiteSpec};
use super::load::{Load, LoadSpec, Outcome, Record};
use crate::Scratch;

/// The load of a run, without its addresses.
#[derive(Clone, Copy, Debug)]
pub struct LoadShape {
    /// Request workers.
    pub workers: usize,
    /// Pause between two requests of one worker.
    pub pause: Duration,
    /// Kept-alive connections per request worker.
    pub conns_per_worker: usize,
    /// WebSocket, SSE and TCP clients, each.
    pub long_lived: usize,
    /// Pause between two pings of one long-lived client.
    pub ll_pause: Duration,
    /// Long-lived connections are closed and reopened after this long (so that they spread
    /// over the sites again after a fault moved them).
    pub ll_lifetime: Duration,
}

impl LoadShape {
    fn spec(&self, proxy: &Proxy) -> LoadSpec {
        LoadSpec {
            http: proxy.http,
            tcp: proxy.tcp,
            workers: self.workers,
            pause: self.pause,
            conns_per_worker: self.conns_per_worker,
            ws: self.long_lived,
            sse: self.long_lived,
            tcp_clients: self.long_lived,
            ll_pause: self.ll_pause,
            ll_lifetime: self.ll_lifetime,
            sites: SITES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The sites of a run; faults go to the first.
pub const SITES: [&str; 3] = ["a", "b", "c"];

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The load.
    pub load: LoadShape,
    /// Fault phases.
    pub timing: Timing,
    /// The faults, in order.
    pub faults: Vec<Fault>,
    /// Health checks (both proxies).
    pub checks: Checks,
    /// Load before the first fault.
    pub warmup: Duration,
    /// Quiet time after the load before the last file-descriptor count (idle pooled upstream
    /// connections close after 60 s in sitesteer).
    pub quiet: Duration,
}

/// The figures of a run.
#[derive(Clone, Debug)]
pub struct RunFigures {
    /// Which proxy.
    pub flavor: Flavor,
    /// Per fault.
    pub faults: Vec<Figures>,
    /// Requests and messages sent in the whole run.
    pub sent: usize,
    /// Of which failed, and of those, retriable (short requests).
    pub failed: (usize, usize),
    /// How long the load ran.
    pub duration: Duration,
    /// Request ticks skipped because all of a worker's connections were busy.
    pub skipped: u64,
    /// The proxy's fds: right after start (before load), under load before the first fault,
    /// and `quiet` after the load stopped.
    pub fds: (Option<usize>, Option<usize>, Option<usize>),
    /// After the load stopped: sitesteer's open-connection gauge, and the sites' count.
    pub open_after: (Option<i64>, Option<i64>),
    /// The proxy's config.
    pub config: String,
}

impl RunFigures {
    /// Requests and messages per second over the run.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.duration.as_secs_f64().max(0.001)
    }
}

async fn start_sites(dir: &Scratch) -> Result<Vec<Site>, String> {
    let mut sites = Vec::new();
    for name in SITES {
        sites.push(Site::start(SiteSpec::loopback(name), &dir.0).await?);
    }
    Ok(sites)
}

async fn sites_open(sites: &[Site]) -> Option<i64> {
    let mut total = 0;
    for s in sites {
        total += s.open_connections().await?;
    }
    Some(total)
}

/// Runs every fault of `spec` against `flavor`.
pub async fn run(flavor: Flavor, spec: &RunSpec) -> Result<RunFigures, String> {
    let dir = Scratch::new(flavor.name());
    let mut sites = start_sites(&dir).await?;
    let specs: Vec<SiteSpec> = sites.iter().map(|s| s.spec.clone()).collect();
    let mut proxy = Proxy::start(flavor, &specs, spec.checks, &Extra::default(), &dir.0).await?;
    let fds_start = fd_count(proxy.pid());
    let load = Load::start(&spec.load.spec(&proxy));
    tokio::time::sleep(spec.warmup).await;
    let fds_loaded = fd_count(proxy.pid());
    let mut figures = Vec::new();
    let mut error = None;
    for (i, fault) in spec.faults.iter().enumerate() {
        // Each fault hits the next site, so that every site takes faults and long-lived
        // connections that left one site are found on the next.
        let target = i % sites.len();
        match faults::run(&proxy, &mut sites, &load, *fault, spec.timing, target).await {
            Ok(f) => figures.push(f),
            Err(e) => {
                error = Some(format!("{} under {}: {e}", flavor.name(), fault.name()));
                break;
            }
        }
        if !proxy.running() {
            error = Some(format!(
                "{} died during {}; log:\n{}",
                flavor.name(),
                fault.name(),
                proxy.log_tail(40)
            ));
            break;
        }
    }
    let duration = load.now();
    let skipped = load.skipped();
    let records = load.stop().await;
    if let Some(e) = error {
        return Err(e);
    }
    // Idle pooled upstream connections may stay; long-lived ones must all be gone.
    let mut open_after = (None, None);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        open_after = (proxy.open_connections().await, sites_open(&sites).await);
        if open_after.0.unwrap_or(0) == 0 && open_after.1 == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(spec.quiet).await;
    let fds_end = fd_count(proxy.pid());
    let failed = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    let retriable = records
        .iter()
        .filter(|r| !r.kind.long_lived() && matches!(r.outcome, Outcome::Failed(_)))
        .count();
    Ok(RunFigures {
        flavor,
        faults: figures,
        sent: records.len(),
        failed: (failed, retriable),
        duration,
        skipped,
        fds: (fds_start, fds_loaded, fds_end),
        open_after,
        config: proxy.config.clone(),
    })
}

/// The figures of a soak.
#[derive(Clone, Debug)]
pub struct SoakFigures {
    /// How long the load ran.
    pub duration: Duration,
    /// Request ticks skipped because all of a worker's connections were busy.
    pub skipped: u64,
    /// (seconds since the load started, RSS KiB, fds) every sample.
    pub samples: Vec<(f64, u64, usize)>,
    /// Requests and messages sent.
    pub sent: usize,
    /// Of which failed.
    pub failed: usize,
    /// Long-lived reconnects.
    pub reconnects: usize,
    /// The first few failures.
    pub examples: Vec<String>,
    /// State changes of any site during the soak (nothing was injected: these are what a
    /// busy machine makes of 90 ms probe timeouts).
    pub changes: Vec<String>,
    /// Samples before this many seconds are the warm-up, left out of the slope.
    pub warmup_s: f64,
}

impl SoakFigures {
    /// RSS (KiB) of the first sample after the warm-up, the last, and the largest.
    pub fn rss(&self) -> (u64, u64, u64) {
        let steady: Vec<&(f64, u64, usize)> = self
            .samples
            .iter()
            .filter(|s| s.0 >= self.warmup_s)
            .collect();
        let first = steady.first().map_or(0, |s| s.1);
        let last = steady.last().map_or(0, |s| s.1);
        let max = steady.iter().map(|s| s.1).max().unwrap_or(0);
        (first, last, max)
    }

    /// Least-squares slope of RSS after the warm-up, KiB per minute.
    pub fn slope_kib_per_min(&self) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.0 >= self.warmup_s)
            .map(|s| (s.0, s.1 as f64))
            .collect();
        let n = pts.len() as f64;
        if pts.len() < 2 {
            return 0.0;
        }
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx == 0.0 {
            0.0
        } else {
            sxy / sxx * 60.0
        }
    }

    /// Requests and messages per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.duration.as_secs_f64().max(0.001)
    }

    /// File descriptors (first after warm-up, last, max).
    pub fn fds(&self) -> (usize, usize, usize) {
        let steady: Vec<&(f64, u64, usize)> = self
            .samples
            .iter()
            .filter(|s| s.0 >= self.warmup_s)
            .collect();
        (
            steady.first().map_or(0, |s| s.2),
            steady.last().map_or(0, |s| s.2),
            steady.iter().map(|s| s.2).max().unwrap_or(0),
        )
    }
}

/// Steady load through sitesteer for `duration`, sampling its RSS and fds every `every`.
pub async fn soak(
    shape: LoadShape,
    checks: Checks,
    duration: Duration,
    every: Duration,
    warmup: Duration,
) -> Result<SoakFigures, String> {
    let dir = Scratch::new("soak");
    let sites = start_sites(&dir).await?;
    let specs: Vec<SiteSpec> = sites.iter().map(|s| s.spec.clone()).collect();
    let mut proxy =
        Proxy::start(Flavor::Sitesteer, &specs, checks, &Extra::default(), &dir.0).await?;
    let pid = proxy.pid();
    let since = super::lab::epoch_ms();
    let load = Load::start(&shape.spec(&proxy));
    let started = Instant::now();
    let mut samples = Vec::new();
    // Bounded: one sample per `every` until `duration`.
    while started.elapsed() < duration {
        let rss = rss_kib(pid).ok_or("sitesteer is gone")?;
        let fds = fd_count(pid).ok_or("sitesteer is gone")?;
        samples.push((started.elapsed().as_secs_f64(), rss, fds));
        tokio::time::sleep(every.min(duration.saturating_sub(started.elapsed()))).await;
    }
    if let (Some(rss), Some(fds)) = (rss_kib(pid), fd_count(pid)) {
        samples.push((started.elapsed().as_secs_f64(), rss, fds));
    }
    let elapsed = load.now();
    let skipped = load.skipped();
    let records: Vec<Record> = load.stop().await;
    if !proxy.running() {
        return Err(format!(
            "sitesteer died in the soak:\n{}",
            proxy.log_tail(40)
        ));
    }
    let changes = proxy.all_state_changes(since).await;
    Ok(SoakFigures {
        duration: elapsed,
        skipped,
        samples,
        sent: records.len(),
        failed: records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .count(),
        reconnects: records
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Lost(_)))
            .count(),
        examples: records
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed(e) => Some(format!(
                    "failed: {} at {:.1}s: {e}",
                    r.kind.name(),
                    r.sent.as_secs_f64()
                )),
                _ => None,
            })
            .take(5)
            .chain(
                records
                    .iter()
                    .filter_map(|r| match &r.outcome {
                        Outcome::Lost(e) => Some(format!(
                            "reconnect: {} at {:.1}s: {e}",
                            r.kind.name(),
                            r.sent.as_secs_f64()
                        )),
                        _ => None,
                    })
                    .take(5),
            )
            .collect(),
        changes,
        warmup_s: warmup.as_secs_f64(),
    })
}
