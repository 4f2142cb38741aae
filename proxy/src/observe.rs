//! Turns health into what operators watch: probe metrics and long-window availability from
//! every observation, and events for state changes, failovers, score crossings and panic mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sitesteer_probes::{HealthHandle, Observation, Observer, SiteState, Source};
use tokio::sync::broadcast::error::RecvError;

use crate::availability::Availability;
use crate::events::{EventKind, EventLog, NewEvent};
use crate::incidents::Incidents;
use crate::metrics::Metrics;

/// A score below this is worth an event (and above it again).
pub(crate) const SCORE_ALERT: f64 = 0.5;
/// How often scores and panic mode are checked between state changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The observer the health owner calls with every probe and passive observation.
pub(crate) fn observer(
    metrics: Arc<Metrics>,
    availability: Arc<Availability>,
    incidents: Arc<Incidents>,
) -> Observer {
    Arc::new(move |obs: &Observation, site: &str| {
        incidents.observe(site, obs.outcome.is_ok(), obs.source == Source::Passive);
        let Source::Probe(_) = obs.source else {
            return;
        };
        availability.record(site, obs.outcome.is_ok(), obs.at);
        match obs.outcome {
            Ok(latency) => metrics
                .probe_latency
                .with_label_values(&[site, "probe"])
                .observe(latency.as_secs_f64()),
            Err(failure) => metrics
                .probe_failures
                .with_label_values(&[site, failure.as_str()])
                .inc(),
        }
    })
}

/// Records state changes, failovers, score crossings and panic mode as events, forever; after
/// a reload, forgets the availability and score records of the sites it removed.
pub(crate) async fn watch(
    health: HealthHandle,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    availability: Arc<Availability>,
) {
    let mut changes = health.subscribe();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let mut panic = health.snapshot().in_panic();
    let mut low_score: HashMap<String, bool> = HashMap::new();
    let mut generation = health.snapshot().generation;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) => {
                    if c.to == SiteState::Down && matches!(c.from, SiteState::Up | SiteState::Degraded) {
                        metrics.failovers.with_label_values(&[c.site.as_str(), "automatic"]).inc();
                    }
                    events.push(NewEvent::new(EventKind::State, "health", c.reason).site(&c.site).change(c.from.as_str(), c.to.as_str()));
                }
                Err(RecvError::Lagged(n)) => {
                    events.push(NewEvent::new(EventKind::System, "health", format!("{n} state changes were too quick to log one by one")));
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let snap = health.snapshot();
                if snap.generation != generation {
                    generation = snap.generation;
                    let names: Vec<String> = snap.sites.iter().map(|s| s.name.clone()).collect();
                    availability.retain(&names);
                    low_score.retain(|name, _| names.contains(name));
                }
                for s in &snap.sites {
                    let low = s.score < SCORE_ALERT && matches!(s.state, SiteState::Up | SiteState::Degraded);
                    let was = low_score.insert(s.name.clone(), low).unwrap_or(false);
                    if low != was {
                        let (from, to) = if low { ("ok", "low") } else { ("low", "ok") };
                        events.push(NewEvent::new(EventKind::Score, "health", format!("score {:.2} crossed {SCORE_ALERT}", s.score)).site(&s.name).change(from, to));
                    }
                }
                metrics.observations_dropped.set(health.reporter().overflowed() as i64);
            }
        }
        let now_panic = health.snapshot().in_panic();
        if now_panic != panic {
            panic = now_panic;
            let reason = if panic {
                "panic mode: no site is up or degraded; traffic spreads over every site not in maintenance"
            } else {
                "panic mode over: a site is serving again"
            };
            events.push(NewEvent::new(EventKind::Panic, "health", reason).change(
                if panic { "off" } else { "on" },
                if panic { "on" } else { "off" },
            ));
        }
    }
}
