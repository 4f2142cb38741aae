//! Drill faults that act in the path to a site, where a real failure would: while one is on
//! a site, every new connection sitesteer makes to it (probes and traffic) goes to a local
//! stand-in that fails the way a broken site does. sitesteer then has to detect the fault as
//! it would a real one, by timeouts, errors and latency; nothing about it reaches steering.
//!
//! - `hang`: a listener that accepts and never answers (a deadlock, a stop-the-world pause,
//!   `SIGSTOP`: the kernel still completes the handshake, nothing reads).
//! - `drop`: a listener whose accept queue is kept full, so that the kernel drops every new
//!   SYN and connects time out, as when packets to the site are dropped.
//! - `slow`: a relay to the site that holds every chunk of the site's answers for
//!   [`SLOW_DELAY`].
//! - `errors`: a responder that answers every request with HTTP 500 and a JSON-RPC error.
//!
//! Each stand-in runs on a thread of its own for the life of the process, started on first
//! use; a stand-in that cannot start leaves the path as it is (the drill then sees no
//! effect, and says so in its detection figure).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::overrides::Fault;
use crate::snapshot::Snapshot;

/// How late a `slow` fault makes the site's answers.
pub const SLOW_DELAY: Duration = Duration::from_millis(200);
/// Connections a stand-in holds open at most; the oldest is closed beyond that.
const HELD: usize = 4096;

/// Where a new connection to `addr`, an endpoint of a site with `fault`, goes instead; `None`
/// for faults that do not act in the path (`kill-probe`, `blackhole`) or a stand-in that
/// cannot start.
pub fn in_path(fault: Fault, addr: SocketAddr) -> Option<SocketAddr> {
    match fault {
        Fault::Hang => hang_sink(),
        Fault::Drop => drop_sink(),
        Fault::Errors => error_responder(),
        Fault::Slow => slow_relay(addr),
        Fault::KillProbe | Fault::Blackhole => None,
    }
}

/// Where a new connection to `addr`, an endpoint of site `site` in `snapshot`, goes instead:
/// its fault's stand-in, or `None` when the site has no fault that acts in the path. Probes
/// and the data planes both ask this.
pub fn in_path_of(snapshot: &Snapshot, site: usize, addr: SocketAddr) -> Option<SocketAddr> {
    in_path(snapshot.sites.get(site)?.fault?, addr)
}

/// The `hang` stand-in: accepts every connection and never answers.
pub fn hang_sink() -> Option<SocketAddr> {
    static SINK: OnceLock<Option<SocketAddr>> = OnceLock::new();
    *SINK.get_or_init(|| {
        serve("hang-sink", |listener| {
            let mut held: VecDeque<TcpStream> = VecDeque::with_capacity(64);
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if held.len() >= HELD {
                    held.pop_front();
                }
                held.push_back(stream);
            }
        })
    })
}

/// The `drop` stand-in: a listener that never accepts, its one-slot backlog filled by a
/// connection of its own, so that the kernel drops every further SYN.
fn drop_sink() -> Option<SocketAddr> {
    static SINK: OnceLock<Option<(SocketAddr, TcpListener, TcpStream)>> = OnceLock::new();
    SINK.get_or_init(|| {
        let socket = socket2_listener()?;
        let addr = socket.local_addr().ok()?;
        // The backlog (0: one pending connection) is now full; the kernel drops SYNs.
        let filler = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        Some((addr, socket, filler))
    })
    .as_ref()
    .map(|(addr, _, _)| *addr)
}

/// A loopback listener with a backlog of 0 (one pending connection): std's
/// `TcpListener::bind` listens with 128, so the socket is made with nix.
fn socket2_listener() -> Option<TcpListener> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 0);
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).ok()?;
    listen(&fd, Backlog::new(0).ok()?).ok()?;
    Some(TcpListener::from(fd))
}

/// The `errors` stand-in: reads a request head and answers HTTP 500 with a JSON-RPC error.
fn error_responder() -> Option<SocketAddr> {
    static RESPONDER: OnceLock<Option<SocketAddr>> = OnceLock::new();
    *RESPONDER.get_or_init(|| {
        serve("error-responder", |listener| {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("error-answer".into())
                    .spawn(move || answer_error(stream));
            }
        })
    })
}

const ERROR_BODY: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"drill: injected error"}}"#;

fn answer_error(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ERROR_BODY}",
        ERROR_BODY.len()
    );
    let _ = stream.write_all(answer.as_bytes());
}

/// The `slow` stand-in for `target`: a relay that passes requests on at once and holds
/// every chunk of the answers for [`SLOW_DELAY`].
fn slow_relay(target: SocketAddr) -> Option<SocketAddr> {
    static RELAYS: OnceLock<Mutex<HashMap<SocketAddr, Option<SocketAddr>>>> = OnceLock::new();
    let relays = RELAYS.get_or_init(Default::default);
    let mut relays = relays.lock().unwrap_or_else(|p| p.into_inner());
    *relays.entry(target).or_insert_with(|| {
        serve("slow-relay", move |listener| {
            for client in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("slow-relay-conn".into())
                    .spawn(move || relay_slowly(client, target));
            }
        })
    })
}

fn relay_slowly(client: TcpStream, target: SocketAddr) {
    let Ok(site) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(mut client_in), Ok(mut site_out)) = (client.try_clone(), site.try_clone()) else {
        return;
    };
    // Requests go on at once.
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut site_out);
        let _ = site_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut site_in, mut client_out) = (site, client);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match site_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(SLOW_DELAY);
                if client_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = client_out.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

/// Binds a loopback listener and runs `body` on it in a thread named `name`.
fn serve(name: &str, body: impl FnOnce(&TcpListener) + Send + 'static) -> Option<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).ok()?;
    let addr = listener.local_addr().ok()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(&listener))
        .ok()?;
    Some(addr)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

    fn ask(addr: SocketAddr, wait: Duration) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
        stream.set_read_timeout(Some(wait))?;
        stream.write_all(REQUEST)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => return Ok(out),
            }
        }
    }

    #[test]
    fn a_hang_accepts_and_never_answers() {
        let addr = in_path(Fault::Hang, "127.0.0.1:1".parse().unwrap()).expect("sink");
        assert_eq!(hang_sink(), Some(addr), "one sink per process");
        let err = ask(addr, Duration::from_millis(200)).expect_err("no answer");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{err}"
        );
    }

    #[test]
    fn a_drop_makes_connects_time_out() {
        let addr = in_path(Fault::Drop, "127.0.0.1:1".parse().unwrap()).expect("sink");
        let started = Instant::now();
        let err = TcpStream::connect_timeout(&addr, Duration::from_millis(300))
            .expect_err("the SYN is dropped");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn errors_answer_500_with_a_json_rpc_error() {
        let addr = in_path(Fault::Errors, "127.0.0.1:1".parse().unwrap()).expect("responder");
        let answer =
            String::from_utf8(ask(addr, Duration::from_secs(2)).expect("an answer")).expect("text");
        assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
        assert!(answer.ends_with(ERROR_BODY), "{answer}");
    }

    #[test]
    fn slow_passes_the_site_s_answer_on_late() {
        let site = TcpListener::bind("127.0.0.1:0").expect("site");
        let target = site.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut s in site.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
        });
        let relay = in_path(Fault::Slow, target).expect("relay");
        assert_eq!(
            in_path(Fault::Slow, target),
            Some(relay),
            "one relay per site"
        );
        let started = Instant::now();
        let answer = ask(relay, Duration::from_secs(2)).expect("an answer");
        assert!(answer.ends_with(b"ok"), "{answer:?}");
        assert!(started.elapsed() >= SLOW_DELAY, "{:?}", started.elapsed());
    }

    #[test]
    fn faults_that_tell_sitesteer_leave_the_path_alone() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(in_path(Fault::KillProbe, addr), None);
        assert_eq!(in_path(Fault::Blackhole, addr), None);
    }
}
