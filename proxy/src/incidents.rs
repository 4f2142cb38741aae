//! Incidents: every real failover, measured as it happens. An incident opens when a site
//! leaves service (down, suspect, failed over, maintenance), with a timeline from the first
//! failure sitesteer saw to traffic restored after the site came back, the detection and
//! shift times, the requests that failed or were retried meanwhile, and each recovery
//! objective met or not. Incidents are kept in the state file.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sitesteer_config::{format_utc_ms as utc, Objectives};
use sitesteer_probes::{HealthHandle, SiteState};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::Metrics;
use crate::objectives::{judge, ObjectiveResult};

/// Incidents kept (newest first).
pub(crate) const KEEP: usize = 200;
/// An incident whose site is back but takes no traffic closes after this long.
pub(crate) const RESTORE_WAIT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One step of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Step {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub what: String,
}

/// One measured failover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Incident {
    /// Increases per incident.
    pub id: u64,
    /// The site that left service.
    pub site: String,
    /// `automatic` (health), `manual` (operator) or `drill`.
    pub cause: String,
    /// Still open (the site is not back, or traffic has not returned yet).
    pub open: bool,
    /// First failure seen (or the operator action), ms since the epoch.
    pub started_ms: u64,
    /// ISO-like UTC time of `started_ms`, for humans.
    pub started: String,
    /// Time from the first failure to the site leaving service, ms.
    pub detection_ms: u64,
    /// Time from the first failure to new traffic steered elsewhere, ms.
    pub shift_ms: u64,
    /// Requests that failed to their clients during the incident.
    pub failed_requests: u64,
    /// Requests retried on another site during the incident.
    pub retried_requests: u64,
    /// The objectives, each met or not (filled when the shift is known).
    pub objectives: Vec<ObjectiveResult>,
    /// Every objective met.
    pub met: bool,
    /// What happened, in order.
    pub timeline: Vec<Step>,
    #[serde(skip)]
    failed_at_start: u64,
    #[serde(skip)]
    retried_at_start: u64,
    #[serde(skip)]
    back_at_ms: Option<u64>,
}

/// A finished drill, as the incidents list records it (the admin API takes it from the
/// drill's report).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DrillRecord<'a> {
    /// The site taken out.
    pub site: &'a str,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// Time from the fault until traffic moved, ms (`None`: never).
    pub shift_ms: Option<u64>,
    /// Requests that failed.
    pub failed: u64,
    /// Each objective, target and measured.
    pub objectives: &'a [ObjectiveResult],
    /// Every objective met.
    pub met: bool,
    /// Milestones: (ms since the epoch, what).
    pub timeline: &'a [(u64, String)],
}

#[derive(Default)]
struct Inner {
    list: VecDeque<Incident>,
    first_failure: HashMap<String, u64>,
    next_id: u64,
}

/// The incident recorder.
pub(crate) struct Incidents {
    inner: Mutex<Inner>,
    persist: mpsc::Sender<Vec<Incident>>,
}

impl Incidents {
    /// A recorder starting from `restored` incidents, numbering new ones after `max_id`
    /// (the highest id saved, including entries that could not be read); `persist` receives
    /// the list after every change (the caller writes it to the state file).
    pub(crate) fn new(
        restored: Vec<Incident>,
        max_id: u64,
        persist: mpsc::Sender<Vec<Incident>>,
    ) -> Arc<Self> {
        let next_id = restored.iter().map(|i| i.id).fold(max_id, u64::max) + 1;
        Arc::new(Self {
            inner: Mutex::new(Inner {
                list: restored.into_iter().collect(),
                first_failure: HashMap::new(),
                next_id,
            }),
            persist,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every incident, newest first.
    pub(crate) fn list(&self) -> Vec<Incident> {
        self.lock().list.iter().cloned().collect()
    }

    fn save(&self, inner: &Inner) {
        let _ = self.persist.try_send(inner.list.iter().cloned().collect());
    }

    /// Folds one observation (probe or request) of `site`: failures start the clock,
    /// successes after the site is back restore traffic.
    pub(crate) fn observe(&self, site: &str, ok: bool, passive: bool) {
        let now = now_ms();
        let mut inner = self.lock();
        let open = inner.list.iter().position(|i| i.open && i.site == site);
        match (ok, open) {
            (false, None) => {
                inner.first_failure.entry(site.to_string()).or_insert(now);
            }
            (true, None) => {
                inner.first_failure.remove(site);
            }
            (true, Some(i)) if passive => {
                let incident = &mut inner.list[i];
                if incident.back_at_ms.is_some() {
                    incident.timeline.push(Step {
                        at_ms: now,
                        what: "traffic restored".into(),
                    });
                    incident.open = false;
                    self.save(&inner);
                }
            }
            _ => {}
        }
    }

    /// A site left service at `at_ms`.
    pub(crate) fn open(
        &self,
        site: &str,
        cause: &str,
        reason: &str,
        failed: u64,
        retried: u64,
    ) -> Option<u64> {
        let now = now_ms();
        let mut inner = self.lock();
        if inner.list.iter().any(|i| i.open && i.site == site) {
            return None;
        }
        let started = if cause == "automatic" {
            inner.first_failure.remove(site).unwrap_or(now).min(now)
        } else {
            now
        };
        let id = inner.next_id;
        inner.next_id += 1;
        let mut timeline = Vec::new();
        if started < now {
            timeline.push(Step {
                at_ms: started,
                what: "first failure seen".into(),
            });
        }
        timeline.push(Step {
            at_ms: now,
            what: format!("site out of service: {reason}"),
        });
        timeline.push(Step {
            at_ms: now,
            what: "new traffic steered to other sites".into(),
        });
        inner.list.push_front(Incident {
            id,
            site: site.to_string(),
            cause: cause.to_string(),
            open: true,
            started_ms: started,
            started: utc(started),
            detection_ms: now - started,
            shift_ms: now - started,
            failed_requests: 0,
            retried_requests: 0,
            objectives: Vec::new(),
            met: true,
            timeline,
            failed_at_start: failed,
            retried_at_start: retried,
            back_at_ms: None,
        });
        while inner.list.len() > KEEP {
            inner.list.pop_back();
        }
        self.save(&inner);
        Some(id)
    }

    /// Updates the request counts and objective verdicts of open incidents of `site`.
    pub(crate) fn update(
        &self,
        site: &str,
        failed: u64,
        retried: u64,
        objectives: &Objectives,
        availability: f64,
    ) {
        let mut inner = self.lock();
        for i in inner.list.iter_mut().filter(|i| i.site == site && i.open) {
            i.failed_requests = failed.saturating_sub(i.failed_at_start);
            i.retried_requests = retried.saturating_sub(i.retried_at_start);
            i.objectives = judge(objectives, i.shift_ms, i.failed_requests, availability);
            i.met = i.objectives.iter().all(|o| o.met);
        }
    }

    /// The site is serving again.
    pub(crate) fn back(&self, site: &str) {
        let now = now_ms();
        let mut inner = self.lock();
        if let Some(i) = inner
            .list
            .iter_mut()
            .find(|i| i.open && i.site == site && i.back_at_ms.is_none())
        {
            i.back_at_ms = Some(now);
            i.timeline.push(Step {
                at_ms: now,
                what: "site back in service".into(),
            });
            self.save(&inner);
        }
    }

    /// Records a finished drill as an incident.
    pub(crate) fn record_drill(&self, report: &DrillRecord<'_>) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let shift = report.shift_ms.unwrap_or(0);
        let timeline = report
            .timeline
            .iter()
            .map(|(at_ms, what)| Step {
                at_ms: *at_ms,
                what: what.clone(),
            })
            .collect();
        inner.list.push_front(Incident {
            id,
            site: report.site.to_string(),
            cause: "drill".into(),
            open: false,
            started_ms: report.started_ms,
            started: utc(report.started_ms),
            detection_ms: shift,
            shift_ms: shift,
            failed_requests: report.failed,
            retried_requests: 0,
            objectives: report.objectives.to_vec(),
            met: report.met,
            timeline,
            failed_at_start: 0,
            retried_at_start: 0,
            back_at_ms: None,
        });
        while inner.list.len() > KEEP {
            inner.list.pop_back();
        }
        self.save(&inner);
        id
    }

    /// Closes incidents whose site has been back for [`RESTORE_WAIT`] without traffic.
    pub(crate) fn expire(&self) {
        let now = now_ms();
        let mut inner = self.lock();
        let mut changed = false;
        for i in inner.list.iter_mut().filter(|i| i.open) {
            if i.back_at_ms
                .is_some_and(|b| now.saturating_sub(b) >= RESTORE_WAIT.as_millis() as u64)
            {
                i.timeline.push(Step {
                    at_ms: now,
                    what: "closed: back in service, no traffic returned yet".into(),
                });
                i.open = false;
                changed = true;
            }
        }
        if changed {
            self.save(&inner);
        }
    }
}

/// Opens, updates and closes incidents from state changes, forever.
pub(crate) async fn watch(
    incidents: Arc<Incidents>,
    health: HealthHandle,
    metrics: Arc<Metrics>,
    events: Arc<EventLog>,
    availability: Arc<crate::availability::Availability>,
) {
    let mut changes = health.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) => {
                    // Failovers, not planned work: a drain or maintenance is not an incident.
                    let failover = matches!(c.to, SiteState::Down | SiteState::Degraded)
                        || (c.to == SiteState::Drained && c.reason.contains("failed over"));
                    if c.from == SiteState::Up && failover {
                        let cause = if c.reason.starts_with("operator") { "manual" } else { "automatic" };
                        let (failed, retried) = counts(&metrics, &c.site);
                        if let Some(id) = incidents.open(&c.site, cause, &c.reason, failed, retried) {
                            events.push(NewEvent::new(EventKind::System, "incidents", format!("incident {id} opened: {}", c.reason)).site(&c.site));
                        }
                    } else if c.to == SiteState::Up {
                        incidents.back(&c.site);
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let snap = health.snapshot();
                let now = tokio::time::Instant::now();
                for site in &snap.config.sites {
                    let (failed, retried) = counts(&metrics, &site.name);
                    let avail = availability.ratio(&site.name, 1440, now);
                    incidents.update(&site.name, failed, retried, &site.objectives, avail);
                }
                incidents.expire();
            }
        }
    }
}

fn counts(metrics: &Metrics, site: &str) -> (u64, u64) {
    (
        metrics.failed_requests.with_label_values(&[site]).get(),
        metrics.retries.with_label_values(&[site]).get(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_runs_from_first_failure_to_traffic_restored() {
        let (tx, mut rx) = mpsc::channel(16);
        let incidents = Incidents::new(Vec::new(), 0, tx);
        incidents.observe("a", false, true);
        std::thread::sleep(Duration::from_millis(5));
        let id = incidents
            .open("a", "automatic", "probe failed", 10, 3)
            .expect("opened");
        assert!(
            incidents.open("a", "automatic", "again", 10, 3).is_none(),
            "one open incident per site"
        );
        incidents.update("a", 12, 7, &Objectives::default(), 1.0);
        let i = &incidents.list()[0];
        assert_eq!((i.id, i.failed_requests, i.retried_requests), (id, 2, 4));
        assert!(i.shift_ms >= 5);
        assert!(
            !i.met,
            "two failed requests miss the default objective of 0"
        );
        incidents.back("a");
        incidents.observe("a", true, true);
        let i = &incidents.list()[0];
        assert!(!i.open);
        assert_eq!(
            i.timeline.last().map(|s| s.what.as_str()),
            Some("traffic restored")
        );
        assert!(
            rx.try_recv().is_ok(),
            "changes are handed over for persistence"
        );
    }
}
