//! The health table: every site's statistics and state machine, folded from observations by
//! one owner, and turned into Snapshots. Synchronous and clock-free: callers pass `now`.

use std::sync::Arc;
use std::time::SystemTime;

use sitesteer_config::{Config, Site};
use tokio::time::Instant;

use crate::observation::{Failure, Observation, Source};
use crate::overrides::{Fault, Overrides};
use crate::snapshot::{PassiveCounts, SiteState, SiteView, Snapshot};
use crate::state::{Health, SiteHealth, Stats, Thresholds};
use crate::window::{Latency, Totals, Window};

/// A change of a site's published state, for the events log and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    /// Site name.
    pub site: String,
    /// State before.
    pub from: SiteState,
    /// State after.
    pub to: SiteState,
    /// Why.
    pub reason: String,
    /// Wall-clock time of the change.
    pub at: SystemTime,
}

struct Entry {
    health: SiteHealth,
    window: Window,
    latency: Latency,
    /// `latency.p99_ms()`, kept until the next sample: Snapshots are published every 25 ms
    /// under traffic, probes add a sample every 100 ms, and the p99 sorts every sample.
    p99_ms: Option<f64>,
    published: SiteState,
    published_at: SystemTime,
    /// Set when the site recovers from down: its error rate and score count only what was
    /// seen from then on, so that the failures recorded while it was down do not hold it out
    /// (degraded) for a whole window once its probes pass again. Cleared after a window.
    recovered_at: Option<Instant>,
    /// Set at the same moment when `health.slow_start` is on: the site takes a growing share
    /// of its traffic until `slow_start` has passed. Cleared then.
    warming_since: Option<Instant>,
}

/// The share of its traffic a site takes right after it came back from down, with
/// `health.slow_start` on.
const WARM_START: f64 = 0.05;

/// Every site's health, owned by one task.
pub struct HealthTable {
    config: Arc<Config>,
    generation: u64,
    thresholds: Thresholds,
    entries: Vec<Entry>,
    overrides: Overrides,
    version: u64,
    changes: Vec<StateChange>,
    passive: Arc<PassiveCounts>,
}

/// Whether `probe` runs against `site`.
pub(crate) fn probe_applies(config: &Config, probe: usize, site: &Site) -> bool {
    config
        .probes
        .get(probe)
        .is_some_and(|p| site.endpoints.get(p.endpoint).is_some())
}

fn thresholds(config: &Config) -> Thresholds {
    let h = &config.health;
    Thresholds {
        rise: h.rise,
        fall: h.fall,
        suspect_hold: h.suspect_hold,
        degraded_latency_ms: h.degraded_latency.as_secs_f64() * 1000.0,
        degraded_error_rate: h.degraded_error_rate,
    }
}

impl HealthTable {
    /// A table for `config`, every site up and unprobed.
    pub fn new(config: Arc<Config>, overrides: Overrides, now: Instant) -> Self {
        let entries = config
            .sites
            .iter()
            .map(|s| Self::fresh_entry(&config, s, now))
            .collect();
        let mut table = Self {
            thresholds: thresholds(&config),
            passive: Arc::new(PassiveCounts::new(config.sites.len())),
            config,
            generation: 1,
            entries,
            overrides,
            version: 0,
            changes: Vec::new(),
        };
        for i in 0..table.entries.len() {
            table.entries[i].published = table.state_of(i);
        }
        table
    }

    fn fresh_entry(config: &Config, site: &Site, now: Instant) -> Entry {
        let applies = (0..config.probes.len()).map(|p| probe_applies(config, p, site));
        Entry {
            health: SiteHealth::new(applies, now),
            window: Window::new(config.health.window),
            latency: Latency::new(config.health.ewma_alpha, config.health.latency_samples),
            p99_ms: None,
            published: SiteState::Up,
            published_at: SystemTime::now(),
            recovered_at: None,
            warming_since: None,
        }
    }

    /// The running config.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The config generation (site ids are valid within one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The operator overrides in force.
    pub fn overrides(&self) -> &Overrides {
        &self.overrides
    }

    /// The data plane's success counters of the current generation.
    pub fn passive(&self) -> &Arc<PassiveCounts> {
        &self.passive
    }

    /// Swaps in a new config. Sites whose name, endpoints and probes are unchanged keep their
    /// history; others start fresh. Returns the new generation.
    pub fn reconfigure(&mut self, config: Arc<Config>, now: Instant) -> u64 {
        let old_config = std::mem::replace(&mut self.config, config);
        let mut old: Vec<Option<Entry>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        let same_probes =
            old_config.probes == self.config.probes && old_config.health == self.config.health;
        let mut entries = Vec::with_capacity(self.config.sites.len());
        for site in &self.config.sites {
            let kept = old_config
                .sites
                .iter()
                .position(|o| o.name == site.name && o.endpoints == site.endpoints)
                .filter(|_| same_probes)
                .and_then(|i| old.get_mut(i).and_then(Option::take));
            entries.push(kept.unwrap_or_else(|| Self::fresh_entry(&self.config, site, now)));
        }
        self.entries = entries;
        self.thresholds = thresholds(&self.config);
        self.passive = Arc::new(PassiveCounts::new(self.config.sites.len()));
        self.generation += 1;
        self.tick(now);
        self.generation
    }

    /// Replaces the operator overrides; returns whether a published state changed.
    pub fn set_overrides(&mut self, overrides: Overrides, now: Instant) -> bool {
        self.overrides = overrides;
        self.tick(now)
    }

    /// Folds one observation; returns whether a published state changed. A probe of a site
    /// with a drill fault counts as failed.
    pub fn fold(&mut self, obs: &Observation) -> bool {
        if obs.generation != self.generation {
            return false;
        }
        let faulted = self
            .config
            .sites
            .get(obs.site)
            .and_then(|s| self.overrides.get(&s.name))
            .and_then(|o| o.fault);
        // A fault in the path to the site makes its probes fail by themselves.
        let told = faulted.filter(|f| matches!(f, Fault::KillProbe | Fault::Blackhole));
        if let (Some(fault), Source::Probe(_)) = (told, obs.source) {
            let mut failed = obs.clone();
            failed.outcome = Err(Failure::Connect);
            failed.detail = Some(format!("drill fault {fault:?}"));
            return self.fold_unfaulted(&failed);
        }
        self.fold_unfaulted(obs)
    }

    /// Folds `count` successful proxied requests to `site` seen up to `at` (the data plane's
    /// [`PassiveCounts`] of this generation): the same as folding `count` passive `Ok`
    /// observations at `at`, evaluated once. Returns whether a published state changed.
    pub fn fold_passive_ok(&mut self, site: usize, count: u64, at: Instant) -> bool {
        self.fold_passive_batch(site, count, at, None)
    }

    /// Folds `count` failed proxied requests to `site` that the data plane counted instead of
    /// sending (its channel was full): the same as folding `count` passive failures at `at`,
    /// evaluated once. Returns whether a published state changed.
    pub fn fold_passive_failures(
        &mut self,
        site: usize,
        failure: Failure,
        count: u64,
        at: Instant,
    ) -> bool {
        self.fold_passive_batch(site, count, at, Some(failure))
    }

    /// Records `count` passive outcomes of `site` at `at` (successes, or `failure`s) and
    /// evaluates the site once.
    fn fold_passive_batch(
        &mut self,
        site: usize,
        count: u64,
        at: Instant,
        failure: Option<Failure>,
    ) -> bool {
        let Some(entry) = self.entries.get_mut(site) else {
            return false;
        };
        if count == 0 {
            return false;
        }
        for _ in 0..count {
            entry.window.record(at, false, failure.is_none());
        }
        if let Some(failure) = failure {
            entry.health.passive_failure(failure, at);
        }
        self.evaluate(site, at)
    }

    fn fold_unfaulted(&mut self, obs: &Observation) -> bool {
        let thresholds = self.thresholds;
        let Some(entry) = self.entries.get_mut(obs.site) else {
            return false;
        };
        let probe = matches!(obs.source, Source::Probe(_));
        entry.window.record(obs.at, probe, obs.outcome.is_ok());
        match (obs.source, obs.outcome) {
            (Source::Probe(p), Ok(latency)) => {
                entry.latency.record(latency);
                entry.p99_ms = None;
                entry.health.probe_result(p, Ok(()), &thresholds);
            }
            (Source::Probe(p), Err(failure)) => {
                entry
                    .health
                    .probe_result(p, Err((failure, obs.detail.as_deref())), &thresholds);
            }
            (Source::Passive, Ok(_)) => {}
            (Source::Passive, Err(failure)) => entry.health.passive_failure(failure, obs.at),
        }
        self.evaluate(obs.site, obs.at)
    }

    /// Re-evaluates every site (suspect holds and windows expire with time). True when a
    /// published state changed, or while a site warms up (its share grows with every
    /// Snapshot).
    pub fn tick(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for i in 0..self.entries.len() {
            changed |= self.evaluate(i, now);
        }
        changed || self.entries.iter().any(|e| e.warming_since.is_some())
    }

    /// The share of its traffic site `i` takes at `now`: 1, or while it warms up after
    /// coming back from down, from [`WARM_START`] growing linearly to 1 over
    /// `health.slow_start`.
    fn warm(&self, i: usize, now: Instant) -> f64 {
        let slow_start = self.config.health.slow_start;
        match self.entries[i].warming_since {
            Some(at) if !slow_start.is_zero() => {
                let grown =
                    now.saturating_duration_since(at).as_secs_f64() / slow_start.as_secs_f64();
                (WARM_START + (1.0 - WARM_START) * grown).clamp(WARM_START, 1.0)
            }
            _ => 1.0,
        }
    }

    /// What the site's error rate and score are judged on: the window, less what was seen
    /// before the site last recovered from down.
    fn recent_totals(&self, i: usize, now: Instant) -> Totals {
        let e = &self.entries[i];
        e.window.totals_since(now, e.recovered_at)
    }

    fn stats(&self, i: usize, now: Instant) -> Stats {
        let e = &self.entries[i];
        let totals = self.recent_totals(i, now);
        Stats {
            ewma_ms: e.latency.ewma_ms(),
            error_rate: totals.error_rate(),
            samples: totals.probe_ok + totals.probe_fail + totals.traffic_ok + totals.traffic_fail,
        }
    }

    fn evaluate(&mut self, i: usize, now: Instant) -> bool {
        let span = self.config.health.window;
        let slow_start = self.config.health.slow_start;
        let e = &mut self.entries[i];
        if e.warming_since
            .is_some_and(|at| now.saturating_duration_since(at) >= slow_start)
        {
            e.warming_since = None;
        }
        if e.health.health == Health::Down && e.health.probes_pass() {
            e.recovered_at = Some(now);
            e.warming_since = (!slow_start.is_zero()).then_some(now);
        } else if e
            .recovered_at
            .is_some_and(|at| now.saturating_duration_since(at) >= span)
        {
            e.recovered_at = None;
        }
        let stats = self.stats(i, now);
        let thresholds = self.thresholds;
        self.entries[i].health.evaluate(now, stats, &thresholds);
        self.publish_state(i)
    }

    /// The state of site `i` after overrides.
    fn state_of(&self, i: usize) -> SiteState {
        let name = &self.config.sites[i].name;
        let o = self.overrides.get(name);
        if o.is_some_and(|o| o.maintenance) {
            return SiteState::Maintenance;
        }
        if o.is_some_and(|o| o.drained || o.failed_over) {
            return SiteState::Drained;
        }
        match self.entries[i].health.health {
            Health::Up => SiteState::Up,
            Health::Degraded => SiteState::Degraded,
            Health::Down => SiteState::Down,
        }
    }

    fn reason_of(&self, i: usize) -> String {
        let name = &self.config.sites[i].name;
        match self.overrides.get(name) {
            Some(o) if o.maintenance => "operator: maintenance".into(),
            Some(o) if o.failed_over => "operator: failed over".into(),
            Some(o) if o.drained => "operator: drained".into(),
            _ => self.entries[i].health.reason.clone(),
        }
    }

    fn publish_state(&mut self, i: usize) -> bool {
        let state = self.state_of(i);
        let entry = &self.entries[i];
        if state == entry.published {
            return false;
        }
        let change = StateChange {
            site: self.config.sites[i].name.clone(),
            from: entry.published,
            to: state,
            reason: self.reason_of(i),
            at: SystemTime::now(),
        };
        let entry = &mut self.entries[i];
        entry.published = state;
        entry.published_at = change.at;
        self.changes.push(change);
        true
    }

    /// State changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.changes)
    }

    /// Builds the next Snapshot.
    pub fn snapshot(&mut self, now: Instant) -> Snapshot {
        self.version += 1;
        for e in &mut self.entries {
            if e.p99_ms.is_none() {
                e.p99_ms = Some(e.latency.p99_ms());
            }
        }
        let reference_ms = self.config.health.latency_reference.as_secs_f64() * 1000.0;
        let sites = self
            .config
            .sites
            .iter()
            .enumerate()
            .map(|(i, site)| {
                let e = &self.entries[i];
                let totals = e.window.totals(now);
                let ewma = e.latency.ewma_ms();
                let error_rate = self.recent_totals(i, now).error_rate();
                let o = self.overrides.get(&site.name);
                let state = e.published;
                let weight = o.and_then(|o| o.weight).unwrap_or(site.weight);
                let effective_weight = match state {
                    SiteState::Drained | SiteState::Maintenance => 0,
                    _ => weight,
                };
                SiteView {
                    id: i,
                    name: site.name.clone(),
                    region: site.region.clone(),
                    tier: site.tier,
                    configured_weight: site.weight,
                    effective_weight,
                    state,
                    health: e.health.health,
                    preferred: o.is_some_and(|o| o.preferred),
                    fault: o.and_then(|o| o.fault),
                    score: score(error_rate, ewma, reference_ms),
                    warm: self.warm(i, now),
                    availability: totals.availability(),
                    error_rate,
                    latency_ewma_ms: ewma,
                    latency_p99_ms: e.p99_ms.unwrap_or_else(|| e.latency.p99_ms()),
                    changed_at: e.published_at,
                    reason: self.reason_of(i),
                    suspect: e.health.is_suspect(),
                    endpoints: site.endpoints.clone(),
                }
            })
            .collect();
        Snapshot {
            version: self.version,
            generation: self.generation,
            config: self.config.clone(),
            sites,
            passive: self.passive.clone(),
        }
    }
}

/// The score of a site in [0, 1]: `(1 − error_rate) × R / (R + latency_ewma)`, where `R` is
/// `health.latency_reference`. A site with no errors and no latency scores 1; one at the
/// reference latency scores 1/2.
pub fn score(error_rate: f64, latency_ewma_ms: f64, reference_ms: f64) -> f64 {
    let latency_factor = reference_ms / (reference_ms + latency_ewma_ms.max(0.0));
    ((1.0 - error_rate) * latency_factor).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn table() -> HealthTable {
        let text = "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n\
                    [[site]]\nname = \"b\"\n[site.endpoints]\nhttp = \"127.0.0.1:2\"\n";
        let config = sitesteer_config::parse(text, "test", std::path::Path::new(".")).unwrap();
        HealthTable::new(Arc::new(config), Overrides::default(), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn counted_successes_fold_like_passive_observations() {
        let mut t = table();
        let now = Instant::now();
        t.fold(&Observation::passive(
            1,
            t.generation(),
            Err(Failure::Status(500)),
            now,
        ));
        // The data plane counts successes; the owner folds them.
        let snap = t.snapshot(now);
        for _ in 0..3 {
            snap.passive.success(1);
        }
        snap.passive.success(99); // out of range: ignored
        assert_eq!(t.passive().take(1), 3);
        assert_eq!(t.passive().take(1), 0);
        t.fold_passive_ok(1, 3, now);
        let snap = t.snapshot(now);
        assert!((snap.sites[1].error_rate - 0.25).abs() < 1e-9);
        assert_eq!(snap.sites[0].error_rate, 0.0);
        // A reload gives the new generation its own counters.
        let before = t.passive().clone();
        let config = t.config().clone();
        t.reconfigure(config, now);
        assert!(!Arc::ptr_eq(&before, t.passive()));
        let snap = t.snapshot(now);
        assert!(Arc::ptr_eq(t.passive(), &snap.passive));
    }

    #[tokio::test(start_paused = true)]
    async fn counted_failures_fold_like_passive_failures() {
        let mut t = table();
        let now = Instant::now();
        let snap = t.snapshot(now);
        // The channel was full: the data plane counted these instead of sending them.
        snap.passive.failure(0, Failure::Connect);
        snap.passive.failure(0, Failure::Status(503));
        snap.passive.failure(0, Failure::Status(502));
        snap.passive.failure(7, Failure::Reset); // out of range: ignored
        let counted: Vec<_> = t.passive().take_failures(0).collect();
        assert_eq!(
            counted,
            vec![(Failure::Connect, 1), (Failure::Status(502), 2)]
        );
        assert_eq!(t.passive().take_failures(0).count(), 0);
        for (failure, n) in counted {
            t.fold_passive_failures(0, failure, n, now);
        }
        let snap = t.snapshot(now);
        assert!((snap.sites[0].error_rate - 1.0).abs() < 1e-9);
        // A passive connect failure makes the site suspect at once, as a sent one does.
        assert_eq!(snap.sites[0].state, SiteState::Degraded);
    }

    #[tokio::test(start_paused = true)]
    async fn the_published_p99_follows_new_probe_samples() {
        let mut t = table();
        let now = Instant::now();
        let probe = |ms: u64| {
            let mut obs = Observation::probe(0, 1, 0, Ok(Duration::from_millis(ms)), None);
            obs.at = now;
            obs
        };
        t.fold(&probe(10));
        assert_eq!(t.snapshot(now).sites[0].latency_p99_ms, 10.0);
        t.fold(&probe(30));
        assert_eq!(t.snapshot(now).sites[0].latency_p99_ms, 30.0);
        assert_eq!(t.snapshot(now).sites[0].latency_p99_ms, 30.0);
    }

    /// Probe 0's result for site 0 (`ok` in 2 ms, or a failed connect), `ms_after` `start`.
    fn probe_of_a(start: Instant, ms_after: u64, ok: bool) -> Observation {
        let outcome = if ok {
            Ok(Duration::from_millis(2))
        } else {
            Err(Failure::Connect)
        };
        let mut obs = Observation::probe(0, 1, 0, outcome, None);
        obs.at = start + Duration::from_millis(ms_after);
        obs
    }

    #[tokio::test(start_paused = true)]
    async fn a_site_whose_probes_pass_again_is_up_at_once_not_held_out_by_its_down_time() {
        let mut t = table();
        let start = Instant::now();
        let probe = |ms_after: u64, ok: bool| probe_of_a(start, ms_after, ok);
        // Three seconds down: thirty failed probes, 100 ms apart.
        for k in 0..30 {
            t.fold(&probe(100 * k, false));
        }
        let down_at = start + Duration::from_millis(2_900);
        assert_eq!(t.snapshot(down_at).sites[0].state, SiteState::Down);
        // It answers again: `rise` (2) passing probes bring it back up, not degraded by the
        // thirty failures still in its window.
        t.fold(&probe(3_000, true));
        assert_eq!(t.snapshot(down_at).sites[0].state, SiteState::Down);
        t.fold(&probe(3_100, true));
        let back = start + Duration::from_millis(3_100);
        let view = &t.snapshot(back).sites[0];
        assert_eq!(view.state, SiteState::Up, "{}", view.reason);
        assert_eq!(view.error_rate, 0.0);
        assert!(view.score > 0.9, "score {}", view.score);
        // The window's availability still shows the outage.
        assert!(
            view.availability < 0.1,
            "availability {}",
            view.availability
        );
        // Failures after the recovery count as before.
        for k in 0..10 {
            t.fold(&probe(3_700 + 10 * k, k % 2 == 0));
        }
        let later = start + Duration::from_millis(3_800);
        t.tick(later);
        let view = &t.snapshot(later).sites[0];
        assert!(view.error_rate > 0.2, "error rate {}", view.error_rate);
    }

    #[tokio::test(start_paused = true)]
    async fn with_slow_start_a_site_back_from_down_takes_a_growing_share() {
        let text = "[health]\nslow_start = \"2s\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n";
        let config = sitesteer_config::parse(text, "test", std::path::Path::new(".")).unwrap();
        let start = Instant::now();
        let mut t = HealthTable::new(Arc::new(config), Overrides::default(), start);
        let probe = |ms_after: u64, ok: bool| probe_of_a(start, ms_after, ok);
        assert_eq!(
            t.snapshot(start).sites[0].warm,
            1.0,
            "a site never down is warm"
        );
        t.fold(&probe(0, false));
        t.fold(&probe(100, false));
        t.fold(&probe(200, true));
        t.fold(&probe(300, true));
        let at = |ms: u64| start + Duration::from_millis(ms);
        let view = t.snapshot(at(300)).sites[0].clone();
        assert_eq!(view.state, SiteState::Up);
        assert!((view.warm - WARM_START).abs() < 1e-9, "warm {}", view.warm);
        assert!(
            t.tick(at(1_300)),
            "a warming site is published on every tick"
        );
        let half = t.snapshot(at(1_300)).sites[0].warm;
        assert!(
            (half - (WARM_START + (1.0 - WARM_START) * 0.5)).abs() < 1e-9,
            "warm {half}"
        );
        assert!(
            !t.tick(at(2_300)),
            "warm after slow_start: nothing more to publish"
        );
        assert_eq!(t.snapshot(at(2_300)).sites[0].warm, 1.0);
    }
}
