//! Tests of the load-aware choice (`p2c.rs`) against a model: `choose`'s rules over the
//! sites not at their cap, and power of two choices over cost within the winning rank.

use proptest::prelude::*;
use sitesteer_config::EndpointKind;
use sitesteer_probes::Snapshot;

use super::choose::rank;
use super::tests::{snapshot, varied, SiteSpec};
use super::*;

const HTTP: EndpointKind = EndpointKind::Http;

fn idle(latency: f64) -> Load {
    Load {
        latency,
        ..Load::default()
    }
}

/// How often each site is chosen over `n` spread random draws.
fn shares(snap: &Snapshot, loads: &[Load], n: u64) -> Vec<u64> {
    let mut out = vec![0; snap.sites.len()];
    for i in 0..n {
        let req = RequestCtx::new(HTTP, i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if let Loaded::Site(c) = choose_loaded(snap, &req, loads) {
            out[c.site] += 1;
        }
    }
    out
}

#[test]
fn with_equal_costs_the_shares_follow_the_weights() {
    let snap = snapshot(&[(0, 100, "a"), (0, 300, "a"), (1, 100, "a")]);
    let loads = [idle(0.01); 3];
    let c = shares(&snap, &loads, 4000);
    assert_eq!(c[2], 0, "{c:?}");
    assert!((900..1100).contains(&c[0]), "{c:?}");
    assert!((2900..3100).contains(&c[1]), "{c:?}");
}

#[test]
fn a_slow_or_busy_site_gets_less_than_its_weight_share() {
    let snap = snapshot(&[(0, 100, "a"), (0, 100, "a"), (0, 100, "a")]);
    let slow = [idle(0.01), idle(0.06), idle(0.01)];
    let c = shares(&snap, &slow, 3000);
    assert!(
        c[1] < 300,
        "the slow site should lose every draw it is in: {c:?}"
    );
    let busy = [
        idle(0.01),
        Load {
            in_flight: 20,
            ..idle(0.01)
        },
        idle(0.01),
    ];
    let c = shares(&snap, &busy, 3000);
    assert!(c[1] < 300, "{c:?}");
    // Open streams weigh too, less than requests in flight.
    let streaming = [
        idle(0.01),
        Load {
            streams: 40,
            ..idle(0.01)
        },
        idle(0.01),
    ];
    assert!(shares(&snap, &streaming, 3000)[1] < 300);
}

#[test]
fn a_cheap_site_of_tiny_weight_is_a_candidate_only_a_few_times_its_weight_share() {
    // b is never timed (the cheapest cost there is), a carries all the work: b may win only
    // when drawn, at most REDRAWS + 1 times its 0.1% weight share.
    let snap = snapshot(&[(0, 1000, "a"), (0, 1, "a")]);
    let loads = [
        Load {
            in_flight: 5,
            ..idle(0.01)
        },
        Load::default(),
    ];
    let c = shares(&snap, &loads, 20_000);
    let bound = 20_000 * (REDRAWS as u64 + 1) / 1001 + 20;
    assert!(c[1] > 0 && c[1] <= bound, "{c:?}, bound {bound}");
}

#[test]
fn a_site_at_its_cap_passes_the_request_to_the_next_then_the_queue() {
    let snap = snapshot(&[(0, 100, "a"), (0, 100, "a"), (1, 100, "a")]);
    let full = |n| Load {
        in_flight: n,
        cap: Some(2),
        ..idle(0.01)
    };
    let c = shares(&snap, &[full(2), full(1), full(0)], 1000);
    assert_eq!(c, vec![0, 1000, 0]);
    // The whole tier at its cap: the next tier.
    let c = shares(&snap, &[full(2), full(2), full(0)], 1000);
    assert_eq!(c, vec![0, 0, 1000]);
    let req = RequestCtx::new(HTTP, 7);
    assert_eq!(
        choose_loaded(&snap, &req, &[full(2), full(3), full(2)][..]),
        Loaded::Full
    );
    // No site has the endpoint: not full, unroutable.
    let ws = RequestCtx::new(EndpointKind::Ws, 7);
    assert_eq!(
        choose_loaded(&snap, &ws, &[full(2), full(3), full(2)][..]),
        Loaded::None
    );
}

#[test]
fn a_pinned_request_goes_to_its_site_whatever_its_load() {
    let snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    let loads = [
        Load {
            in_flight: 9,
            cap: Some(1),
            ..idle(1.0)
        },
        idle(0.001),
    ];
    let mut req = RequestCtx::new(HTTP, 1);
    req.pinned = Some(0);
    assert!(matches!(choose_loaded(&snap, &req, &loads[..]), Loaded::Site(c) if c.site == 0));
}

type LoadSpec = (u32, u32, f64, Option<u32>);

fn sites() -> impl Strategy<Value = Vec<SiteSpec>> {
    prop::collection::vec(
        (
            0u8..3,
            0u32..400,
            0u8..5,
            0.0f64..1.0,
            any::<bool>(),
            any::<bool>(),
        ),
        1..10,
    )
}

fn loads(n: usize) -> impl Strategy<Value = Vec<LoadSpec>> {
    prop::collection::vec(
        (0u32..6, 0u32..6, 0.0f64..0.2, prop::option::of(1u32..5)),
        n..=n,
    )
}

proptest! {
    /// The model: the site chosen is one `choose` could choose with the sites at their cap
    /// left out (same rank, never outside the tier and region rules), never a site at its
    /// cap while another is open, and of the two drawn never the costlier.
    #[test]
    fn the_choice_keeps_the_rules_and_never_picks_a_full_site_when_one_is_open(
        sites in sites(),
        spec in loads(10),
        randoms in prop::collection::vec(any::<u64>(), 1..30),
        tried in prop::option::of(0usize..10),
        region in prop::option::of(0u8..2),
    ) {
        let snap = varied(&sites);
        let loads: Vec<Load> = spec
            .iter()
            .map(|l| Load { in_flight: l.0, streams: l.1, latency: l.2, cap: l.3 })
            .collect();
        for random in randoms {
            let mut req = RequestCtx::new(HTTP, random);
            if let Some(t) = tried {
                req.tried.push(t);
            }
            req.region = region.map(|r| if r == 0 { "a" } else { "b" });
            let mut open = req;
            for (id, l) in loads.iter().enumerate().take(snap.sites.len()) {
                if l.at_cap() {
                    open.tried.push(id);
                }
            }
            let model = choose(&snap, &open);
            match choose_loaded(&snap, &req, &loads[..]) {
                Loaded::Site(c) => {
                    let m = model.expect("the model finds a site too");
                    prop_assert!(!loads[c.site].at_cap());
                    prop_assert!(!req.tried.contains(c.site));
                    prop_assert_eq!(
                        rank(&snap.sites[c.site], req.region),
                        rank(&snap.sites[m.site], req.region)
                    );
                    prop_assert_eq!(c.mode, m.mode);
                    // The model's pick is the first of the two draws: never cheaper.
                    prop_assert!(loads[c.site].cost() <= loads[m.site].cost());
                }
                Loaded::Full => {
                    prop_assert!(model.is_none());
                    prop_assert!(choose(&snap, &req).is_some());
                }
                Loaded::None => prop_assert!(choose(&snap, &req).is_none()),
            }
        }
    }

    /// The indexed path answers as the plain one (no caps: the index is for uncapped tiers).
    #[test]
    fn the_index_answers_like_the_plain_choice(
        sites in sites(),
        spec in loads(10),
        randoms in prop::collection::vec(any::<u64>(), 1..30),
    ) {
        let snap = varied(&sites);
        let loads: Vec<Load> = spec
            .iter()
            .map(|l| Load { in_flight: l.0, streams: l.1, latency: l.2, cap: None })
            .collect();
        let index = Index::new(&snap);
        for random in randoms {
            let req = RequestCtx::new(HTTP, random);
            prop_assert_eq!(
                choose_loaded_indexed(&index, &snap, &req, &loads[..]),
                choose_loaded(&snap, &req, &loads[..])
            );
        }
    }
}
