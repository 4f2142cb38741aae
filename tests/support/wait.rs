//! Bounded waits: every loop of a test ends, in time.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_until`] checks.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` every 10 ms until it is true or `limit` passes; returns the time it took, or
/// `None` when it never became true.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    None
}
