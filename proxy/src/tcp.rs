//! The raw TCP data plane (erlmcp's newline-delimited JSON-RPC): each new client connection
//! is steered by the selection loop ([`Attempts`]) to a healthy site's `tcp` endpoint
//! and carried byte for byte both ways. The site connection opens only once the client has
//! sent its first bytes (a client that sends nothing within `limits.header_timeout` is
//! closed without ever reaching a site), and those bytes go first. A failed connect tries
//! another site before the client sees anything; the connection is registered so it can be
//! closed when its site goes down, or after `limits.stream_idle_timeout` without a byte
//! either way. The client (the PROXY header's, when a trusted balancer sent one) is placed
//! by `[[geo]]`, so the connection prefers its region's sites.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use sitesteer_config::EndpointKind;
use sitesteer_probes::Failure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::conns::{Closer, Registry, Transport};
use crate::idle::{Activity, Watched};
use crate::metrics::Metrics;
use crate::steer::{Attempts, LoadGuard, NoSite, Steering};

/// Most bytes read from a client before its site connection opens (the rest follows as it
/// is copied). Small: every silent client holds this buffer while it waits.
/// A connection to a site: its name, the stream, and its place in the site's load.
type Connected = (String, Box<dyn UpstreamIo>, Option<LoadGuard>);

const FIRST_READ: usize = 4 * 1024;

/// The TCP proxy app.
pub(crate) struct TcpProxy {
    steering: Arc<Steering>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    tls: Option<Arc<crate::tls::Tls>>,
}

/// An upstream connection: plain TCP, or TLS for `[site.tls]` sites.
pub(crate) trait UpstreamIo:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpstreamIo for T {}

impl TcpProxy {
    /// A TCP proxy steering by `steering`.
    pub(crate) fn new(
        steering: Arc<Steering>,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            steering,
            metrics,
            registry,
            tls: None,
        }
    }

    /// Reaches `[site.tls]` sites over TLS with the CAs in `tls`.
    pub(crate) fn with_tls(mut self, tls: Arc<crate::tls::Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A TCP connection to `addr`, with TLS (SNI, certificate verified against the site's
    /// CA) on top for a TLS site.
    async fn open(
        &self,
        snap: &sitesteer_probes::Snapshot,
        site: usize,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Box<dyn UpstreamIo>> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let tls = self.tls.as_ref().zip(snap.config.sites.get(site));
        match tls.and_then(|(tls, site)| tls.tcp_connector(site, addr)) {
            None => Ok(Box::new(stream)),
            Some(Err(e)) => Err(std::io::Error::other(e)),
            Some(Ok((connector, name))) => {
                let tls = connector.connect(name, stream).await.inspect_err(|e| {
                    tracing::warn!(%addr, error = %e, "TLS to the site's tcp endpoint failed");
                })?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Connects to the best site for a client at `client`, trying others on failure;
    /// returns the site, the stream and its place in the site's load. `Err(NoSite::Full)`
    /// when every site is at its cap.
    async fn connect(&self, client: Option<IpAddr>) -> Result<Connected, NoSite> {
        let mut attempts = Attempts::new(EndpointKind::Tcp, self.steering.current());
        if attempts.places_clients() {
            let region = attempts.locate(client).unwrap_or("none");
            tracing::debug!(?client, region, "tcp client placed by [[geo]]");
            self.metrics
                .client_regions
                .with_label_values(&["tcp", region])
                .inc();
        }
        loop {
            let choice =
                crate::steer::next_queued(&mut attempts, &self.steering, None, "tcp").await?;
            let Some(site) = attempts.snapshot().sites.get(choice.site) else {
                return Err(NoSite::Unroutable);
            };
            let name = site.name.clone();
            let snap = attempts.snapshot();
            let timeout = self.steering.connect_timeout(&name, &snap.config.proxy);
            let addr = crate::upstream::connect_addr(snap, choice.site, choice.addr);
            let connecting = std::time::Instant::now();
            let opened = tokio::time::timeout(timeout, self.open(snap, choice.site, addr)).await;
            let failure = match opened {
                Ok(Ok(stream)) => {
                    self.steering.connected(&name, connecting.elapsed());
                    // An open stream from now on (taken before the success, which would end
                    // the attempt's load).
                    let load = attempts.take_stream();
                    // Counted, not sent: no message per connection (see `PassiveCounts`).
                    attempts.succeeded(&self.steering);
                    return Ok((name, stream, load));
                }
                Ok(Err(_)) => Failure::Connect,
                Err(_) => Failure::Timeout,
            };
            attempts.failed(&self.steering, failure);
        }
    }
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(
        self: &Arc<Self>,
        mut client: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // On shutdown or upgrade the connection goes on until either side closes it; the
        // drain ends the process at proxy.drain_timeout at the latest.
        let _in_flight = crate::restart::InFlight::start();
        // The client's address: a PROXY header's when a trusted balancer sent one.
        let peer = crate::limits::peer_of(&client);
        let client_ip = crate::limits::peer_ip(&client);
        let first = self.first_bytes(&mut client, shutdown).await?;
        let connected = self.connect(client_ip).await;
        if matches!(connected, Err(NoSite::Full)) {
            // Shed: the client hears why, as one over limits.max_connections does.
            let _ = client.write_all(crate::shed::TCP_LINE).await;
            let _ = client.flush().await;
        }
        let Ok((site, upstream, _load)) = connected else {
            self.metrics.failed_requests.with_label_values(&["-"]).inc();
            self.metrics
                .requests
                .with_label_values(&["-", "tcp", "0"])
                .inc();
            return None;
        };
        self.metrics
            .requests
            .with_label_values(&[site.as_str(), "tcp", "0"])
            .inc();
        let close = Arc::new(Notify::new());
        let activity = Activity::new();
        let _registration = self.registry.register(
            &site,
            Transport::Tcp,
            Closer::Signal(close.clone()),
            Some(activity.clone()),
        );
        let mut client = Watched::new(client, activity.clone());
        let mut upstream = Watched::new(upstream, activity);
        let carried = async {
            upstream.write_all(&first).await?;
            drop(first);
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        };
        tokio::select! {
            result = carried => {
                tracing::debug!(site = %site, client = %peer, ?result, "tcp connection ended");
            }
            _ = close.notified() => {
                tracing::debug!(site = %site, client = %peer, "tcp connection closed: its site left service or it sat idle");
            }
        }
        None
    }
}

impl TcpProxy {
    /// The client's first bytes, read before any site connection opens: `None` when the
    /// client closes, the service shuts down, or nothing arrives within
    /// `limits.header_timeout` (counted as refused, `first_byte_timeout`).
    async fn first_bytes(&self, client: &mut Stream, shutdown: &ShutdownWatch) -> Option<Vec<u8>> {
        let timeout = self
            .steering
            .current()
            .snapshot
            .config
            .limits
            .header_timeout;
        let mut shutdown = shutdown.clone();
        let mut buf = [0u8; FIRST_READ];
        let read = tokio::select! {
            read = tokio::time::timeout(timeout, client.read(&mut buf)) => read,
            _ = shutdown.changed() => return None,
        };
        match read {
            Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
            Ok(_) => None,
            Err(_) => {
                tracing::debug!(
                    listener = "tcp",
                    ?timeout,
                    "closing a client that sent nothing (limits.header_timeout)"
                );
                self.metrics
                    .refused
                    .with_label_values(&["tcp", "first_byte_timeout"])
                    .inc();
                None
            }
        }
    }
}
