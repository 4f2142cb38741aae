//! Operator intent as data: per-site weight, drain, maintenance and failover overrides.
//! They are persisted by the proxy and merged into every Snapshot by the health table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A fault injected by a drill, through sitesteer only (the site itself is not touched).
/// `Hang`, `Drop`, `Slow` and `Errors` act in the path to the site, where a real failure
/// would, and must be detected like one ([`crate::in_path`]); `KillProbe` and `Blackhole`
/// tell the health table and the data plane directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Every connection sitesteer makes to the site (probes and traffic) goes to a listener
    /// that accepts and never answers, as a hung site does: detected by probe timeouts,
    /// hedged and rescued like a real hang.
    Hang,
    /// New connections to the site time out, as when its packets are dropped.
    Drop,
    /// The site's answers come [`crate::SLOW_DELAY`] late.
    Slow,
    /// Every request to the site is answered HTTP 500 with a JSON-RPC error.
    Errors,
    /// Every probe of the site reports failure; the state machine takes it down as it would
    /// a real outage (detection by probes).
    KillProbe,
    /// The site is unreachable for sitesteer: probes fail and the data plane's connects fail
    /// at once (detection by passive signals, retried on other sites).
    Blackhole,
}

/// Fields written by another sitesteer version that this one does not know: kept as they
/// were and written back, so a rollback or a mixed-version fleet never refuses or loses a
/// newer version's state.
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

/// What an operator set for one site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiteOverride {
    /// Weight set at runtime, replacing the configured one.
    pub weight: Option<u32>,
    /// No new traffic; open connections finish within the drain timeout.
    pub drained: bool,
    /// Out entirely; open connections are closed.
    pub maintenance: bool,
    /// Taken out by a manual failover.
    pub failed_over: bool,
    /// Preferred by a manual failover: steered to before any tier.
    pub preferred: bool,
    /// A drill's injected fault.
    pub fault: Option<Fault>,
    /// Fields of another version, kept.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

impl SiteOverride {
    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Every site's overrides, by site name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    /// By site name; sites without an entry have no override.
    pub sites: BTreeMap<String, SiteOverride>,
    /// Fields of another version, kept.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

impl Overrides {
    /// The override of `site`, if any.
    pub fn get(&self, site: &str) -> Option<&SiteOverride> {
        self.sites.get(site)
    }

    /// The override of `site`, created empty when missing.
    pub fn entry(&mut self, site: &str) -> &mut SiteOverride {
        self.sites.entry(site.to_string()).or_default()
    }

    /// The dotted paths of the fields this version does not know (`sites.a.paused`), for a
    /// warning.
    pub fn unknown_fields(&self) -> Vec<String> {
        let top = self.unknown.keys().cloned();
        let per_site = self.sites.iter().flat_map(|(name, o)| {
            o.unknown
                .keys()
                .map(move |key| format!("sites.{name}.{key}"))
        });
        top.chain(per_site).collect()
    }

    /// Drops empty entries.
    pub fn compact(&mut self) {
        self.sites.retain(|_, o| !o.is_empty());
    }
}
