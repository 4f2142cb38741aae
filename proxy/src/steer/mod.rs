//! Steering: which site serves a request, and what happens when an attempt fails.
//!
//! - [`choose()`] (`choose.rs`): the decision, a pure function of a Snapshot and a request,
//!   with its precomputed [`Index`]. DNS calls it directly.
//! - `publish.rs`: the Snapshot and its index, built once when the health owner publishes,
//!   and the panic-mode gauge, written there only; `region.rs`: the client's region by
//!   `[[geo]]`, a table built once per config generation.
//! - `attempts.rs`: the one selection loop of the HTTP and TCP data planes: tried sites,
//!   snapshot refresh between attempts, drill faults, the retry budget and the accounting.
//! - `p2c.rs`: the load-aware decision of the data planes ([`choose_loaded`]): `choose`'s
//!   rules, sites at their cap passed over, and power of two choices over peak-EWMA cost;
//!   `load.rs`: the per-site counters it reads (in flight, open streams, latency);
//!   `queue.rs`: the bounded wait when every site is at its cap, then the shed.
//! - `hedge.rs`: how long a safe request waits for its site before it is hedged to another,
//!   and the fleet-wide hedge budget; `connect_times.rs`: how long a connect may take.
//! - `retry_budget.rs`: the fleet-wide retry budget over every further attempt (retries,
//!   hedges, rescues), a window of recent requests.

mod attempts;
mod choose;
mod connect_times;
mod hedge;
mod load;
mod p2c;
mod publish;
mod queue;
mod region;
mod retry_budget;

pub(crate) use attempts::{Attempts, NoSite, SteerMetrics, Steering};
pub use choose::{choose, serves_pinned, Choice, Index, Mode, RequestCtx, Tried};
pub(crate) use hedge::hedge_after;
pub use load::{Load, SiteLoads, LATENCY_FLOOR, STREAM_LOAD};
pub(crate) use load::{LoadGuard, LoadTable};
/// The names and help texts of the load metrics (registered in [`crate::metrics`]).
pub(crate) mod load_names {
    pub(crate) use super::load::{SHED, SHED_HELP, SITE_IN_FLIGHT, SITE_IN_FLIGHT_HELP};
}
pub use p2c::{choose_loaded, choose_loaded_indexed, Loaded, REDRAWS};
pub(crate) use publish::{Published, PublishedCell};
pub(crate) use queue::next_queued;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_attempts;
#[cfg(test)]
mod tests_p2c;
#[cfg(test)]
mod tests_queue;
