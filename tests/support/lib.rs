//! What the end-to-end tests (`tests/e2e`, run by `make test`) and the full chaos suite
//! (`tests/chaos`, `make chaos`) share: where the binary under test is, free loopback ports,
//! scratch folders, bounded waits, and the chaos kit ([`chaos`]: real processes, steady mixed
//! load, faults injected into sites, and the figures `RELIABILITY.md` reports).
//!
//! A library crate of its own, so that both suites use one copy of each helper and neither
//! pulls the other's files in with `#[path]`.
#![warn(unreachable_pub, missing_docs)]

mod binary;
pub mod chaos;
mod ports;
mod scratch;
mod wait;

pub use binary::{sitesteer_bin, use_sitesteer_bin, workspace_root};
pub use ports::free_port;
pub use scratch::Scratch;
pub use wait::wait_until;
