//! What the data planes steer by, derived once per published Snapshot: the Snapshot with its
//! decision [`Index`], the `[[geo]]` table of its config generation ([`Regions`], built
//! once per generation and shared by its Snapshots) and its sites' load counters
//! ([`Loads`]), swapped in by the health owner's publish hook, and the panic-mode gauge,
//! written there and nowhere else.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::IntGauge;
use sitesteer_probes::{OnPublish, Snapshot};

use super::load::{LoadTable, Loads};
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
    /// Its sites' load counters, by id.
    pub(crate) loads: Loads,
}

impl Published {
    /// `snapshot` with its index and regions, and load counters shared with nothing else
    /// (tests).
    #[cfg(test)]
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> Self {
        let loads = Loads::detached(&snapshot);
        Self::with(snapshot, loads, None)
    }

    /// `snapshot` with its index, counting load in `table`, and the regions of `previous`
    /// when that is of the same config generation (built anew otherwise).
    pub(crate) fn with_loads(
        snapshot: Arc<Snapshot>,
        table: &Arc<LoadTable>,
        previous: Option<&Published>,
    ) -> Self {
        let loads = table.sites(&snapshot);
        Self::with(snapshot, loads, previous)
    }

    fn with(snapshot: Arc<Snapshot>, loads: Loads, previous: Option<&Published>) -> Self {
        let index = Index::new(&snapshot);
        let regions = match previous {
            Some(p) if p.snapshot.generation == snapshot.generation => p.regions.clone(),
            _ => Arc::new(Regions::new(&snapshot.config.geo)),
        };
        Self {
            snapshot,
            index,
            regions,
            loads,
        }
    }
}

/// The newest [`Published`], filled by [`PublishedCell::hook`] on every publication, and the
/// load counters every publication shares.
#[derive(Debug, Default)]
pub(crate) struct PublishedCell {
    current: ArcSwapOption<Published>,
    loads: Arc<LoadTable>,
}

impl PublishedCell {
    /// A cell whose publications count load in `loads`.
    pub(crate) fn new(loads: LoadTable) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            loads: Arc::new(loads),
        }
    }

    /// The load counters of every publication.
    pub(crate) fn loads(&self) -> &Arc<LoadTable> {
        &self.loads
    }

    /// The hook to give the health owner ([`sitesteer_probes::Hooks::on_publish`]): builds
    /// the index of each Snapshot as it is published and sets `panic_mode` (the
    /// `sitesteer_panic_mode` gauge) from [`Snapshot::in_panic`], its only writer.
    pub(crate) fn hook(self: &Arc<Self>, panic_mode: IntGauge) -> OnPublish {
        let cell = self.clone();
        Arc::new(move |snapshot: &Arc<Snapshot>| {
            panic_mode.set(i64::from(snapshot.in_panic()));
            // The hook runs on the health owner only: nothing publishes in between.
            let previous = cell.current.load_full();
            let next = Published::with_loads(snapshot.clone(), &cell.loads, previous.as_deref());
            cell.current.store(Some(Arc::new(next)));
        })
    }

    /// The newest publication; `None` only before the health owner published its first
    /// Snapshot (which it does before it is handed to anyone).
    pub(crate) fn load(&self) -> Option<Arc<Published>> {
        self.current.load_full()
    }
}
