//! The published, immutable view of every site that the data planes steer by.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use sitesteer_config::{Config, Endpoints};

use crate::observation::Failure;
use crate::state::Health;

/// What steering may do with a site, from health and operator overrides together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteState {
    /// Healthy: takes traffic by weight × score.
    Up,
    /// Suspect, slow or erroring: takes traffic only when no up site can.
    Degraded,
    /// Failing probes: takes traffic only in panic mode.
    Down,
    /// Operator drain (or failover away): no new traffic; in panic mode only.
    Drained,
    /// Operator maintenance: never takes traffic.
    Maintenance,
}

impl SiteState {
    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
            Self::Drained => "drained",
            Self::Maintenance => "maintenance",
        }
    }

    /// All states (for metrics).
    pub const ALL: [SiteState; 5] = [
        Self::Up,
        Self::Degraded,
        Self::Down,
        Self::Drained,
        Self::Maintenance,
    ];
}

/// One site in a Snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SiteView {
    /// Index in `config.sites`.
    pub id: usize,
    /// Site name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Tier (lower preferred).
    pub tier: u8,
    /// Weight from the config.
    pub configured_weight: u32,
    /// Weight after overrides (0 when drained or in maintenance).
    pub effective_weight: u32,
    /// State after overrides.
    pub state: SiteState,
    /// Health from probes and traffic alone.
    pub health: Health,
    /// Preferred by a manual failover.
    pub preferred: bool,
    /// A drill's injected fault.
    pub fault: Option<crate::overrides::Fault>,
    /// Score in [0, 1]: (1 − error rate) × latency factor.
    pub score: f64,
    /// The share of its traffic the site takes: 1, or while it warms up after coming back
    /// from down (`health.slow_start`), growing from 0.05 to 1.
    pub warm: f64,
    /// Fraction of successful probes over the window.
    pub availability: f64,
    /// Fraction of failed probes and requests over the window, counted from the moment the
    /// site last recovered from down when that is within the window.
    pub error_rate: f64,
    /// Probe latency EWMA, ms.
    pub latency_ewma_ms: f64,
    /// Probe latency p99, ms.
    pub latency_p99_ms: f64,
    /// When the state last changed.
    #[serde(serialize_with = "unix_ms")]
    pub changed_at: SystemTime,
    /// Why the site is in this state.
    pub reason: String,
    /// Real traffic made the site suspect (a connect failure, timeout or reset) a moment
    /// ago; it is `degraded` until probes or `health.suspect_hold` clear it.
    pub suspect: bool,
    /// The site's endpoints.
    #[serde(skip)]
    pub endpoints: Endpoints,
}

fn unix_ms<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}

/// Every site's state at one moment; immutable once published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Increases with every publication.
    pub version: u64,
    /// Increases with every config reload; site ids are valid within one generation.
    pub generation: u64,
    /// The config the sites come from.
    pub config: Arc<Config>,
    /// One per configured site, in config order (index = site id).
    pub sites: Vec<SiteView>,
    /// Where the data plane counts successful requests of this generation (see
    /// [`PassiveCounts`]); shared by every Snapshot of one generation.
    pub passive: Arc<PassiveCounts>,
}

impl Snapshot {
    /// Whether this Snapshot is in **panic mode**: no site is up or degraded with weight, so
    /// steering spreads traffic over every site not in maintenance (a health signal that
    /// condemns every site is more likely wrong than the sites). The one definition of panic
    /// mode: the steering decision, the `sitesteer_panic_mode` gauge, the events and the
    /// admin API all read it here.
    pub fn in_panic(&self) -> bool {
        !self.sites.iter().any(|s| {
            matches!(s.state, SiteState::Up | SiteState::Degraded) && s.effective_weight > 0
        })
    }
}

/// Passive outcomes per site, counted by the data plane with one relaxed atomic add each
/// instead of one message each. A message per successful request woke the health owner's
/// thread once per request; the owner instead folds these counts on every tick
/// (`PUBLISH_EVERY`) and before every passive failure, as passive outcomes at that moment.
/// Failures travel as [`crate::Observation`]s at once, and are counted here only when the
/// channel is full, so that none is lost. One per config generation, indexed by site id.
#[derive(Debug, Default)]
pub struct PassiveCounts {
    ok: Box<[AtomicU64]>,
    failed: Box<[[AtomicU64; FAILURE_KINDS]]>,
    /// The last HTTP status counted in the `Status` bucket of each site.
    status: Box<[AtomicU32]>,
}

/// Buckets of [`PassiveCounts::failure`]: connect, timeout, reset, status, bad answer.
const FAILURE_KINDS: usize = 5;

fn bucket(failure: Failure) -> usize {
    match failure {
        Failure::Connect => 0,
        Failure::Timeout => 1,
        Failure::Reset => 2,
        Failure::Status(_) => 3,
        Failure::BadAnswer => 4,
    }
}

impl PassiveCounts {
    /// Counters for `sites` sites.
    pub fn new(sites: usize) -> Self {
        Self {
            ok: (0..sites).map(|_| AtomicU64::new(0)).collect(),
            failed: (0..sites).map(|_| Default::default()).collect(),
            status: (0..sites).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Counts one successful request to `site` (ids out of range are ignored).
    pub fn success(&self, site: usize) {
        if let Some(c) = self.ok.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one failed request to `site` (ids out of range are ignored).
    pub fn failure(&self, site: usize, failure: Failure) {
        let Some(buckets) = self.failed.get(site) else {
            return;
        };
        if let (Failure::Status(code), Some(last)) = (failure, self.status.get(site)) {
            last.store(u32::from(code), Ordering::Relaxed);
        }
        buckets[bucket(failure)].fetch_add(1, Ordering::Relaxed);
    }

    /// The successes of `site` counted since the last call.
    pub fn take(&self, site: usize) -> u64 {
        self.ok
            .get(site)
            .map_or(0, |c| c.swap(0, Ordering::Relaxed))
    }

    /// The failures of `site` counted since the last call, by kind (a `Status` failure
    /// carries the last status counted).
    pub fn take_failures(&self, site: usize) -> impl Iterator<Item = (Failure, u64)> + '_ {
        let status = self
            .status
            .get(site)
            .map_or(0, |s| s.load(Ordering::Relaxed));
        let status = u16::try_from(status).unwrap_or(500);
        let kinds = [
            Failure::Connect,
            Failure::Timeout,
            Failure::Reset,
            Failure::Status(status),
            Failure::BadAnswer,
        ];
        self.failed.get(site).into_iter().flat_map(move |buckets| {
            kinds.into_iter().filter_map(|kind| {
                let n = buckets[bucket(kind)].swap(0, Ordering::Relaxed);
                (n > 0).then_some((kind, n))
            })
        })
    }

    /// How many sites are counted.
    pub fn len(&self) -> usize {
        self.ok.len()
    }

    /// Whether no site is counted.
    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }
}
