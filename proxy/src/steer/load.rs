//! Per-site load: the counters the load-aware choice ([`super::choose_loaded`]) reads.
//!
//! Each site has a [`SiteLoad`] of atomics: requests in flight (an attempt counts from the
//! moment it is steered to the site until its [`LoadGuard`] is dropped, on pingora's path,
//! checked exchanges and TCP alike, since all three steer through [`super::Attempts`]), open
//! long-lived streams (WebSocket, SSE, TCP) and the peak-EWMA latency of the requests the
//! data plane saw it answer (tower's `PeakEwma`: a slower answer raises the estimate at once,
//! a faster one pulls it down by `1 - e^(-Δt/τ)`, and unobserved it decays toward zero with
//! time constant τ = `proxy.load_decay`, so an idle slow site is tried again).
//!
//! Counters are kept by site name in a [`LoadTable`] that outlives reloads, so a reload that
//! renumbers sites keeps their load; each publication takes the per-id list of its
//! generation ([`LoadTable::sites`]). Nodes of a site will get a [`SiteLoad`] each the same
//! way (keyed by site and node), summed for the site's cap.
//!
//! The decision never reads a clock: [`Loads::view`] reads the atomics at one instant into
//! plain [`Load`] values, and the choice is a pure function of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use sitesteer_probes::Snapshot;
use tokio::sync::Notify;

/// One site's load at one instant: the input of the load-aware choice.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Requests in flight at the site.
    pub in_flight: u32,
    /// Open WebSocket, SSE and TCP streams at the site.
    pub streams: u32,
    /// The peak-EWMA latency of its answers, in seconds (0 when none was seen lately).
    pub latency: f64,
    /// `[[site]] max_in_flight`, when the site has one.
    pub cap: Option<u32>,
}

/// What an open stream weighs against a request in flight: a stream holds a connection and
/// some work at the site, but mostly sits idle.
pub const STREAM_LOAD: f64 = 0.25;

/// The floor of every latency estimate (and what a site never timed is assumed to take),
/// in seconds: differences below a millisecond are noise on any real path, and without the
/// floor sites a few tens of microseconds apart would not share traffic by weight; above
/// it, in-flight work decides between equally fast sites.
pub const LATENCY_FLOOR: f64 = 0.001;

impl Load {
    /// The P2C cost: latency × (outstanding work + 1), as tower's `PeakEwma`.
    pub fn cost(&self) -> f64 {
        let work = f64::from(self.in_flight) + STREAM_LOAD * f64::from(self.streams);
        self.latency.max(LATENCY_FLOOR) * (work + 1.0)
    }

    /// Whether the site is at its cap (`max_in_flight`).
    pub fn at_cap(&self) -> bool {
        self.cap.is_some_and(|cap| self.in_flight >= cap)
    }
}

/// The loads of a Snapshot's sites, by site id.
pub trait SiteLoads {
    /// The load of `site`; a site it does not know is idle and uncapped.
    fn load(&self, site: usize) -> Load;

    /// Whether `site` is at its cap (as `load(site).at_cap()`, perhaps cheaper).
    fn at_cap(&self, site: usize) -> bool {
        self.load(site).at_cap()
    }
}

impl SiteLoads for [Load] {
    fn load(&self, site: usize) -> Load {
        self.get(site).copied().unwrap_or_default()
    }
}

/// The live counters of one site.
#[derive(Debug)]
pub(crate) struct SiteLoad {
    /// Requests in flight: the `sitesteer_site_in_flight{site}` gauge itself.
    in_flight: IntGauge,
    streams: AtomicU64,
    /// The estimate, `f64` bits, seconds.
    latency: AtomicU64,
    /// When the estimate was last set, nanoseconds since the table's epoch.
    stamp: AtomicU64,
}

/// Every site's counters, by name, and the wake-up of requests queued for a slot.
#[derive(Debug)]
pub(crate) struct LoadTable {
    epoch: Instant,
    by_name: Mutex<HashMap<String, Arc<SiteLoad>>>,
    gauge: IntGaugeVec,
    /// `sitesteer_shed_total{listener}`.
    shed: IntCounterVec,
    /// Woken whenever a request in flight ends, while requests wait ([`super::queue`]).
    pub(super) freed: Notify,
    /// Requests waiting for a slot now.
    pub(super) waiting: AtomicUsize,
}

impl Default for LoadTable {
    /// A table whose gauge is registered nowhere (tests, and steering without metrics).
    fn default() -> Self {
        let opts = prometheus::Opts::new(SITE_IN_FLIGHT, SITE_IN_FLIGHT_HELP);
        let gauge = IntGaugeVec::new(opts, &["site"]).expect("valid metric");
        let opts = prometheus::Opts::new(SHED, SHED_HELP);
        Self::new(
            gauge,
            IntCounterVec::new(opts, &["listener"]).expect("valid metric"),
        )
    }
}

/// The name of the per-site in-flight gauge.
pub(crate) const SITE_IN_FLIGHT: &str = "sitesteer_site_in_flight";
/// Its help text.
pub(crate) const SITE_IN_FLIGHT_HELP: &str =
    "Requests in flight at each site (attempts steered to it and not yet ended; open streams not counted).";
/// The name of the counter of shed requests.
pub(crate) const SHED: &str = "sitesteer_shed_total";
/// Its help text.
pub(crate) const SHED_HELP: &str = "Requests and TCP connections shed with 503 (or a JSON-RPC error line) because every site that could take them was at max_in_flight past proxy.queue_timeout or the queue was full, by listener.";

impl LoadTable {
    /// A table whose in-flight counts are the series of `gauge` (labelled by site), counting
    /// shed requests in `shed` (labelled by listener).
    pub(crate) fn new(gauge: IntGaugeVec, shed: IntCounterVec) -> Self {
        Self {
            epoch: Instant::now(),
            by_name: Mutex::new(HashMap::new()),
            gauge,
            shed,
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The counters of `snapshot`'s sites, by id (once per publication: takes a lock).
    pub(crate) fn sites(self: &Arc<Self>, snapshot: &Snapshot) -> Loads {
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        let sites = snapshot
            .sites
            .iter()
            .map(|s| {
                by_name
                    .entry(s.name.clone())
                    .or_insert_with(|| {
                        Arc::new(SiteLoad {
                            in_flight: self.gauge.with_label_values(&[s.name.as_str()]),
                            streams: AtomicU64::new(0),
                            latency: AtomicU64::new(0f64.to_bits()),
                            stamp: AtomicU64::new(0),
                        })
                    })
                    .clone()
            })
            .collect();
        let caps = snapshot
            .config
            .sites
            .iter()
            .map(|s| s.max_in_flight)
            .collect();
        Loads {
            table: self.clone(),
            sites,
            caps,
            decay: snapshot.config.proxy.load_decay,
        }
    }

    /// A request or connection on `listener` was shed.
    pub(crate) fn count_shed(&self, listener: &str) {
        self.shed.with_label_values(&[listener]).inc();
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One publication's counters, by site id.
#[derive(Debug)]
pub(crate) struct Loads {
    table: Arc<LoadTable>,
    sites: Vec<Arc<SiteLoad>>,
    caps: Vec<Option<u32>>,
    decay: Duration,
}

impl Loads {
    /// Fresh counters for `snapshot`, shared with nothing (tests).
    #[cfg(test)]
    pub(crate) fn detached(snapshot: &Snapshot) -> Self {
        Arc::new(LoadTable::default()).sites(snapshot)
    }

    /// The counters read now.
    pub(crate) fn view(&self) -> View<'_> {
        View {
            loads: self,
            now: self.table.now(),
        }
    }

    /// An attempt at `site` starts: counted in flight until the guard is dropped.
    pub(crate) fn start(&self, site: usize) -> Option<LoadGuard> {
        let load = self.sites.get(site)?.clone();
        load.in_flight.inc();
        Some(LoadGuard {
            site,
            load,
            table: self.table.clone(),
            started: Instant::now(),
            decay: self.decay,
            stream: false,
        })
    }
}

/// [`Loads`] read at one instant.
pub(crate) struct View<'a> {
    loads: &'a Loads,
    now: u64,
}

impl SiteLoads for View<'_> {
    fn load(&self, site: usize) -> Load {
        let Some(s) = self.loads.sites.get(site) else {
            return Load::default();
        };
        let latency = f64::from_bits(s.latency.load(Ordering::Relaxed));
        let since = self.now.saturating_sub(s.stamp.load(Ordering::Relaxed));
        Load {
            in_flight: u32::try_from(s.in_flight.get().max(0)).unwrap_or(u32::MAX),
            streams: u32::try_from(s.streams.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            latency: latency * decay(since, self.loads.decay),
            cap: self.loads.caps.get(site).copied().flatten(),
        }
    }

    fn at_cap(&self, site: usize) -> bool {
        let cap = self.loads.caps.get(site).copied().flatten();
        let in_flight = self.loads.sites.get(site).map_or(0, |s| s.in_flight.get());
        cap.is_some_and(|cap| in_flight >= i64::from(cap))
    }
}

/// `e^(-Δt/τ)`.
fn decay(since_ns: u64, tau: Duration) -> f64 {
    let tau = tau.as_nanos().max(1) as f64;
    (-(since_ns as f64) / tau).exp()
}

/// The peak-EWMA estimate after observing `rtt` seconds, `since_ns` after `prev` was set.
pub(crate) fn peak_ewma(prev: f64, rtt: f64, since_ns: u64, tau: Duration) -> f64 {
    if rtt > prev {
        return rtt;
    }
    let keep = decay(since_ns, tau);
    prev * keep + rtt * (1.0 - keep)
}

/// One attempt (or open stream) at a site, counted while it lives.
#[derive(Debug)]
pub(crate) struct LoadGuard {
    site: usize,
    load: Arc<SiteLoad>,
    table: Arc<LoadTable>,
    started: Instant,
    decay: Duration,
    stream: bool,
}

impl LoadGuard {
    /// The site's id in the publication the attempt was steered by.
    pub(crate) fn site(&self) -> usize {
        self.site
    }

    /// The site answered: its latency (since the attempt started) feeds the estimate.
    pub(crate) fn observe(&self) {
        let rtt = self.started.elapsed().as_secs_f64();
        let now = self.table.now();
        let s = &self.load;
        let prev = f64::from_bits(s.latency.load(Ordering::Relaxed));
        let since = now.saturating_sub(s.stamp.load(Ordering::Relaxed));
        // Last writer wins between two answers at the same instant: either is a fair sample.
        let next = peak_ewma(prev, rtt, since, self.decay);
        s.latency.store(next.to_bits(), Ordering::Relaxed);
        s.stamp.store(now, Ordering::Relaxed);
    }

    /// The attempt became a long-lived stream: from now on it counts as an open stream
    /// (weighing [`STREAM_LOAD`]) and no longer against `max_in_flight`.
    pub(crate) fn into_stream(mut self) -> Self {
        if !self.stream {
            self.stream = true;
            self.load.streams.fetch_add(1, Ordering::Relaxed);
            self.release();
        }
        self
    }

    fn release(&self) {
        self.load.in_flight.dec();
        // Pairs with the fence of a request joining the queue (`queue.rs`): either it sees
        // this slot free when it looks again, or this sees it waiting and wakes it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.table.waiting.load(Ordering::SeqCst) > 0 {
            self.table.freed.notify_waiters();
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.stream {
            self.load.streams.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    #[test]
    fn a_slower_answer_is_the_new_estimate_at_once() {
        assert_eq!(peak_ewma(0.01, 0.05, 0, TAU), 0.05);
        assert_eq!(peak_ewma(0.01, 0.05, 1_000_000_000, TAU), 0.05);
    }

    #[test]
    fn a_faster_answer_pulls_the_estimate_down_by_the_time_since_the_last() {
        let soon = peak_ewma(0.05, 0.01, 1_000_000, TAU);
        let late = peak_ewma(0.05, 0.01, 20_000_000_000, TAU);
        assert!(soon > 0.049 && soon < 0.05, "{soon}");
        assert!(late > 0.01 && late < 0.016, "{late}");
    }

    #[test]
    fn cost_grows_with_latency_and_outstanding_work() {
        let idle = Load {
            latency: 0.01,
            ..Load::default()
        };
        let busy = Load {
            in_flight: 3,
            ..idle
        };
        let streaming = Load { streams: 4, ..idle };
        assert!(busy.cost() > streaming.cost() && streaming.cost() > idle.cost());
        assert!((streaming.cost() - 0.02).abs() < 1e-9);
        assert!(Load::default().cost() > 0.0);
    }

    #[test]
    fn the_cap_counts_requests_in_flight_only() {
        let l = Load {
            in_flight: 2,
            streams: 10,
            cap: Some(3),
            ..Load::default()
        };
        assert!(!l.at_cap());
        assert!(Load { in_flight: 3, ..l }.at_cap());
        assert!(!Load {
            in_flight: 99,
            cap: None,
            ..l
        }
        .at_cap());
    }
}
