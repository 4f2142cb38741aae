//! The load-aware decision of the HTTP and TCP data planes: [`choose`](super::choose)'s rules
//! (pinning, manual failover, tier, region, weight × score, degraded and panic fallbacks),
//! with two changes, still a pure function of the Snapshot, the request and the sites'
//! [`Load`]s read at one instant:
//!
//! - A site at its cap (`[[site]] max_in_flight`) is passed over as if it had no endpoint,
//!   so the request goes to the next site of the tier, else the next tier; when every site
//!   that could take it is at its cap, the answer is [`Loaded::Full`] (the caller queues).
//!   A pinned request (an MCP session) is never moved for load: it goes to its site.
//! - Within the winning rank, **power of two choices**: two sites are drawn by weighted
//!   random over `weight × score × warm` (as `choose` draws one), and the one with the
//!   lower [`Load::cost`] (peak-EWMA latency × (in flight + streams × 0.25 + 1)) wins; on a
//!   tie, the first. The second draw is independent of the first, and made again (at most
//!   [`REDRAWS`] times in all) while it lands on the first site: so a site's chance to be a
//!   candidate is at most `REDRAWS + 1` times its weight share (a site of weight 1 beside
//!   one of 1000 is not compared in every decision, as drawing two different sites would
//!   make it), while a costlier site of `n` equal ones is still chosen only when every
//!   draw lands on it (`(1/n)^(REDRAWS + 1)`: 6.25% of two, 1.2% of three). With equal
//!   costs the shares are exactly `choose`'s.

use sitesteer_probes::{SiteView, Snapshot};

use super::choose::{mode_of, rank, share, unit};
use super::load::SiteLoads;
use super::{Choice, Index, RequestCtx};

/// How many times the second candidate is drawn while it lands on the first.
pub const REDRAWS: usize = 3;

/// The load-aware decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// This site.
    Site(Choice),
    /// Every site that could take the request is at its cap.
    Full,
    /// No site can take the request.
    None,
}

/// [`choose_loaded`] through `index` (the precomputed draws of [`Index`]) for the common
/// request: two binary searches instead of passes over every site. The same answer, but
/// for rounding at the boundary between two sites' shares (a property test checks it).
pub fn choose_loaded_indexed(
    index: &Index,
    snapshot: &Snapshot,
    req: &RequestCtx<'_>,
    loads: &(impl SiteLoads + ?Sized),
) -> Loaded {
    match index.pair(snapshot, req, &seconds(req.random)) {
        None => choose_loaded(snapshot, req, loads),
        Some(None) => Loaded::None,
        Some(Some((first, second))) => Loaded::Site(match second {
            Some(second) if second_wins(snapshot, loads, first.site, second.site) => second,
            _ => first,
        }),
    }
}

/// Chooses the site for `req` by the rules of [`choose`](super::choose) and the loads in
/// `loads` (see the module doc).
pub fn choose_loaded(
    snapshot: &Snapshot,
    req: &RequestCtx<'_>,
    loads: &(impl SiteLoads + ?Sized),
) -> Loaded {
    if req.pinned.is_some() {
        return match super::choose(snapshot, req) {
            Some(c) => Loaded::Site(c),
            None => Loaded::None,
        };
    }
    let eligible = |s: &&SiteView| s.endpoints.get(req.kind).is_some() && !req.tried.contains(s.id);
    let open = |s: &&SiteView| !loads.at_cap(s.id);
    let Some(best) = snapshot
        .sites
        .iter()
        .filter(eligible)
        .filter(open)
        .filter_map(|s| rank(s, req.region))
        .min()
    else {
        let any = snapshot
            .sites
            .iter()
            .filter(eligible)
            .any(|s| rank(s, req.region).is_some());
        return if any { Loaded::Full } else { Loaded::None };
    };
    let candidates = || {
        snapshot
            .sites
            .iter()
            .filter(eligible)
            .filter(move |s| rank(s, req.region) == Some(best))
            .filter(open)
    };
    let total: f64 = candidates().map(|s| share(s, best.0)).sum();
    let Some(first) = draw(candidates(), best.0, unit(req.random) * total) else {
        return Loaded::None;
    };
    let second = seconds(req.random)
        .into_iter()
        .filter_map(|r| draw(candidates(), best.0, unit(r) * total))
        .find(|s| s.id != first.id);
    let site = match second {
        Some(second) if second_wins(snapshot, loads, first.id, second.id) => second,
        _ => first,
    };
    match site.endpoints.get(req.kind) {
        Some(addr) => Loaded::Site(Choice {
            site: site.id,
            addr,
            mode: mode_of(best.0),
        }),
        None => Loaded::None,
    }
}

/// How much cheaper the second candidate must be to take the request from the first. Sites
/// whose costs are within this factor share by weight, as without load, so that the noise of
/// a latency estimate (one slower answer raises a peak EWMA at once) does not pile the
/// traffic of several equal sites onto one of them.
pub(super) const MARGIN: f64 = 1.5;

/// Whether the second candidate takes the request from the first: its cost under the
/// first's by more than [`MARGIN`]. While either site is in slow start (warm under 1) there
/// is no comparison and the first, weighted draw stands, so that a site warming up after a
/// recovery gets exactly the share its ramp gives it: neither more (idle, it would win every
/// comparison) nor less.
fn second_wins(
    snapshot: &Snapshot,
    loads: &(impl SiteLoads + ?Sized),
    first: usize,
    second: usize,
) -> bool {
    let warming = |id: usize| snapshot.sites.get(id).is_some_and(|s| s.warm < 1.0);
    if warming(first) || warming(second) {
        return false;
    }
    loads.load(second).cost() * MARGIN < loads.load(first).cost()
}

/// The site where `point` falls among the shares of `sites`; the last one when rounding
/// leaves the point past the end.
fn draw<'a>(
    sites: impl Iterator<Item = &'a SiteView>,
    class: super::choose::Class,
    mut point: f64,
) -> Option<&'a SiteView> {
    let mut last = None;
    for site in sites {
        last = Some(site);
        point -= share(site, class);
        if point < 0.0 {
            break;
        }
    }
    last
}

/// The random numbers of the second candidate's draws, derived from the request's, so that
/// the decision stays a function of the request.
fn seconds(random: u64) -> [u64; REDRAWS] {
    let mut out = [0; REDRAWS];
    let mut r = random;
    for slot in &mut out {
        r = mix(r);
        *slot = r;
    }
    out
}

/// splitmix64's step: another well-spread number from `random`.
fn mix(random: u64) -> u64 {
    let mut z = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
