//! The registry of open long-lived connections (WebSocket, SSE, TCP) and of requests in
//! flight on pingora's streaming path, per site, and the sweeper that closes them when their
//! site goes down, into maintenance, or stays drained past the drain timeout: clients
//! reconnect to a healthy site, and a request on a hung site gets its answer (a 502 saying
//! that its outcome is unknown) when the site is judged down, not after `read_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus::IntGaugeVec;
use sitesteer_probes::{HealthHandle, SiteState};
use tokio::sync::Notify;

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
}

/// Open long-lived connections by site name.
pub(crate) struct Registry {
    sites: Mutex<HashMap<String, Vec<Conn>>>,
    next_id: AtomicU64,
    open: IntGaugeVec,
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
    /// An empty registry that keeps `open` (labels `site`, `transport`) current.
    pub(crate) fn new(open: IntGaugeVec) -> Arc<Self> {
        Arc::new(Self {
            sites: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Conn>>> {
        self.sites
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an open connection to `site`.
    pub(crate) fn register(
        self: &Arc<Self>,
        site: &str,
        transport: Transport,
        closer: Closer,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(site.to_string())
            .or_default()
            .push(Conn { id, closer });
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
}

/// How often the sweeper looks.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(20);

/// Closes connections of sites that are down or in maintenance for `close_grace`, or drained
/// for `drain_timeout`; down sites keep theirs in panic mode, where steering itself uses
/// them. Runs until the process ends.
pub(crate) async fn sweep(registry: Arc<Registry>, health: HealthHandle) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = health.snapshot();
        let now = SystemTime::now();
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
