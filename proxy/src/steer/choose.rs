//! The steering decision: which site serves a request. A pure function of the published
//! [`Snapshot`] and a [`RequestCtx`]; no I/O, no clock, no allocation. The HTTP and TCP data
//! planes reach it through [`super::Attempts`] (by way of the [`Index`] built once per
//! published Snapshot), and DNS calls [`choose`] itself, so they never disagree.
//!
//! The rules, in order:
//! 1. A pinned request (an MCP session) goes to its site while that site is up, degraded or
//!    drained; otherwise it is not served ([`choose`] returns `None` for it).
//! 2. Sites preferred by a manual failover win while up.
//! 3. Otherwise the lowest tier with an up site that has weight wins; its sites share
//!    traffic by `effective weight × score × warm` (`warm` is the slow-start share of a site
//!    that just came back), preferring the client's region when one of them is in it.
//! 4. With no up site, degraded sites serve, by the same rules.
//! 5. With neither, **panic mode**: every site not in maintenance serves, by configured
//!    weight, so that a wrong health signal never takes the whole service down.

use std::net::SocketAddr;

use sitesteer_config::EndpointKind;
use sitesteer_probes::{SiteState, SiteView, Snapshot};

/// Sites already tried for one request: a fixed bitset, no allocation. Site ids at or
/// above [`Tried::CAP`] cannot be marked (the config allows at most that many sites).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tried {
    bits: [u64; Tried::WORDS],
    len: usize,
}

impl Tried {
    const WORDS: usize = 4;
    /// Site ids below this can be marked.
    pub const CAP: usize = Self::WORDS * 64;

    /// Marks `site` as tried.
    pub fn push(&mut self, site: usize) {
        if site < Self::CAP && !self.contains(site) {
            self.bits[site / 64] |= 1 << (site % 64);
            self.len += 1;
        }
    }

    /// Whether `site` was tried.
    pub fn contains(&self, site: usize) -> bool {
        site < Self::CAP && self.bits[site / 64] & (1 << (site % 64)) != 0
    }

    /// How many were tried.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none were tried.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What steering knows about a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestCtx<'a> {
    /// The endpoint kind the request needs.
    pub kind: EndpointKind,
    /// A random number; the same number gives the same choice.
    pub random: u64,
    /// Sites to avoid (already failed for this request).
    pub tried: Tried,
    /// The client's region, when known.
    pub region: Option<&'a str>,
    /// The site an MCP session is bound to.
    pub pinned: Option<usize>,
}

impl<'a> RequestCtx<'a> {
    /// A request for `kind` with randomness `random` and nothing else known.
    pub fn new(kind: EndpointKind, random: u64) -> Self {
        Self {
            kind,
            random,
            tried: Tried::default(),
            region: None,
            pinned: None,
        }
    }
}

/// Why the chosen site was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A healthy site by tier, weight and score.
    Normal,
    /// The MCP session's own site.
    Pinned,
    /// No up site: a degraded one.
    Degraded,
    /// No up or degraded site: any site not in maintenance.
    Panic,
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Site id (index in the snapshot).
    pub site: usize,
    /// The endpoint to connect to.
    pub addr: SocketAddr,
    /// Why.
    pub mode: Mode,
}

/// Preference classes, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Class {
    Preferred,
    Up,
    Degraded,
    Panic,
}

fn class(site: &SiteView) -> Option<Class> {
    match site.state {
        SiteState::Up if site.preferred && site.effective_weight > 0 => Some(Class::Preferred),
        SiteState::Up if site.effective_weight > 0 => Some(Class::Up),
        SiteState::Degraded if site.effective_weight > 0 => Some(Class::Degraded),
        SiteState::Maintenance => None,
        _ => Some(Class::Panic),
    }
}

/// The rank of a candidate: class, then tier (ignored in panic), then region match.
pub(super) fn rank(site: &SiteView, region: Option<&str>) -> Option<(Class, u8, bool)> {
    let class = class(site)?;
    let tier = if class == Class::Panic { 0 } else { site.tier };
    let far = region.is_some_and(|r| r != site.region);
    Some((class, tier, far))
}

pub(super) fn share(site: &SiteView, class: Class) -> f64 {
    match class {
        Class::Panic => f64::from(site.configured_weight.max(1)),
        _ => f64::from(site.effective_weight) * site.score.max(0.001) * site.warm.max(0.001),
    }
}

/// Whether a site in `state` still serves the sessions and streams it holds.
pub fn serves_pinned(state: SiteState) -> bool {
    matches!(
        state,
        SiteState::Up | SiteState::Degraded | SiteState::Drained
    )
}

/// Chooses the site for a request; `None` when no site can take it.
pub fn choose(snapshot: &Snapshot, req: &RequestCtx<'_>) -> Option<Choice> {
    if let Some(pinned) = req.pinned {
        let site = snapshot.sites.get(pinned)?;
        if !serves_pinned(site.state) || req.tried.contains(pinned) {
            return None;
        }
        let addr = site.endpoints.get(req.kind)?;
        return Some(Choice {
            site: pinned,
            addr,
            mode: Mode::Pinned,
        });
    }

    // Pass 1: the best rank among eligible sites.
    let eligible = |s: &&SiteView| s.endpoints.get(req.kind).is_some() && !req.tried.contains(s.id);
    let best = snapshot
        .sites
        .iter()
        .filter(eligible)
        .filter_map(|s| rank(s, req.region))
        .min()?;

    // Pass 2: total share of the sites of that rank.
    let in_best = |s: &&SiteView| rank(s, req.region) == Some(best);
    let total: f64 = snapshot
        .sites
        .iter()
        .filter(eligible)
        .filter(in_best)
        .map(|s| share(s, best.0))
        .sum();

    // Pass 3: weighted pick.
    let mut point = (req.random >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut last = None;
    for site in snapshot.sites.iter().filter(eligible).filter(in_best) {
        last = Some(site);
        point -= share(site, best.0);
        if point < 0.0 {
            break;
        }
    }
    let site = last?;
    Some(Choice {
        site: site.id,
        addr: site.endpoints.get(req.kind)?,
        mode: mode_of(best.0),
    })
}

/// [`choose`]'s answers for one published Snapshot, precomputed for the common request: no
/// site tried yet, no client region, no session. For each endpoint kind it keeps the sites of
/// the best rank with their cumulative shares, so a decision is a binary search instead of
/// three passes over every site (64 sites: ~600 ns → ~20 ns; see BENCHMARKS.md). Any other
/// request, or another Snapshot, is answered by [`choose`] itself, so the two never disagree
/// (a property test checks it; they could differ only when the random point falls within
/// rounding of a boundary between two sites' shares).
///
/// Snapshots are immutable once published: one `Index` is built per published Snapshot, when
/// it is published ([`super::Published`]); `version` and `generation` identify it.
#[derive(Clone, Debug)]
pub struct Index {
    version: u64,
    generation: u64,
    kinds: [Option<KindIndex>; EndpointKind::ALL.len()],
}

#[derive(Clone, Debug)]
struct KindIndex {
    mode: Mode,
    total: f64,
    /// Inclusive running sums of the shares, in site order.
    cumulative: Vec<f64>,
    sites: Vec<(usize, SocketAddr)>,
    /// A site of this rank has a `max_in_flight`: the load-aware choice must look at every
    /// site's load, not only at two.
    capped: bool,
}

impl Index {
    /// The index of `snapshot`.
    pub fn new(snapshot: &Snapshot) -> Self {
        let kinds = EndpointKind::ALL.map(|kind| {
            let candidates = || {
                snapshot
                    .sites
                    .iter()
                    .filter(move |s| s.endpoints.get(kind).is_some())
            };
            let best = candidates().filter_map(|s| rank(s, None)).min()?;
            let in_best: Vec<&SiteView> = candidates()
                .filter(|s| rank(s, None) == Some(best))
                .collect();
            // The same additions in the same order as `choose`.
            let total: f64 = in_best.iter().map(|s| share(s, best.0)).sum();
            let mut running = 0.0;
            let cumulative = in_best
                .iter()
                .map(|s| {
                    running += share(s, best.0);
                    running
                })
                .collect();
            let sites = in_best
                .iter()
                .filter_map(|s| Some((s.id, s.endpoints.get(kind)?)))
                .collect();
            let capped = in_best.iter().any(|s| {
                snapshot
                    .config
                    .sites
                    .get(s.id)
                    .is_none_or(|c| c.max_in_flight.is_some())
            });
            Some(KindIndex {
                mode: mode_of(best.0),
                total,
                cumulative,
                sites,
                capped,
            })
        });
        Self {
            version: snapshot.version,
            generation: snapshot.generation,
            kinds,
        }
    }

    /// Whether this is the index of `snapshot`.
    pub fn is_for(&self, snapshot: &Snapshot) -> bool {
        self.version == snapshot.version && self.generation == snapshot.generation
    }

    /// The same answer as [`choose`]`(snapshot, req)`.
    pub fn choose(&self, snapshot: &Snapshot, req: &RequestCtx<'_>) -> Option<Choice> {
        if req.pinned.is_some()
            || req.region.is_some()
            || !req.tried.is_empty()
            || !self.is_for(snapshot)
        {
            return choose(snapshot, req);
        }
        let k = self.kinds[req.kind.index()].as_ref()?;
        let point = (req.random >> 11) as f64 / (1u64 << 53) as f64 * k.total;
        // `choose` subtracts shares in order and stops where the point goes below zero: the
        // first site whose running sum exceeds the point (the last one if rounding leaves none).
        let at = k
            .cumulative
            .partition_point(|c| *c <= point)
            .min(k.sites.len().checked_sub(1)?);
        let (site, addr) = k.sites[at];
        Some(Choice {
            site,
            addr,
            mode: k.mode,
        })
    }
}

impl Index {
    /// The two candidates of the load-aware choice ([`super::choose_loaded`]) for the
    /// common request, when no site of the winning rank has a cap: the first drawn by the
    /// request's random number (the same as [`Index::choose`]), the second by the first of
    /// `seconds` that lands on another site (`None` when none does). `None` when the request
    /// or the Snapshot is not the common one; `Some(None)` when no site can take it.
    pub(super) fn pair(
        &self,
        snapshot: &Snapshot,
        req: &RequestCtx<'_>,
        seconds: &[u64],
    ) -> Option<Option<(Choice, Option<Choice>)>> {
        if req.pinned.is_some()
            || req.region.is_some()
            || !req.tried.is_empty()
            || !self.is_for(snapshot)
        {
            return None;
        }
        let Some(k) = self.kinds[req.kind.index()].as_ref() else {
            return Some(None);
        };
        if k.capped {
            return None;
        }
        let last = k.sites.len().checked_sub(1)?;
        let at = |random: u64| {
            let point = unit(random) * k.total;
            k.cumulative.partition_point(|c| *c <= point).min(last)
        };
        let choice = |i: usize| Choice {
            site: k.sites[i].0,
            addr: k.sites[i].1,
            mode: k.mode,
        };
        let a = at(req.random);
        let b = seconds.iter().map(|r| at(*r)).find(|b| *b != a);
        Some(Some((choice(a), b.map(choice))))
    }
}

/// `random` as a number in [0, 1), from its top 53 bits.
pub(super) fn unit(random: u64) -> f64 {
    (random >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) fn mode_of(class: Class) -> Mode {
    match class {
        Class::Preferred | Class::Up => Mode::Normal,
        Class::Degraded => Mode::Degraded,
        Class::Panic => Mode::Panic,
    }
}
