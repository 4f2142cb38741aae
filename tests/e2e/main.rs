//! End-to-end tests: real sitesteer and demo-site processes on 127.0.0.1.
#![warn(unreachable_pub, missing_docs)]

mod harness;
mod pyenv;
mod stream_site;
mod traffic;

mod accounting;
mod admin;
mod browser;
mod chaos;
mod checked;
mod cluster;
mod config_check;
mod dns;
mod dns_flood;
mod dns_guard;
mod drill;
mod failover;
mod forwarded;
mod geo;
mod hostile;
mod load;
mod netns;
mod ops;
mod probes;
mod recovery;
mod rescue;
mod restart;
mod retry_budget;
mod security;
mod streams;
mod tls;
mod transports;
