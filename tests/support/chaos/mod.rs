//! The chaos kit, shared by the reduced suite (`tests/e2e/chaos.rs` and `netns.rs`, in
//! `make test`) and the full one (`tests/chaos/main.rs`, `make chaos`): real processes, steady
//! mixed load, faults injected into sites, and the figures `RELIABILITY.md` reports.

pub mod client;
pub mod distance;
pub mod faults;
pub mod lab;
pub mod load;
pub mod netlab;
pub mod nfqueue;
pub mod suite;
