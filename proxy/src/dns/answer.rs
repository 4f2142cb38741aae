//! Which addresses a name answers, in which order: a pure function of the health
//! [`Snapshot`], built on [`steer::choose`](crate::steer::choose) so that DNS and the proxy
//! never disagree.
//!
//! `choose` picks sites by endpoint; DNS hands out a site's `address`. A [`View`] is the
//! snapshot re-keyed for one address family: every site keeps its state, weights and score,
//! and gets a synthetic [`EndpointKind::Http`] endpoint at its address of that family, or
//! no endpoint when it has none. Sites without an http endpoint of their own are thus still
//! answered, and sites without an address of the family are never chosen (they are
//! ineligible in `choose`, exactly like tried sites). The answer is then `choose` called
//! again and again, each pick added to `tried`: a weighted shuffle in preference order.
//! It stops at the first pick of a worse group (another tier, a non-preferred site after a
//! manual failover's preferred one, or a worse mode), so clients only get the sites the
//! proxy would use now: the lowest healthy tier, the client's region first within it; the
//! degraded sites when none is up; every site not in maintenance in panic mode.

use std::net::{IpAddr, SocketAddr};

use sitesteer_config::{EndpointKind, Endpoints};
use sitesteer_probes::{SiteView, Snapshot};

use crate::steer::{choose, Mode, RequestCtx};

/// The address family a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// A records.
    V4,
    /// AAAA records.
    V6,
}

impl Family {
    /// The record type's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "A",
            Self::V6 => "AAAA",
        }
    }

    fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// The snapshot seen through DNS: one re-keyed copy per family.
#[derive(Debug)]
pub struct View {
    /// The snapshot version it was built from.
    pub version: u64,
    /// The config generation it was built from.
    pub generation: u64,
    v4: Snapshot,
    v6: Snapshot,
}

fn rekey(snap: &Snapshot, family: Family) -> Snapshot {
    let mut out = snap.clone();
    for site in &mut out.sites {
        let address = snap
            .config
            .sites
            .get(site.id)
            .and_then(|s| s.address)
            .filter(|a| Family::of(*a) == family);
        site.endpoints = Endpoints::default();
        if let Some(a) = address {
            site.endpoints
                .set(EndpointKind::Http, SocketAddr::new(a, 0));
        }
    }
    out
}

impl View {
    /// The DNS view of `snap`.
    pub fn new(snap: &Snapshot) -> Self {
        Self {
            version: snap.version,
            generation: snap.generation,
            v4: rekey(snap, Family::V4),
            v6: rekey(snap, Family::V6),
        }
    }

    /// The re-keyed snapshot of `family`.
    pub fn family(&self, family: Family) -> &Snapshot {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// An answer: addresses in preference order, with the sites they belong to.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Answer {
    /// Why these sites (normal, degraded or panic).
    pub mode: Option<Mode>,
    /// Site ids, in answer order.
    pub sites: Vec<usize>,
    /// Their addresses, in answer order, without duplicates.
    pub addrs: Vec<IpAddr>,
}

/// Sites of one group share a tier and a mode; a group never mixes with the next.
fn group(site: &SiteView, mode: Mode) -> (Mode, u8, bool) {
    match mode {
        Mode::Panic => (mode, 0, false),
        Mode::Normal => (mode, site.tier, site.preferred),
        Mode::Degraded | Mode::Pinned => (mode, site.tier, false),
    }
}

/// SplitMix64: successive random numbers from one seed.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E9B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The answer for a client in `region`, from a family's re-keyed snapshot; `seed` drives
/// the weighted shuffle (the same seed gives the same order).
pub(super) fn answer(view: &Snapshot, region: Option<&str>, seed: u64) -> Answer {
    let mut out = Answer::default();
    answer_into(view, region, seed, &mut out);
    out
}

/// [`answer`] into `out`, reusing its buffers (the UDP path answers without allocating).
pub(super) fn answer_into(view: &Snapshot, region: Option<&str>, seed: u64, out: &mut Answer) {
    out.mode = None;
    out.sites.clear();
    out.addrs.clear();
    let mut state = seed;
    let mut req = RequestCtx::new(EndpointKind::Http, next_random(&mut state));
    req.region = region;
    let Some(first) = choose(view, &req) else {
        return;
    };
    let Some(site) = view.sites.get(first.site) else {
        return;
    };
    let key = group(site, first.mode);
    out.mode = Some(first.mode);
    let mut pick = Some(first);
    // At most one pick per site: every pick is added to `tried`.
    for _ in 0..view.sites.len() {
        let Some(c) = pick else { break };
        match view.sites.get(c.site) {
            Some(site) if group(site, c.mode) == key => {}
            _ => break,
        }
        out.sites.push(c.site);
        if !out.addrs.contains(&c.addr.ip()) {
            out.addrs.push(c.addr.ip());
        }
        req.tried.push(c.site);
        if req.tried.len() >= view.sites.len() {
            // Every site is tried: `choose` has nothing left.
            break;
        }
        req.random = next_random(&mut state);
        pick = choose(view, &req);
    }
}

/// The set of sites answered (sorted ids) and why, whatever the client and the shuffle:
/// what an answer-set change event compares.
pub(super) fn answer_set(view: &Snapshot) -> (Option<Mode>, Vec<usize>) {
    let mut a = answer(view, None, 0);
    a.sites.sort_unstable();
    (a.mode, a.sites)
}
