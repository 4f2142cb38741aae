//! Demo MCP sites: small, controllable MCP servers that exercise sitesteer's health probing
//! and traffic steering in tests, demos and benchmarks.
//!
//! A [`DemoSite`] speaks MCP over four transports (Streamable HTTP, WebSocket, HTTP+SSE and
//! newline-delimited JSON-RPC on raw TCP) and can be told through its `/control` endpoint to
//! misbehave (slow, failing, hanging, malformed, cut). The proxy's command line runs them:
//! `sitesteer demo` starts three behind the front door ([`DemoSite::spawn`]) and the hidden
//! `sitesteer demo-site` runs one in its own process ([`run_site`]). This crate knows nothing
//! of the proxy, and reports failures as typed errors ([`BindError`], [`SiteError`]), never
//! as exit codes.
//!
//! [`framing`] is the newline-delimited framing of the TCP transport, public for the fuzzer.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

pub mod framing;
mod rpc;
mod run;
mod sessions;
mod site;
mod sse;
mod state;
mod streamable;
mod tcp;
#[cfg(test)]
mod test_support;
mod transports;
mod ws;

pub use run::{run_site, SiteError};
pub use site::{BindError, DemoSite};
