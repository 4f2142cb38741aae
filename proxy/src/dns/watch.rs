//! Events when the set of sites DNS answers changes. Every served name answers the same
//! sites, so the set is tracked per address family (A, AAAA): the sites answered and why
//! (normal, degraded, panic), never the shuffle order nor the client's region (a region
//! only reorders a set). Changes are checked every [`CHECK_EVERY`] and reported at most
//! once per [`MIN_GAP`] per family; a change inside the gap is reported, coalesced, when the
//! gap ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::{EventKind, EventLog, NewEvent};
use crate::steer::Mode;

use super::answer::{answer_set, Family};
use super::{Current, Shared};

/// How often the answer sets are compared.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Least time between two events of one family.
pub(super) const MIN_GAP: Duration = Duration::from_secs(1);

/// An answer set as reported: the mode and the site names, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reported {
    mode: Option<Mode>,
    sites: Vec<String>,
}

impl Reported {
    fn describe(&self) -> String {
        let mode = match self.mode {
            None => return "nothing".to_string(),
            Some(Mode::Normal | Mode::Pinned) => "",
            Some(Mode::Degraded) => " (degraded)",
            Some(Mode::Panic) => " (panic: failing open)",
        };
        format!("{}{mode}", self.sites.join(","))
    }
}

/// Rate-limited answer-set change detection (pure; the clock is passed in).
#[derive(Debug, Default)]
pub(super) struct Tracker {
    last: HashMap<Family, (Reported, Option<Instant>)>,
    /// The (generation, version) of the snapshot last compared with nothing pending.
    settled: Option<(u64, u64)>,
}

impl Tracker {
    /// Compares the answer sets of `current` with the last reported ones; returns the
    /// events due at `now`. The first observation of a family is the baseline, not an event.
    pub(super) fn observe(&mut self, current: &Current, now: Instant) -> Vec<NewEvent> {
        let Some(zone) = current.zone.as_deref() else {
            return Vec::new();
        };
        let seen = (current.view.generation, current.view.version);
        if self.settled == Some(seen) {
            return Vec::new();
        }
        let mut pending = false;
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let view = current.view.family(family);
            let (mode, ids) = answer_set(view);
            let mut sites: Vec<String> = ids
                .iter()
                .filter_map(|&i| view.sites.get(i).map(|s| s.name.clone()))
                .collect();
            sites.sort();
            let now_set = Reported { mode, sites };
            match self.last.get_mut(&family) {
                None => {
                    self.last.insert(family, (now_set, None));
                }
                Some((before, _)) if *before == now_set => {}
                Some((_, Some(at))) if now.duration_since(*at) < MIN_GAP => pending = true,
                Some((before, at)) => {
                    out.push(
                        NewEvent::new(
                            EventKind::System,
                            "dns",
                            format!("{} answers in {} changed", family.as_str(), zone.apex),
                        )
                        .change(before.describe(), now_set.describe()),
                    );
                    *before = now_set;
                    *at = Some(now);
                }
            }
        }
        self.settled = (!pending).then_some(seen);
        out
    }
}

/// Runs the tracker for as long as the process lives.
pub(super) async fn watch(shared: Arc<Shared>, events: Arc<EventLog>) {
    let mut tracker = Tracker::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let current = shared.current();
        for event in tracker.observe(&current, Instant::now()) {
            events.push(event);
        }
    }
}
