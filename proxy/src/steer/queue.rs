//! The short, bounded wait of a request whose every candidate site is at its cap
//! (`[[site]] max_in_flight`): [`next_queued`] is [`Attempts::next`] that, on
//! [`NoSite::Full`], waits for a request in flight to end (woken by its [`LoadGuard`]'s
//! drop) and tries again, for at most `proxy.queue_timeout` and with at most
//! `proxy.queue_length` requests waiting at once. A request that finds the queue full or
//! waits it out is shed: [`NoSite::Full`], counted in `sitesteer_shed_total{listener}`;
//! nothing waits longer.
//!
//! [`LoadGuard`]: super::load::LoadGuard

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::load::LoadTable;
use super::{Attempts, Choice, NoSite, Steering};

/// Wake-ups one request may take before it is shed, whatever the clock says.
const MAX_WAKEUPS: usize = 10_000;

/// [`Attempts::next`], waiting in the queue while every site is at its cap; `listener`
/// (`http`, `tcp`) labels a shed.
pub(crate) async fn next_queued(
    attempts: &mut Attempts,
    steering: &Steering,
    pinned: Option<&str>,
    listener: &str,
) -> Result<Choice, NoSite> {
    match attempts.next(steering, pinned) {
        Err(NoSite::Full) => {}
        other => return other,
    }
    let table = steering.loads().clone();
    let proxy = &attempts.snapshot().config.proxy;
    let deadline = Instant::now() + proxy.queue_timeout;
    // Joins the queue before looking again, so that a slot freed from now on wakes it.
    let Some(_slot) = Slot::take(&table, proxy.queue_length) else {
        steering.count_shed(listener);
        return Err(NoSite::Full);
    };
    for _ in 0..MAX_WAKEUPS {
        // Registered before the look, so a slot freed in between is not missed.
        let freed = table.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match attempts.next(steering, pinned) {
            Err(NoSite::Full) => {}
            other => return other,
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            break;
        }
    }
    steering.count_shed(listener);
    Err(NoSite::Full)
}

/// A place in the queue, given back on drop.
struct Slot<'a>(&'a LoadTable);

impl<'a> Slot<'a> {
    fn take(table: &'a LoadTable, length: usize) -> Option<Self> {
        let before = table.waiting.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(table);
        // Pairs with the fence of a request in flight that ends (`load.rs`).
        std::sync::atomic::fence(Ordering::SeqCst);
        (before < length).then_some(slot)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
