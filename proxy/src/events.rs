//! The events log: a bounded, in-memory record of state changes, score crossings, operator
//! actions, reloads and panic mode, newest first, with a broadcast for live followers (the
//! SSE stream, the status page, webhooks).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept in memory.
pub(crate) const CAPACITY: usize = 1000;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A site's state changed.
    State,
    /// A site's score crossed the alert line.
    Score,
    /// An operator acted (weight, drain, maintenance, failover).
    Operator,
    /// The config was reloaded (or a reload was refused).
    Reload,
    /// Panic mode started or ended.
    Panic,
    /// Anything else the process reports about itself (cluster, drills, incidents).
    System,
}

/// One event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Increases by one per event.
    pub id: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The site concerned, if any.
    pub site: Option<String>,
    /// State (or value) before.
    pub from: Option<String>,
    /// State (or value) after.
    pub to: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// Who did it (`operator`, `probe`, `reload`, ...).
    pub actor: String,
}

/// Builder-style description of an event to record.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The site concerned.
    pub site: Option<String>,
    /// Before.
    pub from: Option<String>,
    /// After.
    pub to: Option<String>,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
}

impl NewEvent {
    /// An event of `kind` by `actor` for `reason`.
    pub fn new(kind: EventKind, actor: &str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            site: None,
            from: None,
            to: None,
            reason: reason.into(),
            actor: actor.to_string(),
        }
    }

    /// Names the site.
    pub fn site(mut self, site: &str) -> Self {
        self.site = Some(site.to_string());
        self
    }

    /// Names the change.
    pub fn change(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self.to = Some(to.into());
        self
    }
}

/// The log.
pub struct EventLog {
    ring: Mutex<VecDeque<Event>>,
    next_id: AtomicU64,
    live: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            next_id: AtomicU64::new(1),
            live: broadcast::channel(256).0,
        }
    }

    /// Records an event and tells live followers.
    pub fn push(&self, e: NewEvent) -> Event {
        let event = Event {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kind: e.kind,
            site: e.site,
            from: e.from,
            to: e.to,
            reason: e.reason,
            actor: e.actor,
        };
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            if ring.len() == CAPACITY {
                ring.pop_back();
            }
            ring.push_front(event.clone());
        }
        tracing::info!(kind = ?event.kind, site = event.site.as_deref().unwrap_or("-"), from = event.from.as_deref().unwrap_or("-"), to = event.to.as_deref().unwrap_or("-"), reason = %event.reason, "event");
        let _ = self.live.send(event.clone());
        event
    }

    /// The newest `limit` events, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().take(limit).cloned().collect()
    }

    /// Follows new events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events_first_and_bounded() {
        let log = EventLog::new();
        for i in 0..(CAPACITY + 5) {
            log.push(NewEvent::new(EventKind::System, "test", format!("e{i}")));
        }
        let recent = log.recent(usize::MAX);
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].reason, format!("e{}", CAPACITY + 4));
        assert!(recent[0].id > recent[1].id);
    }
}
