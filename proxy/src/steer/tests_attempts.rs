//! Unit tests of the selection loop's accounting: retries counted once per real retry, the
//! budget used by blackholed sites too, unroutable only when no site can take a request,
//! panic mode from the published Snapshot.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use sitesteer_config::EndpointKind;
use sitesteer_probes::Fault;
use sitesteer_probes::{Failure, SiteState, Snapshot};

use super::tests::snapshot;
use super::*;

/// A steering over a fixed, hand-made Snapshot (the health owner is started but never run,
/// so it publishes nothing into the cell).
pub(super) struct Rig {
    pub(super) steering: Steering,
    metrics: SteerMetrics,
    panic_mode: IntGauge,
    _runtime: tokio::runtime::Runtime,
}

impl Rig {
    pub(super) fn new(snap: Snapshot) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = snap.config.clone();
        let health = runtime.block_on(async {
            sitesteer_probes::start(config, Default::default(), Default::default())
        });
        let metrics = SteerMetrics {
            retries: IntCounterVec::new(Opts::new("retries", "r"), &["site"]).expect("metric"),
            panic_decisions: IntCounter::new("panic_decisions", "p").expect("metric"),
            unroutable: IntCounter::new("unroutable", "u").expect("metric"),
            hedges: IntCounterVec::new(Opts::new("hedges", "h"), &["site"]).expect("metric"),
            rescues: IntCounterVec::new(Opts::new("rescues", "r"), &["site"]).expect("metric"),
            retries_refused: IntCounterVec::new(Opts::new("refused", "r"), &["reason"])
                .expect("metric"),
        };
        let panic_mode = IntGauge::new("panic_mode", "p").expect("metric");
        let cell = Arc::new(PublishedCell::default());
        cell.hook(panic_mode.clone())(&Arc::new(snap));
        Self {
            steering: Steering::new(cell, health, metrics.clone()),
            metrics,
            panic_mode,
            _runtime: runtime,
        }
    }

    pub(super) fn attempts(&self) -> Attempts {
        Attempts::new(EndpointKind::Http, self.steering.current())
    }

    /// Runs `f` on the rig's runtime.
    pub(super) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self._runtime.block_on(f)
    }

    fn retries(&self) -> u64 {
        ["s0", "s1", "s2"]
            .iter()
            .map(|s| self.metrics.retries.with_label_values(&[s]).get())
            .sum()
    }
}

/// Two sites, both in `state`.
fn two_sites_in(state: SiteState) -> Snapshot {
    let mut snap = snapshot(&[(1, 1, "a"), (1, 1, "a")]);
    for s in &mut snap.sites {
        s.state = state;
    }
    snap
}

/// Tries every site the loop offers, failing each; returns how many were tried.
fn fail_all(rig: &Rig, attempts: &mut Attempts) -> (usize, NoSite) {
    let mut made = 0;
    for _ in 0..10 {
        match attempts.next(&rig.steering, None) {
            Ok(_) => {
                made += 1;
                attempts.failed(&rig.steering, Failure::Connect);
            }
            Err(why) => return (made, why),
        }
    }
    panic!("the loop never ended");
}

#[test]
fn three_failing_sites_with_two_retries_count_exactly_two() {
    let rig = Rig::new(snapshot(&[(1, 1, "a"), (1, 1, "a"), (1, 1, "a")]));
    for round in 1..=5u64 {
        let mut attempts = rig.attempts();
        let (made, why) = fail_all(&rig, &mut attempts);
        assert_eq!((made, why), (3, NoSite::Exhausted));
        assert_eq!(rig.retries(), 2 * round);
    }
    assert_eq!(rig.metrics.unroutable.get(), 0);
}

#[test]
fn a_single_failing_site_is_never_counted_as_retried() {
    let rig = Rig::new(snapshot(&[(1, 1, "a")]));
    let mut attempts = rig.attempts();
    assert_eq!(fail_all(&rig, &mut attempts), (1, NoSite::Exhausted));
    assert!(!attempts.may_retry(&rig.steering));
    assert_eq!(rig.retries(), 0);
}

#[test]
fn may_retry_has_no_side_effects() {
    let rig = Rig::new(snapshot(&[(1, 1, "a"), (1, 1, "a")]));
    let mut attempts = rig.attempts();
    let first = attempts.next(&rig.steering, None).expect("a site");
    attempts.failed(&rig.steering, Failure::Reset);
    for _ in 0..3 {
        assert!(attempts.may_retry(&rig.steering));
    }
    assert_eq!(rig.retries(), 0);
    let second = attempts.next(&rig.steering, None).expect("the other site");
    assert_ne!(first.site, second.site);
    assert_eq!(rig.retries(), 1);
    attempts.succeeded(&rig.steering);
}

#[test]
fn a_blackholed_site_is_a_failed_connect_that_uses_the_budget() {
    let mut snap = snapshot(&[(1, 1, "a"), (1, 1, "a"), (1, 1, "a")]);
    snap.sites[0].fault = Some(Fault::Blackhole);
    snap.sites[1].fault = Some(Fault::Blackhole);
    let rig = Rig::new(snap);
    let mut chosen = 0;
    for _ in 0..50 {
        let mut attempts = rig.attempts();
        let choice = attempts.next(&rig.steering, None).expect("site 2 is left");
        assert_eq!(choice.site, 2);
        chosen += attempts.made();
    }
    // Each blackholed site skipped before site 2 is one retry.
    assert_eq!(rig.retries() as usize, chosen - 50);

    let mut only = snapshot(&[(1, 1, "a")]);
    only.sites[0].fault = Some(Fault::Blackhole);
    let rig = Rig::new(only);
    let mut attempts = rig.attempts();
    assert_eq!(
        attempts.next(&rig.steering, None),
        Err(NoSite::Exhausted),
        "a blackholed site fails the request, it does not make it unroutable"
    );
    assert_eq!((rig.retries(), rig.metrics.unroutable.get()), (0, 0));
}

#[test]
fn with_no_site_to_take_it_a_request_is_unroutable_once() {
    let rig = Rig::new(two_sites_in(SiteState::Maintenance));
    let mut attempts = rig.attempts();
    assert_eq!(attempts.next(&rig.steering, None), Err(NoSite::Unroutable));
    assert_eq!(rig.metrics.unroutable.get(), 1);
    assert_eq!(
        rig.panic_mode.get(),
        1,
        "no site up: the Snapshot is in panic"
    );
}

#[test]
fn a_lost_session_is_not_retried_elsewhere() {
    let rig = Rig::new(snapshot(&[(1, 1, "a"), (1, 1, "a")]));
    let mut attempts = rig.attempts();
    let choice = attempts.next(&rig.steering, Some("s1")).expect("its site");
    assert_eq!((choice.site, choice.mode), (1, Mode::Pinned));
    attempts.failed(&rig.steering, Failure::Connect);
    assert_eq!(
        attempts.next(&rig.steering, Some("s1")),
        Err(NoSite::SessionLost)
    );
    assert_eq!(
        rig.attempts().next(&rig.steering, Some("gone")),
        Err(NoSite::SessionLost)
    );
    assert_eq!((rig.retries(), rig.metrics.unroutable.get()), (0, 0));
}

#[test]
fn panic_decisions_and_the_gauge_follow_the_snapshot() {
    let rig = Rig::new(two_sites_in(SiteState::Down));
    assert_eq!(rig.panic_mode.get(), 1);
    let mut attempts = rig.attempts();
    assert_eq!(
        attempts.next(&rig.steering, None).map(|c| c.mode),
        Ok(Mode::Panic)
    );
    assert_eq!(rig.metrics.panic_decisions.get(), 1);

    let rig = Rig::new(snapshot(&[(1, 1, "a")]));
    assert_eq!(rig.panic_mode.get(), 0);
    rig.attempts().next(&rig.steering, None).expect("a site");
    assert_eq!(rig.metrics.panic_decisions.get(), 0);
}

/// Sites in "eu" and "us", one tier, with `[[geo]]` placing 10.1.0.0/16 in "eu" and
/// 10.2.0.0/16 in "us".
fn two_regions() -> Snapshot {
    let mut snap = snapshot(&[(0, 100, "eu"), (0, 100, "us")]);
    let mut config = (*snap.config).clone();
    for (cidr, region) in [("10.1.0.0/16", "eu"), ("10.2.0.0/16", "us")] {
        config.geo.push(sitesteer_config::Geo {
            cidr: cidr.parse().expect("cidr"),
            region: region.to_string(),
        });
    }
    snap.config = Arc::new(config);
    snap
}

#[test]
fn a_located_client_s_attempts_prefer_its_region_then_fall_back() {
    let rig = Rig::new(two_regions());
    for (client, site, region) in [("10.1.2.3", 0, "eu"), ("::ffff:10.2.0.9", 1, "us")] {
        for _ in 0..50 {
            let mut attempts = rig.attempts();
            assert!(attempts.places_clients());
            assert_eq!(attempts.locate(client.parse().ok()), Some(region));
            let first = attempts.next(&rig.steering, None).expect("a site");
            assert_eq!(first.site, site, "{client} goes to {region} first");
            // Its region's site failed: the retry goes to the other region.
            attempts.failed(&rig.steering, Failure::Connect);
            let second = attempts.next(&rig.steering, None).expect("a site");
            assert_eq!(second.site, 1 - site);
        }
    }
    // Unplaced clients share both sites.
    let mut seen = [0; 2];
    for _ in 0..200 {
        let mut attempts = rig.attempts();
        assert_eq!(attempts.locate("192.0.2.1".parse().ok()), None);
        assert_eq!(attempts.locate(None), None);
        seen[attempts.next(&rig.steering, None).expect("a site").site] += 1;
    }
    assert!(seen[0] > 40 && seen[1] > 40, "{seen:?}");
}

#[test]
fn the_region_table_is_built_once_per_config_generation() {
    let snap = two_regions();
    let cell = Arc::new(PublishedCell::default());
    let hook = cell.hook(IntGauge::new("panic_mode", "p").expect("metric"));
    hook(&Arc::new(snap.clone()));
    let first = cell.load().expect("published");
    let mut next = snap.clone();
    next.version += 1;
    hook(&Arc::new(next.clone()));
    let second = cell.load().expect("published");
    assert!(
        Arc::ptr_eq(&first.regions, &second.regions),
        "same generation"
    );
    next.generation += 1;
    next.config = Arc::new(snapshot(&[(0, 100, "eu")]).config.as_ref().clone());
    hook(&Arc::new(next));
    let third = cell.load().expect("published");
    assert!(!Arc::ptr_eq(&second.regions, &third.regions), "a reload");
    assert!(third.regions.is_empty(), "the new config has no [[geo]]");
}

/// Three failing sites, with `[proxy.retry_budget]` set to `ratio` and `min_per_second`.
fn budgeted(ratio: f64, min_per_second: u32) -> Rig {
    let mut snap = snapshot(&[(1, 1, "a"), (1, 1, "a"), (1, 1, "a")]);
    let config = Arc::make_mut(&mut snap.config);
    config.proxy.retry_budget.ratio = ratio;
    config.proxy.retry_budget.min_per_second = min_per_second;
    Rig::new(snap)
}

/// Sends `requests` requests, each failing at every site the loop offers; how many attempts
/// were made in all.
fn fail_requests(rig: &Rig, requests: usize) -> usize {
    (0..requests)
        .map(|_| fail_all(rig, &mut rig.attempts()).0)
        .sum()
}

fn refused(rig: &Rig) -> u64 {
    rig.metrics
        .retries_refused
        .with_label_values(&["budget"])
        .get()
}

#[test]
fn a_spent_retry_budget_ends_the_attempts_and_is_counted_once() {
    // A reserve of 1/s over the default 10s ttl: ten retries, then none.
    let rig = budgeted(0.0, 1);
    let made = fail_requests(&rig, 20);
    assert_eq!(made, 20 + 10, "twenty first attempts and ten retries");
    assert_eq!(rig.retries(), 10, "a refused retry is not counted as one");
    // Five requests got both their retries; the sixth one and every later one was refused
    // (each counted once).
    assert_eq!(refused(&rig), 15);
}

#[test]
fn requests_earn_their_share_of_retries() {
    let rig = budgeted(0.5, 0);
    let made = fail_requests(&rig, 40);
    // Each request deposits half a retry before it fails: 20 retries in all, never more.
    assert_eq!(made, 40 + 20);
    assert_eq!(rig.retries(), 20);
}

#[test]
fn a_grant_asked_for_twice_is_taken_once_and_spent_by_the_next_attempt() {
    let rig = budgeted(0.0, 1);
    let mut attempts = rig.attempts();
    attempts.next(&rig.steering, None).expect("a site");
    attempts.failed(&rig.steering, Failure::Status(503));
    for _ in 0..3 {
        assert!(attempts.grant(&rig.steering));
    }
    attempts
        .next(&rig.steering, None)
        .expect("the granted retry");
    // Nine of the ten reserved retries are left.
    let mut others = 0;
    for _ in 0..20 {
        let mut a = rig.attempts();
        a.next(&rig.steering, None).expect("a site");
        a.failed(&rig.steering, Failure::Status(503));
        others += usize::from(a.grant(&rig.steering));
    }
    assert_eq!(others, 9);
}

#[test]
fn a_hedge_needs_both_budgets_and_gives_the_hedge_back_when_refused() {
    let rig = budgeted(0.0, 0);
    let snap = rig.steering.current().snapshot.clone();
    let mut attempts = rig.attempts();
    attempts.next(&rig.steering, None).expect("a site");
    // The hedge budget starts full (64), the retry budget empty: no hedge, and the hedge
    // budget keeps every token.
    for _ in 0..100 {
        assert!(!attempts.hedge(&rig.steering, &snap, 0));
    }
    assert_eq!(rig.metrics.hedges.with_label_values(&["s0"]).get(), 0);
    assert_eq!(refused(&rig), 1);
    let rig = budgeted(0.0, 100);
    let snap = rig.steering.current().snapshot.clone();
    let mut hedged = 0;
    for _ in 0..100 {
        let mut attempts = rig.attempts();
        attempts.next(&rig.steering, None).expect("a site");
        hedged += usize::from(attempts.hedge(&rig.steering, &snap, 0));
    }
    assert_eq!(hedged, 64, "the hedge budget's burst bounds hedges");
}
