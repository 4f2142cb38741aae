//! Unit tests of the steering rules.

use std::path::Path;
use std::sync::Arc;

use sitesteer_config::EndpointKind;
use sitesteer_probes::{HealthTable, Overrides, SiteState, Snapshot};

use super::*;

/// A snapshot of `sites` given as (tier, weight, region); every site up with score 1.
pub fn snapshot(sites: &[(u8, u32, &str)]) -> Snapshot {
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
