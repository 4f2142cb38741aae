//! Where connections to a site under a drill's `hang` fault go: a listener on loopback that
//! accepts every connection and never answers, as a hung site does (a deadlock, a
//! stop-the-world pause, `SIGSTOP`: the kernel still completes the handshake, nothing reads).
//!
//! Probes and the data planes connect here instead of to the site while the fault lasts, so
//! that sitesteer must detect the hang the way it detects a real one: by timeouts. Nothing
//! about the fault reaches steering.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;

/// Connections held open at most; the oldest is closed beyond that.
const HELD: usize = 4096;

/// The sink's address, starting it on first use (a thread of its own for the life of the
/// process). `None` when it cannot listen, which a drill reports as a failed fault.
pub fn hang_sink() -> Option<SocketAddr> {
    static SINK: OnceLock<Option<SocketAddr>> = OnceLock::new();
    *SINK.get_or_init(|| {
        let listener = TcpListener::bind(("127.0.0.1", 0)).ok()?;
        let addr = listener.local_addr().ok()?;
        std::thread::Builder::new()
            .name("hang-sink".into())
            .spawn(move || hold(&listener))
            .ok()?;
        Some(addr)
    })
}

fn hold(listener: &TcpListener) {
    let mut held: VecDeque<TcpStream> = VecDeque::with_capacity(64);
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors or a reset before accept: nothing to hold.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        if held.len() >= HELD {
            held.pop_front();
        }
        held.push_back(stream);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::hang_sink;

    #[test]
    fn the_sink_accepts_and_never_answers() {
        let addr = hang_sink().expect("sink listens");
        assert_eq!(hang_sink(), Some(addr), "one sink per process");
        let mut stream = std::net::TcpStream::connect(addr).expect("accepted");
        stream
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .expect("written");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        let err = stream.read(&mut buf).expect_err("no answer");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
    }
}
