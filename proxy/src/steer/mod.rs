//! Steering: which site serves a request, and what happens when an attempt fails.
//!
//! - [`choose()`] (`choose.rs`): the decision, a pure function of a Snapshot and a request,
//!   with its precomputed [`Index`]. DNS calls it directly.
//! - `publish.rs`: the Snapshot and its index, built once when the health owner publishes,
//!   and the panic-mode gauge, written there only; `region.rs`: the client's region by
//!   `[[geo]]`, a table built once per config generation.
//! - `attempts.rs`: the one selection loop of the HTTP and TCP data planes: tried sites,
//!   snapshot refresh between attempts, drill faults, the retry budget and the accounting.
//! - `hedge.rs`: how long a safe request waits for its site before it is hedged to another,
//!   and the fleet-wide hedge budget; `connect_times.rs`: how long a connect may take.
//! - `retry_budget.rs`: the fleet-wide retry budget over every further attempt (retries,
//!   hedges, rescues), a window of recent requests.

mod attempts;
mod choose;
mod connect_times;
mod hedge;
mod publish;
mod region;
mod retry_budget;

pub(crate) use attempts::{Attempts, NoSite, SteerMetrics, Steering};
pub use choose::{choose, serves_pinned, Choice, Index, Mode, RequestCtx, Tried};
pub(crate) use hedge::hedge_after;
pub(crate) use publish::{Published, PublishedCell};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_attempts;
