//! sitesteer's health: probes, observations, scoring, the site state machine and the
//! published [`Snapshot`].
//!
//! Data flows one way: probe tasks and the proxy send [`Observation`]s; one owner folds them
//! into the [`HealthTable`], merges operator [`Overrides`] and publishes an immutable,
//! versioned [`Snapshot`] through `ArcSwap`. Readers never lock.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

mod in_path;
mod observation;
mod overrides;
mod owner;
mod passive;
pub mod probe;
mod snapshot;
mod state;
mod table;
mod window;

pub use in_path::{hang_sink, in_path, in_path_of, SLOW_DELAY};
pub use observation::{Failure, Observation, SiteId, Source};
pub use overrides::{Fault, Overrides, SiteOverride, UnknownFields};
pub use owner::{start, HealthHandle, Hooks, Observer, OnPublish, OwnerGone};
pub use passive::PassiveReporter;
pub use snapshot::{PassiveCounts, SiteState, SiteView, Snapshot};
pub use state::Health;
pub use table::{score, HealthTable, StateChange};
