//! The raw TCP data plane (erlmcp's newline-delimited JSON-RPC): each new client connection
//! is steered by [`steer::choose`] to a healthy site's `tcp` endpoint and carried byte for
//! byte both ways. A failed connect tries another site before the client sees anything; the
//! connection is registered so it can be closed when its site goes down.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use sitesteer_config::EndpointKind;
use sitesteer_probes::{Failure, HealthHandle, Observation, Source};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::conns::{Closer, Registry, Transport};
use crate::metrics::Metrics;
use crate::steer::{self, RequestCtx, Tried};

/// The TCP proxy app.
pub struct TcpProxy {
    health: HealthHandle,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    tls: Option<Arc<crate::tls::Tls>>,
}

/// An upstream connection: plain TCP, or TLS for `[site.tls]` sites.
pub trait UpstreamIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpstreamIo for T {}

impl TcpProxy {
    /// A TCP proxy steering by `health`.
    pub fn new(health: HealthHandle, metrics: Arc<Metrics>, registry: Arc<Registry>) -> Self {
        Self {
            health,
            metrics,
            registry,
            tls: None,
        }
    }

    /// Reaches `[site.tls]` sites over TLS with the CAs in `tls`.
    pub fn with_tls(mut self, tls: Arc<crate::tls::Tls>) -> Self {
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

    /// Connects to the best site, trying others on failure; returns the site and stream.
    async fn connect(&self) -> Option<(String, Box<dyn UpstreamIo>)> {
        let mut tried = Tried::default();
        let random = fastrand::u64(..);
        loop {
            let snap = self.health.snapshot();
            let mut req = RequestCtx::new(EndpointKind::Tcp, random);
            req.tried = tried;
            let choice = steer::choose(&snap, &req)?;
            tried.push(choice.site);
            let name = snap.sites.get(choice.site)?.name.clone();
            if crate::http::blackholed(&snap, choice.site) {
                self.report(&snap, choice.site, Err(Failure::Connect));
                self.metrics
                    .retries
                    .with_label_values(&[name.as_str()])
                    .inc();
                continue;
            }
            let timeout = snap.config.proxy.connect_timeout;
            let started = Instant::now();
            let result =
                tokio::time::timeout(timeout, self.open(&snap, choice.site, choice.addr)).await;
            let outcome = match result {
                Ok(Ok(stream)) => {
                    self.report(&snap, choice.site, Ok(started.elapsed()));
                    return Some((name, stream));
                }
                Ok(Err(_)) => Failure::Connect,
                Err(_) => Failure::Timeout,
            };
            self.report(&snap, choice.site, Err(outcome));
            self.metrics
                .retries
                .with_label_values(&[name.as_str()])
                .inc();
            if tried.len() > snap.config.proxy.retries || tried.len() >= Tried::CAP {
                return None;
            }
        }
    }

    fn report(
        &self,
        snap: &sitesteer_probes::Snapshot,
        site: usize,
        outcome: Result<std::time::Duration, Failure>,
    ) {
        self.health.reporter().report(Observation {
            site,
            generation: snap.generation,
            source: Source::Passive,
            outcome,
            at: Instant::now(),
            detail: None,
        });
    }
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(
        self: &Arc<Self>,
        mut client: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // On shutdown or upgrade the connection goes on until either side closes it; the
        // drain ends the process at proxy.drain_timeout at the latest.
        let _in_flight = crate::restart::InFlight::start();
        let Some((site, mut upstream)) = self.connect().await else {
            self.metrics.unroutable.inc();
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
        let _registration =
            self.registry
                .register(&site, Transport::Tcp, Closer::Signal(close.clone()));
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                tracing::debug!(site = %site, ?result, "tcp connection ended");
            }
            _ = close.notified() => {
                tracing::debug!(site = %site, "tcp connection closed: site left service");
            }
        }
        None
    }
}
