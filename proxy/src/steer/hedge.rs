//! When a request that is safe to repeat stops waiting for its site: the per-attempt hedge
//! deadline, from what the site normally needs, and the fleet-wide hedge budget.
//!
//! A site that hangs (a deadlock, a stop-the-world pause, `SIGSTOP`) or slows down gives no
//! error to react to: only time says something is wrong. A checked exchange still without an
//! answer after [`hedge_after`] is sent to another site as well, and the first right answer
//! wins. [`HedgeBudget`] bounds how many requests may be hedged (a share of them, with a small
//! burst), so a fleet that is slow everywhere is not sent twice the load. A hedge is a further
//! attempt too, so it must also be granted by the fleet-wide retry budget (`retry_budget.rs`),
//! which bounds retries, hedges and rescues together; a hedge the retry budget refuses is
//! given back to the hedge budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sitesteer_config::ProxySettings;
use sitesteer_probes::SiteView;

/// How long an attempt at `site` may go without an answer before it is hedged: the site's
/// probe latency p99 times `proxy.hedge_factor`, at least `proxy.hedge_floor`, at most
/// `proxy.read_timeout`. `None` when hedging is off (`proxy.hedge_budget = 0`).
pub(crate) fn hedge_after(site: &SiteView, proxy: &ProxySettings) -> Option<Duration> {
    if proxy.hedge_budget <= 0.0 {
        return None;
    }
    let p99 = if site.latency_p99_ms.is_finite() && site.latency_p99_ms > 0.0 {
        site.latency_p99_ms
    } else {
        0.0
    };
    Some(deadline_from(p99 / 1000.0, proxy, proxy.read_timeout))
}

/// How long something that normally takes `typical_secs` may take: times
/// `proxy.hedge_factor`, at least `proxy.hedge_floor`, at most `ceiling`. The one rule of
/// the hedge deadline and the connect timeout.
pub(super) fn deadline_from(
    typical_secs: f64,
    proxy: &ProxySettings,
    ceiling: Duration,
) -> Duration {
    let scaled = Duration::from_secs_f64((typical_secs * proxy.hedge_factor).clamp(0.0, 86_400.0));
    scaled.max(proxy.hedge_floor).min(ceiling)
}

/// Budget units per hedge (fixed point, so that a share such as 0.1 adds exactly).
const UNIT: u64 = 1_000;
/// Hedges the budget holds at most: a burst that many requests in flight on a site that
/// just hung may all be rescued at once.
const BURST: u64 = 64;

/// A token bucket shared by every request: each safe request adds `proxy.hedge_budget` of a
/// token, each hedge takes one, and the bucket holds at most [`BURST`] tokens. It starts
/// full, so a site that hangs under light traffic is hedged away from at once.
#[derive(Debug)]
pub(crate) struct HedgeBudget {
    milli_tokens: AtomicU64,
}

impl Default for HedgeBudget {
    fn default() -> Self {
        Self {
            milli_tokens: AtomicU64::new(BURST * UNIT),
        }
    }
}

impl HedgeBudget {
    /// A safe request started: `share` (`proxy.hedge_budget`) of a hedge is earned.
    pub(crate) fn earn(&self, share: f64) {
        let add = (share.clamp(0.0, 1.0) * UNIT as f64) as u64;
        if add == 0 {
            return;
        }
        // Already full is the common case: a load and no write.
        if self.milli_tokens.load(Ordering::Relaxed) >= BURST * UNIT {
            return;
        }
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + add).min(BURST * UNIT))
            });
    }

    /// Gives back a hedge taken and then not sent (the retry budget refused it).
    pub(crate) fn refund(&self) {
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + UNIT).min(BURST * UNIT))
            });
    }

    /// Takes one hedge from the budget; `false` when it is spent.
    pub(crate) fn take(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(UNIT)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_its_share() {
        let budget = HedgeBudget::default();
        for _ in 0..BURST {
            assert!(budget.take());
        }
        assert!(!budget.take(), "spent");
        // Ten requests at a share of 0.1 earn one hedge.
        for _ in 0..9 {
            budget.earn(0.1);
            assert!(!budget.take());
            budget.earn(0.0);
        }
        budget.earn(0.1);
        assert!(budget.take());
        assert!(!budget.take());
        // A hedge given back can be taken again, once.
        budget.refund();
        assert!(budget.take());
        assert!(!budget.take());
        // It never holds more than the burst.
        for _ in 0..10_000 {
            budget.earn(1.0);
        }
        for _ in 0..BURST {
            assert!(budget.take());
        }
        assert!(!budget.take());
    }
}
