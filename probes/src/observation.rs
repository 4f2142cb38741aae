//! Observations: what a probe or a proxied request saw of a site. They flow one way, from
//! probes and the data plane into the health table's owner. A leaf: the Snapshot's counters
//! and the data plane's [`PassiveReporter`](crate::PassiveReporter) build on it.

use std::time::Duration;

use tokio::time::Instant;

/// Index of a site in the running config's `sites` (and in every Snapshot of it).
pub type SiteId = usize;

/// Where an observation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The active probe with this index in `Config::probes`.
    Probe(usize),
    /// Real traffic through the proxy.
    Passive,
}

/// Why something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection was refused or could not be made.
    Connect,
    /// No answer within the timeout.
    Timeout,
    /// The connection was reset or closed before a full answer.
    Reset,
    /// An HTTP status outside the accepted range (5xx for real traffic).
    Status(u16),
    /// The answer arrived but was wrong (bad JSON-RPC, missing body text, ...).
    BadAnswer,
}

impl Failure {
    /// A short, stable name used in reasons and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect failed",
            Self::Timeout => "timeout",
            Self::Reset => "connection reset",
            Self::Status(_) => "bad status",
            Self::BadAnswer => "bad answer",
        }
    }
}

/// One thing seen about one site.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The site observed.
    pub site: SiteId,
    /// The config generation the site index refers to; stale generations are ignored.
    pub generation: u64,
    /// Probe or real traffic.
    pub source: Source,
    /// `Ok(latency)` or the failure.
    pub outcome: Result<Duration, Failure>,
    /// When it was seen.
    pub at: Instant,
    /// Extra words for the reason of a state change (e.g. the JSON-RPC error).
    pub detail: Option<String>,
}

impl Observation {
    /// What probe `probe` (its index in `Config::probes`) saw of `site` just now.
    pub fn probe(
        site: SiteId,
        generation: u64,
        probe: usize,
        outcome: Result<Duration, Failure>,
        detail: Option<String>,
    ) -> Self {
        Self {
            site,
            generation,
            source: Source::Probe(probe),
            outcome,
            at: Instant::now(),
            detail,
        }
    }

    /// What real traffic saw of `site` at `at`.
    pub fn passive(
        site: SiteId,
        generation: u64,
        outcome: Result<Duration, Failure>,
        at: Instant,
    ) -> Self {
        Self {
            site,
            generation,
            source: Source::Passive,
            outcome,
            at,
            detail: None,
        }
    }
}
