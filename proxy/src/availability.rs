//! Long-window availability per site (5 minutes, 1 hour, 1 day), the figure SLOs such as
//! 99.999% are checked against: the share of successful probes, kept in one-minute buckets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One bucket per minute for a day.
const BUCKET: Duration = Duration::from_secs(60);
const BUCKETS: usize = 24 * 60;

/// The windows reported, with their labels.
pub(crate) const WINDOWS: [(&str, usize); 3] = [("5m", 5), ("1h", 60), ("1d", 1440)];

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    fail: u64,
}

struct Site {
    start: Instant,
    buckets: VecDeque<(u64, Counts)>,
}

/// Probe outcomes per site, by minute.
#[derive(Default)]
pub(crate) struct Availability {
    sites: Mutex<HashMap<String, Site>>,
}

impl Availability {
    /// Records one probe outcome of `site` at `now`.
    pub(crate) fn record(&self, site: &str, ok: bool, now: Instant) {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sites.entry(site.to_string()).or_insert_with(|| Site {
            start: now,
            buckets: VecDeque::new(),
        });
        let minute = now.saturating_duration_since(entry.start).as_secs() / BUCKET.as_secs();
        if entry.buckets.back().map(|(m, _)| *m) != Some(minute) {
            entry.buckets.push_back((minute, Counts::default()));
            while entry.buckets.len() > BUCKETS {
                entry.buckets.pop_front();
            }
        }
        if let Some((_, c)) = entry.buckets.back_mut() {
            if ok {
                c.ok += 1;
            } else {
                c.fail += 1;
            }
        }
    }

    /// Availability of `site` over the last `minutes` (1.0 with no data).
    pub(crate) fn ratio(&self, site: &str, minutes: usize, now: Instant) -> f64 {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = sites.get(site) else {
            return 1.0;
        };
        let current = now.saturating_duration_since(entry.start).as_secs() / BUCKET.as_secs();
        let oldest = current.saturating_sub(minutes as u64 - 1);
        let (ok, fail) = entry
            .buckets
            .iter()
            .filter(|(m, _)| *m >= oldest)
            .fold((0u64, 0u64), |(ok, fail), (_, c)| {
                (ok + c.ok, fail + c.fail)
            });
        if ok + fail == 0 {
            1.0
        } else {
            ok as f64 / (ok + fail) as f64
        }
    }

    /// Forgets sites not in `keep` (after a reload).
    pub(crate) fn retain(&self, keep: &[String]) {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites.retain(|name, _| keep.contains(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn windows_see_only_their_minutes() {
        let a = Availability::default();
        let t0 = Instant::now();
        a.record("s", false, t0);
        a.record("s", true, t0);
        let later = t0 + Duration::from_secs(10 * 60);
        for _ in 0..8 {
            a.record("s", true, later);
        }
        assert_eq!(a.ratio("s", 5, later), 1.0);
        assert!((a.ratio("s", 60, later) - 0.9).abs() < 1e-9);
        assert_eq!(a.ratio("other", 5, later), 1.0);
    }
}
