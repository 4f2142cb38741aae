//! sitesteer: the front door. Steering ([`steer`]), the data planes ([`http`]), the admin
//! API ([`admin`]), metrics and the CLI (which also runs the demo sites of `sitesteer-demo`).
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]
// The crate's interface is its binary; its docs are read with `--document-private-items`,
// where these links resolve.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod availability;
pub mod cli;
mod cluster;
mod conns;
mod ctl;
pub mod dns;
mod drill;
mod events;
mod exit;
pub mod http;
mod idle;
mod incidents;
pub mod limits;
pub mod mcp;
pub mod metrics;
mod objectives;
mod observe;
mod operator;
pub mod proxy_protocol;
mod restart;
mod secrets;
mod server;
pub mod session;
mod shed;
mod state_file;
mod stdio;
pub mod steer;
mod tcp;
mod tls;
mod tools;
mod upstream;
mod webhooks;
