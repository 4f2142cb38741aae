//! A userspace delay line for kernels without `sch_netem`: an `iptables ... -j NFQUEUE` rule
//! in a network namespace hands every packet leaving it to this thread (over
//! `nfnetlink_queue`), which gives each one its verdict only after the configured delay, or
//! drops it with the configured probability. That is `tc qdisc ... netem delay D loss L%` on
//! the namespace's egress, packet by packet (SYNs, data and ACKs alike), just in userspace.
//!
//! Plain `libc` netlink: bind queue N in the namespace (the thread enters it with `setns`),
//! copy 64 bytes of each packet, answer `NF_ACCEPT` when due or `NF_DROP`. Bounded: at most
//! `MAX_HELD` packets are held (beyond that they pass at once); on drop the thread lets
//! every held packet through, unbinds and ends.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_NO_ENOBUFS: libc::c_int = 5;
/// Most packets held at once.
const MAX_HELD: usize = 65_536;
/// Kernel-side queue length.
const QUEUE_MAXLEN: u32 = 16_384;

/// The delay and loss a [`DelayLine`] applies, changeable while it runs.
#[derive(Default)]
struct Params {
    delay_us: AtomicU64,
    loss_ppm: AtomicU64,
}

/// What the delay line did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Packets passed after their delay.
    pub passed: u64,
    /// Packets dropped on purpose.
    pub dropped: u64,
}

/// A running delay line on queue `queue` of one network namespace.
pub struct DelayLine {
    params: Arc<Params>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Stats>>,
}

impl DelayLine {
    /// Enters network namespace `netns` (a name under `/run/netns`) on a new thread, binds
    /// nfnetlink queue `queue` there and starts passing packets (with no delay yet).
    pub fn start(netns: &str, queue: u16) -> Result<DelayLine, String> {
        let params = Arc::new(Params::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = format!("/run/netns/{netns}");
        let thread = {
            let (params, stop) = (params.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("delay-line-{netns}"))
                .spawn(move || match open(&path, queue) {
                    Ok(sock) => {
                        let _ = ready_tx.send(Ok(()));
                        run(&sock, queue, &params, &stop)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        Stats::default()
                    }
                })
                .map_err(|e| format!("spawn delay line: {e}"))?
        };
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the delay line did not start".to_string())
            .and_then(|r| r);
        let line = DelayLine {
            params,
            stop,
            thread: Some(thread),
        };
        ready.map(|()| line)
    }

    /// Sets the delay of every packet from now on, and the share of packets dropped.
    pub fn set(&self, delay: Duration, loss: f64) {
        self.params
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        self.params
            .loss_ppm
            .store((loss.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Stops the line (every held packet passes) and returns what it did.
    pub fn stop(mut self) -> Stats {
        self.halt()
    }

    fn halt(&mut self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.halt();
    }
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Enters the namespace and binds the queue; returns the netlink socket.
fn open(netns_path: &str, queue: u16) -> Result<OwnedFd, String> {
    let ns = std::fs::File::open(netns_path).map_err(|e| format!("{netns_path}: {e}"))?;
    // SAFETY: setns on a valid fd; it changes only this thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(errno("setns"));
    }
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(errno("netlink socket"));
    }
    // SAFETY: raw is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: bind with a correctly sized sockaddr_nl.
    let bound = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(errno("bind netlink"));
    }
    set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
    set_int(&sock, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
    let bind = message(
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        queue,
        &[(
            NFQA_CFG_CMD,
            &[NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8],
        )],
    );
    request(&sock, &bind).map_err(|e| format!("bind queue {queue}: {e}"))?;
    let mut copy = 64u32.to_be_bytes().to_vec();
    copy.push(NFQNL_COPY_PACKET);
    let params = message(
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        2,
        queue,
        &[
            (NFQA_CFG_PARAMS, &copy),
            (NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes()),
        ],
    );
    request(&sock, &params).map_err(|e| format!("configure queue {queue}: {e}"))?;
    // Wake up every millisecond to let due packets go.
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 1000,
    };
    // SAFETY: setsockopt with a correctly sized timeval.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(sock)
}

fn set_int(sock: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with a correctly sized int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A netfilter-queue netlink message with `attrs`.
fn message(kind: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut payload = vec![libc::AF_UNSPEC as u8, 0];
    payload.extend_from_slice(&queue.to_be_bytes());
    for (ty, data) in attrs {
        let len = 4 + data.len();
        payload.extend_from_slice(&(len as u16).to_ne_bytes());
        payload.extend_from_slice(&ty.to_ne_bytes());
        payload.extend_from_slice(data);
        payload.resize(payload.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&payload);
    out
}

fn send(sock: &OwnedFd, msg: &[u8]) -> Result<(), String> {
    // SAFETY: send(2) of an initialized buffer.
    let n = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        Err(errno("send"))
    } else {
        Ok(())
    }
}

fn recv(sock: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: recv(2) into a buffer of the given length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).ok()
}

/// Sends a request and waits (bounded) for its acknowledgement.
fn request(sock: &OwnedFd, msg: &[u8]) -> Result<(), String> {
    send(sock, msg)?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..100 {
        let Some(n) = recv(sock, &mut buf) else {
            return Err(errno("recv"));
        };
        for (kind, body) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR && body.len() >= 4 {
                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                return if code == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(-code).to_string())
                };
            }
        }
    }
    Err("no acknowledgement".to_string())
}

/// The (type, body after the netlink header) of every message in `buf`.
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push((kind, &buf[at + 16..at + len]));
        at += len.next_multiple_of(4);
    }
    out
}

/// The packet id of a queued-packet message body (after the nfgenmsg header).
fn packet_id(body: &[u8]) -> Option<u32> {
    let mut at = 4;
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            return None;
        }
        if ty == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes([
                body[at + 4],
                body[at + 5],
                body[at + 6],
                body[at + 7],
            ]));
        }
        at += len.next_multiple_of(4);
    }
    None
}

fn verdict(sock: &OwnedFd, queue: u16, id: u32, verdict: u32) {
    let mut hdr = verdict.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    let msg = message(
        NFQNL_MSG_VERDICT,
        NLM_F_REQUEST,
        0,
        queue,
        &[(NFQA_VERDICT_HDR, &hdr)],
    );
    let _ = send(sock, &msg);
}

/// The loop: hold each packet for the delay, drop some, until stopped.
fn run(sock: &OwnedFd, queue: u16, params: &Params, stop: &AtomicBool) -> Stats {
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut stats = Stats::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    while !stop.load(Ordering::Relaxed) {
        if let Some(n) = recv(sock, &mut buf) {
            let now = Instant::now();
            let delay = Duration::from_micros(params.delay_us.load(Ordering::Relaxed));
            let loss = params.loss_ppm.load(Ordering::Relaxed);
            for (kind, body) in messages(&buf[..n]) {
                if kind != (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) {
                    continue;
                }
                let Some(id) = packet_id(body) else { continue };
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if loss > 0 && rng % 1_000_000 < loss {
                    verdict(sock, queue, id, NF_DROP);
                    stats.dropped += 1;
                } else if delay.is_zero() || held.len() >= MAX_HELD {
                    verdict(sock, queue, id, NF_ACCEPT);
                    stats.passed += 1;
                } else {
                    held.push_back((now + delay, id));
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, id)) = held.pop_front() {
                verdict(sock, queue, id, NF_ACCEPT);
                stats.passed += 1;
            }
        }
    }
    for (_, id) in held.drain(..) {
        verdict(sock, queue, id, NF_ACCEPT);
        stats.passed += 1;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msg = message(
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            7,
            3,
            &[(2, &[1, 2, 3, 4, 5])],
        );
        assert_eq!(msg.len() % 4, 0);
        let parsed = messages(&msg);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT);
        // nfgenmsg: family, version, queue (big endian).
        assert_eq!(&parsed[0].1[..4], &[0, 0, 0, 3]);
    }

    #[test]
    fn finds_the_packet_id() {
        let mut hdr = 0xdead_beefu32.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[8, 0, 1]);
        let msg = message(
            NFQNL_MSG_PACKET,
            0,
            0,
            0,
            &[(9, &[0; 3]), (NFQA_PACKET_HDR, &hdr)],
        );
        let parsed = messages(&msg);
        assert_eq!(packet_id(parsed[0].1), Some(0xdead_beef));
    }
}
