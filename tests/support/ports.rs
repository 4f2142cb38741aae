//! Loopback ports for the processes a test starts.

use std::net::TcpListener;

/// A free loopback port (bound and released; the test binds it again right away).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
