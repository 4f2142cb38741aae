//! sitesteer: the front door. Steering ([`steer`]), the data planes ([`http`]), the admin
//! API ([`admin`]), metrics and the CLI (which also runs the demo sites of `sitesteer-demo`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod availability;
pub mod cli;
pub mod cluster;
pub mod conns;
pub mod ctl;
pub mod dns;
pub mod drill;
pub mod events;
pub mod exit;
pub mod http;
pub mod incidents;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod objectives;
pub mod observe;
pub mod operator;
pub mod restart;
pub mod server;
pub mod session;
pub mod state_file;
pub mod stdio;
pub mod steer;
pub mod tcp;
pub mod tls;
pub mod tools;
pub mod webhooks;
