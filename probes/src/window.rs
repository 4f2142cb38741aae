//! Sliding-window counters and latency statistics of one site.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: u32 = 20;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    start: Option<Instant>,
    probe_ok: u32,
    probe_fail: u32,
    traffic_ok: u32,
    traffic_fail: u32,
}

/// Success and failure counts over a sliding time window, in 20 buckets.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    span: Duration,
    buckets: VecDeque<Bucket>,
}

/// Totals over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Successful probes.
    pub probe_ok: u32,
    /// Failed probes.
    pub probe_fail: u32,
    /// Successful real requests.
    pub traffic_ok: u32,
    /// Failed real requests.
    pub traffic_fail: u32,
}

impl Totals {
    /// Fraction of probes that succeeded; 1 when there were none.
    pub(crate) fn availability(&self) -> f64 {
        ratio(self.probe_ok, self.probe_ok + self.probe_fail).unwrap_or(1.0)
    }

    /// Fraction of all observations (probes and real requests) that failed; 0 when none.
    pub(crate) fn error_rate(&self) -> f64 {
        let fail = self.probe_fail + self.traffic_fail;
        ratio(fail, fail + self.probe_ok + self.traffic_ok).unwrap_or(0.0)
    }
}

fn ratio(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) / f64::from(whole))
}

impl Window {
    /// A window spanning `span`.
    pub(crate) fn new(span: Duration) -> Self {
        Self {
            span,
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
        }
    }

    fn bucket_len(&self) -> Duration {
        (self.span / BUCKETS).max(Duration::from_millis(1))
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.buckets.front() {
            match front.start {
                Some(start) if now.saturating_duration_since(start) >= self.span => {
                    self.buckets.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Counts one observation at `now`.
    pub(crate) fn record(&mut self, now: Instant, probe: bool, ok: bool) {
        self.expire(now);
        let len = self.bucket_len();
        let fresh = match self.buckets.back().and_then(|b| b.start) {
            Some(start) => now.saturating_duration_since(start) >= len,
            None => true,
        };
        if fresh {
            self.buckets.push_back(Bucket {
                start: Some(now),
                ..Bucket::default()
            });
        }
        if let Some(b) = self.buckets.back_mut() {
            match (probe, ok) {
                (true, true) => b.probe_ok += 1,
                (true, false) => b.probe_fail += 1,
                (false, true) => b.traffic_ok += 1,
                (false, false) => b.traffic_fail += 1,
            }
        }
    }

    /// Totals of the buckets still inside the window at `now`.
    pub(crate) fn totals(&self, now: Instant) -> Totals {
        self.totals_since(now, None)
    }

    /// Totals of the buckets still inside the window at `now` that started at or after
    /// `since` (all of them when `None`): what was seen since a site came back, without what
    /// was seen while it was down.
    pub(crate) fn totals_since(&self, now: Instant, since: Option<Instant>) -> Totals {
        let mut t = Totals::default();
        for b in &self.buckets {
            if b.start.is_some_and(|s| {
                now.saturating_duration_since(s) < self.span && since.is_none_or(|from| s >= from)
            }) {
                t.probe_ok += b.probe_ok;
                t.probe_fail += b.probe_fail;
                t.traffic_ok += b.traffic_ok;
                t.traffic_fail += b.traffic_fail;
            }
        }
        t
    }
}

/// Latency EWMA and a ring of recent samples for percentiles.
#[derive(Clone, Debug)]
pub(crate) struct Latency {
    alpha: f64,
    ewma_ms: Option<f64>,
    samples: VecDeque<f64>,
    capacity: usize,
}

impl Latency {
    /// `alpha` weighs a new sample; `capacity` samples are kept for p99.
    pub(crate) fn new(alpha: f64, capacity: usize) -> Self {
        Self {
            alpha,
            ewma_ms: None,
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds a sample.
    pub(crate) fn record(&mut self, sample: Duration) {
        let ms = sample.as_secs_f64() * 1000.0;
        self.ewma_ms = Some(match self.ewma_ms {
            None => ms,
            Some(prev) => prev + self.alpha * (ms - prev),
        });
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// The EWMA in milliseconds (0 before the first sample).
    pub(crate) fn ewma_ms(&self) -> f64 {
        self.ewma_ms.unwrap_or(0.0)
    }

    /// The 99th percentile of the kept samples, in milliseconds.
    pub(crate) fn p99_ms(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_forgets_old_buckets() {
        let mut w = Window::new(Duration::from_secs(1));
        let t0 = Instant::now();
        w.record(t0, true, false);
        w.record(t0, true, true);
        assert_eq!(w.totals(t0).availability(), 0.5);
        let later = t0 + Duration::from_millis(1500);
        w.record(later, true, true);
        assert_eq!(w.totals(later).availability(), 1.0);
        assert_eq!(w.totals(later).error_rate(), 0.0);
    }

    #[test]
    fn ewma_and_p99() {
        let mut l = Latency::new(0.5, 100);
        l.record(Duration::from_millis(10));
        l.record(Duration::from_millis(20));
        assert!((l.ewma_ms() - 15.0).abs() < 1e-9);
        for i in 0..100 {
            l.record(Duration::from_millis(i));
        }
        assert!((l.p99_ms() - 98.0).abs() < 1e-9);
    }
}
