//! The per-site health state machine: probe runs with rise/fall hysteresis, the passive
//! "suspect" mark, and the thresholds that make a site degraded. Pure: no I/O, no clock reads;
//! the caller passes `now`.

use std::time::Duration;

use tokio::time::Instant;

use crate::observation::Failure;

/// A site's health as the probes and traffic see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every probe passes and the error rate and latency are within bounds.
    Up,
    /// Reachable but suspect, slow or erroring: used only when no up site has capacity.
    Degraded,
    /// A probe has failed `fall` times in a row.
    Down,
}

impl Health {
    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// The thresholds of the state machine (from `[health]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Thresholds {
    /// Consecutive successes that bring a probe back up.
    pub rise: u32,
    /// Consecutive failures that take a probe down.
    pub fall: u32,
    /// How long a passive failure keeps the site suspect at most.
    pub suspect_hold: Duration,
    /// EWMA latency above which the site is degraded.
    pub degraded_latency_ms: f64,
    /// Error rate above which the site is degraded.
    pub degraded_error_rate: f64,
}

/// Consecutive results of one probe against one site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeRun {
    /// Whether this probe currently counts as passing (after hysteresis).
    pub up: bool,
    ok_run: u32,
    fail_run: u32,
    ok_since_suspect: u32,
    /// Why the probe last failed.
    pub last_failure: Option<String>,
}

impl ProbeRun {
    fn new() -> Self {
        Self {
            up: true,
            ok_run: 0,
            fail_run: 0,
            ok_since_suspect: 0,
            last_failure: None,
        }
    }
}

/// The health state of one site.
#[derive(Clone, Debug)]
pub(crate) struct SiteHealth {
    /// One entry per configured probe; `None` where the probe does not apply to this site.
    runs: Vec<Option<ProbeRun>>,
    suspect_since: Option<Instant>,
    suspect_reason: String,
    /// The current health.
    pub health: Health,
    /// Why the site is in this state.
    pub reason: String,
    /// When the health last changed.
    pub changed_at: Instant,
}

/// Inputs of an evaluation that come from the site's statistics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    /// Latency EWMA, ms.
    pub ewma_ms: f64,
    /// Error rate over the window.
    pub error_rate: f64,
    /// Observations in the window (rates need a few to mean anything).
    pub samples: u32,
}

/// Error rates are judged only with at least this many observations in the window.
const MIN_SAMPLES_FOR_RATE: u32 = 10;

impl SiteHealth {
    /// A site not yet probed: up, so that it serves from the start.
    pub(crate) fn new(applies: impl IntoIterator<Item = bool>, now: Instant) -> Self {
        Self {
            runs: applies.into_iter().map(|a| a.then(ProbeRun::new)).collect(),
            suspect_since: None,
            suspect_reason: String::new(),
            health: Health::Up,
            reason: "not probed yet".into(),
            changed_at: now,
        }
    }

    /// Folds one probe result.
    pub(crate) fn probe_result(
        &mut self,
        probe: usize,
        ok: Result<(), (Failure, Option<&str>)>,
        t: &Thresholds,
    ) {
        let Some(Some(run)) = self.runs.get_mut(probe) else {
            return;
        };
        match ok {
            Ok(()) => {
                run.ok_run = run.ok_run.saturating_add(1);
                run.ok_since_suspect = run.ok_since_suspect.saturating_add(1);
                run.fail_run = 0;
                if !run.up && run.ok_run >= t.rise {
                    run.up = true;
                }
            }
            Err((failure, detail)) => {
                run.fail_run = run.fail_run.saturating_add(1);
                run.ok_run = 0;
                run.ok_since_suspect = 0;
                run.last_failure = Some(match detail {
                    Some(d) => format!("{}: {d}", failure.as_str()),
                    None => failure.as_str().to_string(),
                });
                if run.up && run.fail_run >= t.fall {
                    run.up = false;
                }
            }
        }
        if self.suspect_since.is_some()
            && self
                .runs
                .iter()
                .flatten()
                .all(|r| r.ok_since_suspect >= t.rise)
        {
            self.suspect_since = None;
        }
    }

    /// Whether real traffic made the site suspect (a connect failure, timeout or reset) and
    /// neither `suspect_hold` nor `rise` passing probes have cleared it yet.
    pub(crate) fn is_suspect(&self) -> bool {
        self.suspect_since.is_some()
    }

    /// Whether every probe that applies passes (after hysteresis): a down site whose probes
    /// all pass again has recovered.
    pub(crate) fn probes_pass(&self) -> bool {
        self.runs.iter().flatten().all(|r| r.up)
    }

    /// Folds a failure of real traffic: connect failures, timeouts and resets make the site
    /// suspect at once.
    pub(crate) fn passive_failure(&mut self, failure: Failure, now: Instant) {
        if matches!(
            failure,
            Failure::Connect | Failure::Timeout | Failure::Reset
        ) {
            self.suspect_since = Some(now);
            self.suspect_reason = format!("suspect: real traffic saw {}", failure.as_str());
            for run in self.runs.iter_mut().flatten() {
                run.ok_since_suspect = 0;
            }
        }
    }

    /// Recomputes the health; returns the previous one when it changed.
    pub(crate) fn evaluate(
        &mut self,
        now: Instant,
        stats: Stats,
        t: &Thresholds,
    ) -> Option<Health> {
        if let Some(since) = self.suspect_since {
            if now.saturating_duration_since(since) >= t.suspect_hold {
                self.suspect_since = None;
            }
        }
        let (health, reason) = if let Some(run) = self.runs.iter().flatten().find(|r| !r.up) {
            let why = run.last_failure.as_deref().unwrap_or("probe failing");
            (
                Health::Down,
                format!("probe failed {} times: {why}", t.fall),
            )
        } else if self.suspect_since.is_some() {
            (Health::Degraded, self.suspect_reason.clone())
        } else if stats.ewma_ms > t.degraded_latency_ms {
            (
                Health::Degraded,
                format!(
                    "latency {:.1}ms above {:.1}ms",
                    stats.ewma_ms, t.degraded_latency_ms
                ),
            )
        } else if stats.samples >= MIN_SAMPLES_FOR_RATE && stats.error_rate > t.degraded_error_rate
        {
            (
                Health::Degraded,
                format!(
                    "error rate {:.1}% above {:.1}%",
                    stats.error_rate * 100.0,
                    t.degraded_error_rate * 100.0
                ),
            )
        } else {
            (Health::Up, "probes passing".to_string())
        };
        if health == self.health {
            self.reason = reason;
            return None;
        }
        let previous = self.health;
        self.health = health;
        self.reason = reason;
        self.changed_at = now;
        Some(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        rise: 2,
        fall: 2,
        suspect_hold: Duration::from_secs(2),
        degraded_latency_ms: 500.0,
        degraded_error_rate: 0.2,
    };
    const CALM: Stats = Stats {
        ewma_ms: 1.0,
        error_rate: 0.0,
        samples: 100,
    };

    fn fail(h: &mut SiteHealth) {
        h.probe_result(0, Err((Failure::Connect, None)), &T);
    }
    fn pass(h: &mut SiteHealth) {
        h.probe_result(0, Ok(()), &T);
    }

    #[tokio::test(start_paused = true)]
    async fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let now = Instant::now();
        let mut h = SiteHealth::new([true], now);
        fail(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), None);
        fail(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), Some(Health::Up));
        assert_eq!(h.health, Health::Down);
        assert!(h.reason.contains("connect failed"), "{}", h.reason);
        pass(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), None, "one success is not enough");
        fail(&mut h);
        pass(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), None, "a failure resets the run");
        pass(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), Some(Health::Down));
        assert_eq!(h.health, Health::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn a_passive_connect_failure_makes_the_site_suspect_at_once() {
        let now = Instant::now();
        let mut h = SiteHealth::new([true], now);
        h.passive_failure(Failure::Connect, now);
        assert_eq!(h.evaluate(now, CALM, &T), Some(Health::Up));
        assert_eq!(h.health, Health::Degraded);
        pass(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), None);
        pass(&mut h);
        assert_eq!(h.evaluate(now, CALM, &T), Some(Health::Degraded));
        assert_eq!(h.health, Health::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn suspicion_expires_after_the_hold() {
        let now = Instant::now();
        let mut h = SiteHealth::new([true], now);
        h.passive_failure(Failure::Timeout, now);
        h.evaluate(now, CALM, &T);
        let later = now + Duration::from_secs(3);
        assert_eq!(h.evaluate(later, CALM, &T), Some(Health::Degraded));
    }

    #[tokio::test(start_paused = true)]
    async fn five_hundreds_only_count_toward_the_error_rate() {
        let now = Instant::now();
        let mut h = SiteHealth::new([true], now);
        h.passive_failure(Failure::Status(503), now);
        assert_eq!(h.evaluate(now, CALM, &T), None);
        let bad = Stats {
            error_rate: 0.5,
            ..CALM
        };
        assert_eq!(h.evaluate(now, bad, &T), Some(Health::Up));
        assert_eq!(h.health, Health::Degraded);
        let slow = Stats {
            ewma_ms: 900.0,
            ..CALM
        };
        h.evaluate(now, slow, &T);
        assert!(h.reason.starts_with("latency"), "{}", h.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn probes_that_do_not_apply_are_ignored() {
        let now = Instant::now();
        let mut h = SiteHealth::new([false, true], now);
        h.probe_result(0, Err((Failure::Connect, None)), &T);
        h.probe_result(0, Err((Failure::Connect, None)), &T);
        assert_eq!(h.evaluate(now, CALM, &T), None);
        assert_eq!(h.health, Health::Up);
    }
}
