//! The data plane's side of passive health: [`PassiveReporter`] turns what real traffic saw
//! into the Snapshot's counters (successes) and observations for the owner (failures).

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::observation::{Failure, Observation, SiteId};
use crate::snapshot::Snapshot;

/// The sending side used by the data plane. It never blocks and loses nothing: a success is
/// counted in the Snapshot's [`PassiveCounts`](crate::PassiveCounts) (one relaxed add), a failure is sent at once
/// so that it acts at once, and counted there too when the channel is full; the owner folds
/// the counts on its next tick.
#[derive(Clone, Debug)]
pub struct PassiveReporter {
    tx: mpsc::Sender<Observation>,
    overflowed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PassiveReporter {
    /// Wraps the observation channel.
    pub(crate) fn new(tx: mpsc::Sender<Observation>) -> Self {
        Self {
            tx,
            overflowed: Default::default(),
        }
    }

    /// Real traffic to `site` of `snap` succeeded.
    pub fn success(&self, snap: &Snapshot, site: SiteId) {
        snap.passive.success(site);
    }

    /// Real traffic to `site` of `snap` failed with `failure`.
    pub fn failure(&self, snap: &Snapshot, site: SiteId, failure: Failure) {
        let obs = Observation::passive(site, snap.generation, Err(failure), Instant::now());
        if self.tx.try_send(obs).is_err() {
            snap.passive.failure(site, failure);
            self.overflowed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Failures that found the channel full and were counted instead (folded on the owner's
    /// next tick, so none is lost).
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(std::sync::atomic::Ordering::Relaxed)
    }
}
