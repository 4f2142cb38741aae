//! What the data planes steer by, derived once per published Snapshot: the Snapshot with its
//! decision [`Index`] and the `[[geo]]` table of its config generation ([`Regions`], built
//! once per generation and shared by its Snapshots), swapped in by the health owner's
//! publish hook, and the panic-mode gauge, written there and nowhere else.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::IntGauge;
use sitesteer_probes::{OnPublish, Snapshot};

use super::region::Regions;
use super::Index;

/// A published Snapshot and its decision index, built together once.
#[derive(Debug)]
pub(crate) struct Published {
    /// The Snapshot.
    pub(crate) snapshot: Arc<Snapshot>,
    /// Its decision index.
    pub(crate) index: Index,
    /// The client regions of its config generation (`[[geo]]`).
    pub(crate) regions: Arc<Regions>,
}

impl Published {
    /// `snapshot` with its index and regions.
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> Self {
        Self::after(snapshot, None)
    }

    /// `snapshot` with its index, and the regions of `previous` when that is of the same
    /// config generation (built anew otherwise).
    fn after(snapshot: Arc<Snapshot>, previous: Option<&Published>) -> Self {
        let index = Index::new(&snapshot);
        let regions = match previous {
            Some(p) if p.snapshot.generation == snapshot.generation => p.regions.clone(),
            _ => Arc::new(Regions::new(&snapshot.config.geo)),
        };
        Self {
            snapshot,
            index,
            regions,
        }
    }
}

/// The newest [`Published`], filled by [`PublishedCell::hook`] on every publication.
#[derive(Debug, Default)]
pub(crate) struct PublishedCell {
    current: ArcSwapOption<Published>,
}

impl PublishedCell {
    /// The hook to give the health owner ([`sitesteer_probes::Hooks::on_publish`]): builds
    /// the index of each Snapshot as it is published and sets `panic_mode` (the
    /// `sitesteer_panic_mode` gauge) from [`Snapshot::in_panic`], its only writer.
    pub(crate) fn hook(self: &Arc<Self>, panic_mode: IntGauge) -> OnPublish {
        let cell = self.clone();
        Arc::new(move |snapshot: &Arc<Snapshot>| {
            panic_mode.set(i64::from(snapshot.in_panic()));
            // The hook runs on the health owner only: nothing publishes in between.
            let previous = cell.current.load_full();
            let next = Published::after(snapshot.clone(), previous.as_deref());
            cell.current.store(Some(Arc::new(next)));
        })
    }

    /// The newest publication; `None` only before the health owner published its first
    /// Snapshot (which it does before it is handed to anyone).
    pub(crate) fn load(&self) -> Option<Arc<Published>> {
        self.current.load_full()
    }
}
