//! Unit tests of the steering rules.

use std::path::Path;
use std::sync::Arc;

use sitesteer_config::EndpointKind;
use sitesteer_probes::{HealthTable, Overrides, SiteState, Snapshot};

use super::*;

/// A snapshot of `sites` given as (tier, weight, region); every site up with score 1.
pub(super) fn snapshot(sites: &[(u8, u32, &str)]) -> Snapshot {
    let mut text = String::new();
    for (i, (tier, weight, region)) in sites.iter().enumerate() {
        text.push_str(&format!(
            "[[site]]\nname = \"s{i}\"\ntier = {tier}\nweight = {weight}\nregion = \"{region}\"\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n",
            10000 + i
        ));
    }
    let config = sitesteer_config::parse(&text, "test", Path::new(".")).expect("test config");
    let mut table = HealthTable::new(
        Arc::new(config),
        Overrides::default(),
        tokio::time::Instant::now(),
    );
    let mut snap = table.snapshot(tokio::time::Instant::now());
    for s in &mut snap.sites {
        s.score = 1.0;
    }
    snap
}

fn counts(snap: &Snapshot, req: RequestCtx<'_>, n: u64) -> Vec<u64> {
    let mut out = vec![0; snap.sites.len()];
    for i in 0..n {
        let r = RequestCtx {
            random: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ..req
        };
        if let Some(c) = choose(snap, &r) {
            out[c.site] += 1;
        }
    }
    out
}

const HTTP: EndpointKind = EndpointKind::Http;

#[test]
fn the_lowest_tier_with_an_up_site_wins_and_shares_by_weight() {
    let snap = snapshot(&[(0, 100, "a"), (0, 300, "a"), (1, 100, "a")]);
    let c = counts(&snap, RequestCtx::new(HTTP, 0), 4000);
    assert_eq!(c[2], 0);
    assert!((900..1100).contains(&c[0]), "{c:?}");
    assert!((2900..3100).contains(&c[1]), "{c:?}");
}

#[test]
fn score_scales_the_share() {
    let mut snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    snap.sites[1].score = 0.25;
    let c = counts(&snap, RequestCtx::new(HTTP, 0), 5000);
    assert!((3800..4200).contains(&c[0]), "{c:?}");
}

#[test]
fn a_warming_site_takes_its_slow_start_share() {
    let mut snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    snap.sites[1].warm = 0.25;
    let c = counts(&snap, RequestCtx::new(HTTP, 0), 5000);
    assert!((3800..4200).contains(&c[0]), "{c:?}");
    // The decision index built at publication follows it too.
    let index = Index::new(&snap);
    let mut picked = [0u64; 2];
    for i in 0..5000u64 {
        let r = RequestCtx {
            random: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ..RequestCtx::new(HTTP, 0)
        };
        if let Some(c) = index.choose(&snap, &r) {
            picked[c.site] += 1;
        }
    }
    assert!((3800..4200).contains(&picked[0]), "{picked:?}");
}

#[test]
fn down_sites_move_traffic_to_the_next_tier() {
    let mut snap = snapshot(&[(0, 100, "a"), (0, 100, "a"), (1, 100, "a")]);
    snap.sites[0].state = SiteState::Down;
    let c = counts(&snap, RequestCtx::new(HTTP, 0), 1000);
    assert_eq!(c, vec![0, 1000, 0]);
    snap.sites[1].state = SiteState::Down;
    let c = counts(&snap, RequestCtx::new(HTTP, 0), 1000);
    assert_eq!(c, vec![0, 0, 1000]);
}

#[test]
fn degraded_sites_serve_only_when_no_up_site_can() {
    let mut snap = snapshot(&[(0, 100, "a"), (1, 100, "a")]);
    snap.sites[0].state = SiteState::Degraded;
    assert_eq!(
        choose(&snap, &RequestCtx::new(HTTP, 7)).map(|c| c.site),
        Some(1)
    );
    snap.sites[1].effective_weight = 0;
    let c = choose(&snap, &RequestCtx::new(HTTP, 7)).unwrap();
    assert_eq!((c.site, c.mode), (0, Mode::Degraded));
}

#[test]
fn panic_mode_spreads_over_every_site_not_in_maintenance() {
    let mut snap = snapshot(&[(0, 100, "a"), (1, 100, "a"), (2, 100, "a")]);
    snap.sites[0].state = SiteState::Down;
    snap.sites[1].state = SiteState::Drained;
    snap.sites[1].effective_weight = 0;
    snap.sites[2].state = SiteState::Maintenance;
    snap.sites[2].effective_weight = 0;
    let c = counts(&snap, RequestCtx::new(HTTP, 0), 1000);
    assert_eq!(c[2], 0);
    assert!(c[0] > 400 && c[1] > 400, "{c:?}");
    assert_eq!(
        choose(&snap, &RequestCtx::new(HTTP, 1)).unwrap().mode,
        Mode::Panic
    );
    snap.sites[0].state = SiteState::Maintenance;
    snap.sites[1].state = SiteState::Maintenance;
    assert_eq!(choose(&snap, &RequestCtx::new(HTTP, 1)), None);
}

#[test]
fn weight_zero_takes_a_site_out() {
    let mut snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    snap.sites[0].effective_weight = 0;
    assert_eq!(counts(&snap, RequestCtx::new(HTTP, 0), 500), vec![0, 500]);
}

#[test]
fn tried_sites_are_skipped() {
    let snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    let mut req = RequestCtx::new(HTTP, 0);
    req.tried.push(0);
    assert_eq!(counts(&snap, req, 300), vec![0, 300]);
    req.tried.push(1);
    assert_eq!(choose(&snap, &req), None);
}

#[test]
fn the_client_region_is_preferred_within_a_tier() {
    let mut snap = snapshot(&[(0, 100, "eu"), (0, 100, "us"), (1, 100, "ap")]);
    let mut req = RequestCtx::new(HTTP, 0);
    req.region = Some("us");
    assert_eq!(counts(&snap, req, 300), vec![0, 300, 0]);
    req.region = Some("ap");
    assert_eq!(counts(&snap, req, 300)[2], 0, "the tier still comes first");
    snap.sites[1].state = SiteState::Down;
    req.region = Some("us");
    assert_eq!(
        counts(&snap, req, 300),
        vec![300, 0, 0],
        "falls back to other regions"
    );
}

#[test]
fn a_failover_preference_beats_tiers() {
    let mut snap = snapshot(&[(0, 100, "a"), (1, 100, "a")]);
    snap.sites[1].preferred = true;
    assert_eq!(counts(&snap, RequestCtx::new(HTTP, 0), 100), vec![0, 100]);
}

#[test]
fn pinned_requests_stay_on_their_site_while_it_lives() {
    let mut snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
    let mut req = RequestCtx::new(HTTP, 0);
    req.pinned = Some(1);
    assert_eq!(
        choose(&snap, &req).map(|c| (c.site, c.mode)),
        Some((1, Mode::Pinned))
    );
    snap.sites[1].state = SiteState::Drained;
    assert!(
        choose(&snap, &req).is_some(),
        "drained sites keep their sessions"
    );
    snap.sites[1].state = SiteState::Down;
    assert_eq!(choose(&snap, &req), None);
    req.pinned = Some(9);
    assert_eq!(choose(&snap, &req), None);
}

#[test]
fn sites_without_the_endpoint_are_never_chosen() {
    let snap = snapshot(&[(0, 100, "a")]);
    assert_eq!(choose(&snap, &RequestCtx::new(EndpointKind::Tcp, 0)), None);
}

/// A site of [`varied`]: (tier, weight, state number, score, preferred, weight zeroed).
pub(super) type SiteSpec = (u8, u32, u8, f64, bool, bool);

/// A snapshot of sites in every state, alternating regions `a` and `b` (for property tests).
pub(super) fn varied(sites: &[SiteSpec]) -> Snapshot {
    let spec: Vec<(u8, u32, &str)> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.0, s.1, if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    let mut snap = snapshot(&spec);
    for (view, s) in snap.sites.iter_mut().zip(sites) {
        view.state = SiteState::ALL[usize::from(s.2) % SiteState::ALL.len()];
        view.score = s.3;
        view.preferred = s.4;
        if s.5 || matches!(view.state, SiteState::Drained | SiteState::Maintenance) {
            view.effective_weight = 0;
        }
    }
    snap
}

mod index {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_index_answers_like_choose(
            sites in prop::collection::vec(
                (0u8..3, 0u32..400, 0u8..5, 0.0f64..1.0, any::<bool>(), any::<bool>()),
                1..12,
            ),
            randoms in prop::collection::vec(any::<u64>(), 1..40),
            tried in prop::option::of(0usize..12),
            region in prop::option::of(0u8..2),
        ) {
            let snap = varied(&sites);
            let index = Index::new(&snap);
            for random in randoms {
                let mut req = RequestCtx::new(HTTP, random);
                prop_assert_eq!(index.choose(&snap, &req), choose(&snap, &req));
                if let Some(t) = tried {
                    req.tried.push(t);
                }
                req.region = region.map(|r| if r == 0 { "a" } else { "b" });
                prop_assert_eq!(index.choose(&snap, &req), choose(&snap, &req));
                let ws = RequestCtx::new(EndpointKind::Ws, random);
                prop_assert_eq!(index.choose(&snap, &ws), None);
            }
        }
    }

    #[test]
    fn another_snapshot_is_answered_by_choose() {
        let snap = snapshot(&[(0, 100, "a"), (0, 100, "a")]);
        let index = Index::new(&snap);
        let mut next = snap.clone();
        next.version += 1;
        next.sites[0].state = SiteState::Down;
        assert!(!index.is_for(&next));
        for r in 0..50u64 {
            let req = RequestCtx::new(HTTP, r.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            assert_eq!(index.choose(&next, &req).map(|c| c.site), Some(1));
        }
    }
}
