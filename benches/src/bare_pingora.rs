//! `bare-pingora`: the framework's ceiling for the throughput benchmark (`benches/run.sh`).
//!
//! The smallest useful pingora 0.9 proxy: round-robin over `--upstream` addresses, a new
//! `HttpPeer` per request, every other `ProxyHttp` hook at pingora's default (including the
//! downstream compression module, at level 0), pingora's default `ServerConf` apart from
//! `threads`, and the system allocator (glibc malloc). It is what the pingora examples
//! build; sitesteer does strictly more per request, so it is the bar sitesteer's requests
//! per second are held to.
//!
//! `bare-pingora --listen 127.0.0.1:PORT --upstream 127.0.0.1:P1 [--upstream ...] [--threads N]`
#![warn(unreachable_pub, missing_docs)]

mod bare;

fn main() -> std::process::ExitCode {
    bare::main()
}
