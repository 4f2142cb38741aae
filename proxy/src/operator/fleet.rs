//! What the operator needs from a fleet's shared store of overrides (`[cluster]`): the
//! [`FleetStore`] trait, the values it hands over, and which part of the overrides a fleet
//! shares. The operator owns this interface; the etcd cluster (`crate::cluster`) implements
//! it, so the operator never depends on the store's implementation.

use async_trait::async_trait;
use sitesteer_config::MAX_WEIGHT;
use sitesteer_probes::Overrides;

use crate::events::NewEvent;

/// The fleet's overrides as read from the store, with where they are in its history.
#[derive(Clone, Debug)]
pub(crate) struct Fetched {
    /// The fleet's overrides.
    pub overrides: Overrides,
    /// The change that wrote them, as the event to record here, when another instance made
    /// it (`None` for this instance's own changes and for values without a note).
    pub change: Option<NewEvent>,
    /// The key's `mod_revision` (0: it does not exist).
    pub mod_revision: i64,
    /// The store revision this was read at.
    pub revision: i64,
    /// This instance seeded the key from its state file.
    pub seeded: bool,
}

/// Why a write through the fleet store was not made.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// The store could not be reached: the change was not applied.
    Unreachable(String),
    /// The store may have taken the change but did not confirm it.
    Uncertain(String),
    /// The store refused it (or answered nonsense): the change was not applied.
    Refused(String),
    /// Another change came first; here is the fresh value to redo the change on.
    Conflict(Fetched),
}

/// A fleet's shared store of operator overrides, as the operator uses it: a
/// compare-and-put on the revision of the last value seen, and the bookkeeping of which
/// revision is applied here. Revisions are read and set under the operator's lock.
#[async_trait]
pub(crate) trait FleetStore: Send + Sync {
    /// True while the store answers.
    fn is_connected(&self) -> bool;

    /// The store revision of the overrides applied here, and the `mod_revision` that the
    /// next write compares against.
    fn revisions(&self) -> (i64, i64);

    /// Records the revisions of the overrides just applied.
    fn set_revisions(&self, applied: i64, base: i64);

    /// Stores the fleet's overrides `next` if the value is still at revision `base`;
    /// `change` says who changed what, for the other instances' events. The new revision.
    async fn store(
        &self,
        next: &Overrides,
        base: i64,
        change: &NewEvent,
    ) -> Result<i64, StoreError>;
}

/// The part of `o` the fleet shares (everything but drill faults, which stay with the
/// instance that runs the drill), with weights held to the range the admin API allows (the
/// store may have been edited by hand).
pub(crate) fn shared(o: &Overrides) -> Overrides {
    let mut out = o.clone();
    for site in out.sites.values_mut() {
        site.fault = None;
        site.weight = site.weight.map(|w| w.min(MAX_WEIGHT));
    }
    out.compact();
    out
}

/// The fleet's `shared` overrides with this instance's drill faults from `local` kept.
pub(crate) fn merge(shared_part: &Overrides, local: &Overrides) -> Overrides {
    let mut out = shared(shared_part);
    for (name, o) in &local.sites {
        if let Some(fault) = o.fault {
            out.entry(name).fault = Some(fault);
        }
    }
    out.compact();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitesteer_probes::Fault;

    #[test]
    fn faults_stay_local_and_the_rest_is_shared() {
        let mut local = Overrides::default();
        local.entry("a").fault = Some(Fault::Blackhole);
        local.entry("b").weight = Some(3);
        let s = shared(&local);
        assert!(s.get("a").is_none(), "a fault alone is not shared");
        assert_eq!(s.get("b").and_then(|o| o.weight), Some(3));
        let mut fleet = Overrides::default();
        fleet.entry("a").drained = true;
        let merged = merge(&fleet, &local);
        let a = merged.get("a").cloned().unwrap_or_default();
        assert!(a.drained && a.fault == Some(Fault::Blackhole));
        assert!(
            merged.get("b").is_none(),
            "the fleet's value replaces b's local weight"
        );
        fleet.entry("c").weight = Some(u32::MAX);
        assert_eq!(
            shared(&fleet).get("c").and_then(|o| o.weight),
            Some(MAX_WEIGHT)
        );
    }
}
