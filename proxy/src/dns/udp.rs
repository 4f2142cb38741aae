//! DNS over UDP on sitesteer's own threads: `dns.udp_threads` blocking threads (default
//! [`DEFAULT_THREADS`]), each with its own socket on `listen.dns` (`SO_REUSEPORT` when there
//! is more than one, so the kernel spreads clients over them). A thread receives up to
//! [`BATCH`] queries with one `recvmmsg`, answers each with its [`Responder`] (hickory's
//! parser, the one [`respond`](super::respond::respond), hickory's encoder, and the replay
//! cache) into buffers it reuses, and sends the answers with one `sendmmsg`. Nothing is
//! allocated per query on a cache hit; nothing is spawned.
//!
//! Every thread checks its stop flag at least every [`POLL`] (the socket's receive timeout),
//! so `UdpServer::stop` (in the tests) ends them; in the running proxy they live as long as the process
//! (a graceful upgrade starts the new process's threads once the old process has exited and
//! let go of the port, as before).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvmmsg, sendmmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage, MsgFlags,
    MultiHeaders, SockFlag, SockType, SockaddrStorage,
};

use crate::metrics::Metrics;

use super::replay::{is_query, Responder};
use super::respond::MAX_UDP_PAYLOAD;
use super::rrl::{slip, Verdict};
use super::Shared;

pub(super) use sitesteer_config::DNS_UDP_THREADS as DEFAULT_THREADS;

/// Queries received (and answers sent) per system call, at most.
pub(super) const BATCH: usize = 32;
/// Receive buffer per query, bytes; longer datagrams are dropped.
pub(super) const RECV_BUF: usize = 4096;
/// Longest a thread waits before it checks its stop flag.
pub(super) const POLL: Duration = Duration::from_millis(200);
/// Longest a send may block before the answer is dropped.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// Pause after an unexpected socket error, so that a broken socket cannot spin a core.
pub(super) const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The UDP threads of one `listen.dns`. The running proxy detaches them; the tests also ask
/// for the bound address and stop them.
pub(super) struct UdpServer {
    #[cfg(test)]
    addr: SocketAddr,
    #[cfg(test)]
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn bind_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<UdpSocket> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(POLL))?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok(socket)
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

impl UdpServer {
    /// Binds `threads` sockets on `addr` (at least one; a port 0 is chosen once and shared)
    /// and starts one thread per socket answering from `shared`.
    pub(super) fn start(
        addr: SocketAddr,
        threads: usize,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let reuse_port = threads > 1;
        let first = bind_socket(addr, reuse_port)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..threads {
            sockets.push(bind_socket(addr, reuse_port)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(threads);
        for (i, socket) in sockets.into_iter().enumerate() {
            let (shared, metrics, flag) = (shared.clone(), metrics.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve(&socket, &shared, metrics, &flag));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        tracing::info!(%addr, threads, "dns listening (udp)");
        Ok(Self {
            #[cfg(test)]
            addr,
            #[cfg(test)]
            stop,
            threads: handles,
        })
    }

    /// The bound address.
    #[cfg(test)]
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the threads and waits for them (at most about [`POLL`]).
    #[cfg(test)]
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Lets the threads run for as long as the process lives.
    pub(super) fn detach(self) {
        drop(self.threads);
    }
}

/// A received datagram: its length, its source, and whether it was cut (longer than
/// [`RECV_BUF`]).
type Received = (usize, Option<SockaddrStorage>, bool);

fn serve(socket: &UdpSocket, shared: &Shared, metrics: Arc<Metrics>, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut responder = Responder::new(metrics.clone());
    let mut rx: Box<[[u8; RECV_BUF]; BATCH]> =
        match vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice().try_into() {
            Ok(rx) => rx,
            Err(_) => return,
        };
    let mut tx: [Vec<u8>; BATCH] =
        std::array::from_fn(|_| Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD)));
    let mut to: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
    let mut got: [Received; BATCH] = [(0, None, false); BATCH];
    let mut rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);

    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let received = {
            let mut slices = rx.each_mut().map(|b| [IoSliceMut::new(b)]);
            recvmmsg(
                fd,
                &mut rx_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )
            .map(|results| {
                let mut n = 0;
                for (slot, r) in got.iter_mut().zip(results) {
                    *slot = (r.bytes, r.address, r.flags.contains(MsgFlags::MSG_TRUNC));
                    n += 1;
                }
                n
            })
        };
        let n = match received {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => {
                // Warn once per streak of errors, not every pause.
                if !failing {
                    tracing::warn!(error = %e, "dns udp receive failed");
                }
                failing = true;
                std::thread::sleep(ERROR_PAUSE);
                continue;
            }
        };
        failing = false;
        let current = shared.current();
        let now = Instant::now();
        let mut answers = 0;
        for (&(len, from, cut), packet) in got.iter().zip(rx.iter()).take(n) {
            let (Some(from), false) = (from, cut) else {
                continue;
            };
            let (Some(src), Some(packet), Some(out)) =
                (socket_addr(&from), packet.get(..len), tx.get_mut(answers))
            else {
                continue;
            };
            let answered = is_query(packet, src)
                && match shared.limiter.check(src.ip(), now, &current.rrl) {
                    Verdict::Answer => responder.answer(&current, packet, src, out),
                    limited => {
                        metrics
                            .dns_rate_limited
                            .with_label_values(&[limited.label()])
                            .inc();
                        limited == Verdict::Slip && slip(packet, out)
                    }
                };
            if answered {
                to[answers] = Some(from);
                answers += 1;
            }
        }
        send_all(fd, &mut tx_headers, &tx[..answers], &to[..answers]);
    }
}

/// Sends `answers[i]` to `to[i]`, in as few `sendmmsg` calls as the kernel allows; an answer
/// the kernel refuses is dropped (UDP: the client retries).
fn send_all(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    answers: &[Vec<u8>],
    to: &[Option<SockaddrStorage>],
) {
    let total = answers.len().min(to.len());
    let mut done = 0;
    // Each round sends at least one answer or drops one; EINTR retries at most once more each.
    for _ in 0..2 * total + 1 {
        if done >= total {
            return;
        }
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(answers.get(i).map_or(&[][..], |a| a))]);
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            fd,
            headers,
            iovs[done..total].iter(),
            &to[done..total],
            no_cmsgs,
            MsgFlags::empty(),
        )
        .map(Iterator::count);
        match sent {
            Ok(0) => done += 1,
            Ok(k) => done += k,
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::debug!(error = %e, "dns udp answer not sent");
                done += 1;
            }
        }
    }
}
