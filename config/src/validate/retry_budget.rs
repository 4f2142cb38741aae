//! `[proxy.retry_budget]` in the config: the share of recent requests that may be retried,
//! the minimum per second and the window they are counted over.

use std::time::Duration;

use super::{duration, fraction, int_in, Problems};
use crate::defaults as d;
use crate::model::RetryBudget;
use crate::raw::RawRetryBudget;

/// The shortest and longest `ttl` (Finagle's bounds): shorter forgets the traffic a retry
/// is weighed against, longer lets an old burst of requests pay for a storm of retries.
const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// `[proxy.retry_budget]`; its defaults when the table is absent.
pub(super) fn retry_budget(raw: Option<&RawRetryBudget>, p: &mut Problems) -> RetryBudget {
    let default_ttl = Duration::from_secs(d::RETRY_BUDGET_TTL_S);
    let Some(raw) = raw else {
        return RetryBudget {
            ratio: d::RETRY_BUDGET_RATIO,
            min_per_second: d::RETRY_BUDGET_MIN_PER_SECOND,
            ttl: default_ttl,
        };
    };
    let mut ttl = duration(&raw.ttl, default_ttl, "proxy.retry_budget.ttl", p);
    if raw.ttl.is_some() && !(TTL_RANGE.0..=TTL_RANGE.1).contains(&ttl) {
        p.add(
            "proxy.retry_budget.ttl",
            format!(
                "must be at least 1s and at most 60s, got {}",
                crate::format_duration(ttl)
            ),
        );
        ttl = default_ttl;
    }
    RetryBudget {
        ratio: fraction(
            raw.ratio,
            d::RETRY_BUDGET_RATIO,
            false,
            "proxy.retry_budget.ratio",
            p,
        ),
        min_per_second: int_in(
            raw.min_per_second,
            d::RETRY_BUDGET_MIN_PER_SECOND,
            (0, 1_000_000),
            "proxy.retry_budget.min_per_second",
            p,
        ),
        ttl,
    }
}
