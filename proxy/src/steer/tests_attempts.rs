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
