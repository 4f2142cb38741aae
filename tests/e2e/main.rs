//! End-to-end tests: real sitesteer and demo-site processes on 127.0.0.1.

mod harness;
mod pyenv;
mod traffic;

mod admin;
mod config_check;
mod failover;
mod probes;
mod transports;
