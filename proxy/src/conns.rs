//! The registry of open long-lived connections (WebSocket, SSE, TCP) and of requests in
//! flight on pingora's streaming path, per site, and the sweeper that closes them when their
//! site goes down, into maintenance, or stays drained past the drain timeout: clients
//! reconnect to a healthy site, and a request on a hung site gets its answer (a 502 saying
//! that its outcome is unknown) when the site is judged down, not after `read_timeout`.
//! The same sweep closes long-lived connections idle for `limits.stream_idle_timeout`
//! (see `crate::idle`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, IntGaugeVec};
use sitesteer_probes::{HealthHandle, SiteState};
use tokio::sync::Notify;

use crate::idle::Activity;

/// The transports of long-lived connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    /// WebSocket.
    Ws,
    /// Server-sent events.
    Sse,
    /// Raw TCP.
    Tcp,
    /// A request in flight on the streaming path (not a long-lived connection: not counted
    /// in `sitesteer_open_connections`).
    Request,
}

impl Transport {
    /// The metrics label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Tcp => "tcp",
            Self::Request => "request",
        }
    }
}

/// How to close one connection from outside its task.
pub(crate) enum Closer {
    /// The task waits on this and closes both sides when notified.
    Signal(Arc<Notify>),
    /// The upstream socket of a pingora-proxied connection: shut down by fd, after checking
    /// that the fd still is that socket (same local and peer address), so a reused fd number
    /// is never touched.
    Socket {
        /// The socket's fd.
        fd: std::os::fd::RawFd,
        /// Its local address when registered.
        local: SocketAddr,
        /// Its peer address.
        peer: SocketAddr,
    },
}

impl Closer {
    fn close(&self) {
        match self {
            Closer::Signal(n) => n.notify_one(),
            Closer::Socket { fd, local, peer } => close_socket(*fd, *local, *peer),
        }
    }
}

fn socket_addr_of(addr: Option<nix::sys::socket::SockaddrStorage>) -> Option<SocketAddr> {
    let addr = addr?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// The local and peer addresses of socket `fd`, when it is an inet socket.
pub(crate) fn socket_addrs(fd: std::os::fd::RawFd) -> Option<(SocketAddr, SocketAddr)> {
    use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
    let local = socket_addr_of(getsockname::<SockaddrStorage>(fd).ok())?;
    let peer = socket_addr_of(getpeername::<SockaddrStorage>(fd).ok())?;
    Some((local, peer))
}

fn close_socket(fd: std::os::fd::RawFd, local: SocketAddr, peer: SocketAddr) {
    if socket_addrs(fd) == Some((local, peer)) {
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
}

struct Conn {
    id: u64,
    closer: Closer,
    transport: Transport,
    /// Watched for `limits.stream_idle_timeout`; taken once it was closed for idleness.
    activity: Option<Arc<Activity>>,
}

/// Open long-lived connections by site name.
pub(crate) struct Registry {
    sites: Mutex<HashMap<String, Vec<Conn>>>,
    next_id: AtomicU64,
    open: IntGaugeVec,
    idle_closed: IntCounterVec,
}

/// Keeps a connection registered; unregisters on drop.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    site: String,
    transport: Transport,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(&self.site, self.transport, self.id);
    }
}

impl Registry {
    /// An empty registry that keeps `open` (labels `site`, `transport`) current and counts
    /// connections closed for idleness in `idle_closed` (same labels).
    pub(crate) fn new(open: IntGaugeVec, idle_closed: IntCounterVec) -> Arc<Self> {
        Arc::new(Self {
            sites: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open,
            idle_closed,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Conn>>> {
        self.sites
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an open connection to `site`; one with an `activity` is closed by
    /// [`Registry::close_idle`] once it shows no byte for the idle timeout.
    pub(crate) fn register(
        self: &Arc<Self>,
        site: &str,
        transport: Transport,
        closer: Closer,
        activity: Option<Arc<Activity>>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(site.to_string()).or_default().push(Conn {
            id,
            closer,
            transport,
            activity,
        });
        if transport != Transport::Request {
            self.open
                .with_label_values(&[site, transport.as_str()])
                .inc();
        }
        Registration {
            registry: self.clone(),
            site: site.to_string(),
            transport,
            id,
        }
    }

    fn remove(&self, site: &str, transport: Transport, id: u64) {
        let mut sites = self.lock();
        if let Some(conns) = sites.get_mut(site) {
            let before = conns.len();
            conns.retain(|c| c.id != id);
            if conns.len() != before && transport != Transport::Request {
                self.open
                    .with_label_values(&[site, transport.as_str()])
                    .dec();
            }
        }
    }

    /// Open connections to `site`.
    pub(crate) fn count(&self, site: &str) -> usize {
        self.lock().get(site).map_or(0, Vec::len)
    }

    /// Closes every open connection to `site`; returns how many. Each closes on its own
    /// task and unregisters itself.
    pub(crate) fn close_site(&self, site: &str) -> usize {
        let sites = self.lock();
        let Some(conns) = sites.get(site) else {
            return 0;
        };
        for c in conns {
            c.closer.close();
        }
        conns.len()
    }

    /// Closes every watched connection that moved no byte for `timeout`, counting each in
    /// `sitesteer_idle_closed_total`; returns how many. Each closes on its own task.
    pub(crate) fn close_idle(&self, timeout: Duration) -> usize {
        let mut closed = 0;
        let mut sites = self.lock();
        for (site, conns) in sites.iter_mut() {
            for c in conns.iter_mut() {
                if c.activity.as_ref().is_some_and(|a| a.idle_for() >= timeout) {
                    c.activity = None;
                    c.closer.close();
                    self.idle_closed
                        .with_label_values(&[site, c.transport.as_str()])
                        .inc();
                    tracing::debug!(
                        site,
                        transport = c.transport.as_str(),
                        ?timeout,
                        "closing an idle connection (limits.stream_idle_timeout)"
                    );
                    closed += 1;
                }
            }
        }
        closed
    }
}

/// How often the sweeper looks.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(20);

/// Closes connections of sites that are down or in maintenance for `close_grace`, or drained
/// for `drain_timeout`; down sites keep theirs in panic mode, where steering itself uses
/// them. Also closes connections idle for `limits.stream_idle_timeout`. Runs until the
/// process ends.
pub(crate) async fn sweep(registry: Arc<Registry>, health: HealthHandle) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_checked = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let snap = health.snapshot();
        let now = SystemTime::now();
        let idle = snap.config.limits.stream_idle_timeout;
        if idle_checked.elapsed() >= crate::idle::check_every(idle) {
            idle_checked = tokio::time::Instant::now();
            registry.close_idle(idle);
        }
        // In panic mode steering sends new connections to down sites; closing them there
        // would only make every client reconnect in a loop.
        let panic = snap.in_panic();
        for site in &snap.sites {
            let wait = match site.state {
                SiteState::Down if panic => continue,
                SiteState::Down | SiteState::Maintenance => snap.config.proxy.close_grace,
                SiteState::Drained => snap.config.proxy.drain_timeout,
                _ => continue,
            };
            let since = now.duration_since(site.changed_at).unwrap_or_default();
            if since >= wait && registry.count(&site.name) > 0 {
                let closed = registry.close_site(&site.name);
                tracing::info!(site = %site.name, state = site.state.as_str(), closed, "closing long-lived connections and requests in flight");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Arc<Registry> {
        let open =
            IntGaugeVec::new(prometheus::Opts::new("o", "o"), &["site", "transport"]).unwrap();
        let idle =
            IntCounterVec::new(prometheus::Opts::new("i", "i"), &["site", "transport"]).unwrap();
        Registry::new(open, idle)
    }

    #[tokio::test(start_paused = true)]
    async fn only_watched_connections_idle_past_the_timeout_are_closed_once() {
        let registry = registry();
        let idle = Arc::new(Notify::new());
        let busy = Arc::new(Notify::new());
        let unwatched = Arc::new(Notify::new());
        let (a, b) = (Activity::new(), Activity::new());
        let _r1 = registry.register("s", Transport::Tcp, Closer::Signal(idle.clone()), Some(a));
        let _r2 = registry.register(
            "s",
            Transport::Sse,
            Closer::Signal(busy.clone()),
            Some(b.clone()),
        );
        let _r3 = registry.register(
            "s",
            Transport::Request,
            Closer::Signal(unwatched.clone()),
            None,
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        b.touch();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(registry.close_idle(Duration::from_secs(10)), 1);
        assert_eq!(
            registry.close_idle(Duration::from_secs(10)),
            0,
            "closed once"
        );
        assert_eq!(
            registry.idle_closed.with_label_values(&["s", "tcp"]).get(),
            1
        );
        // The closed one was notified; the others were not.
        tokio::time::timeout(Duration::from_millis(1), idle.notified())
            .await
            .expect("closed");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), busy.notified())
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(1), unwatched.notified())
                .await
                .is_err()
        );
    }
}
