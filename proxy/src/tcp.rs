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
}

impl TcpProxy {
    /// A TCP proxy steering by `health`.
    pub fn new(health: HealthHandle, metrics: Arc<Metrics>, registry: Arc<Registry>) -> Self {
        Self {
            health,
            metrics,
            registry,
        }
    }

    /// Connects to the best site, trying others on failure; returns the site and stream.
    async fn connect(&self) -> Option<(String, TcpStream)> {
        let mut tried = Tried::default();
        let random = fastrand::u64(..);
        loop {
            let snap = self.health.snapshot();
            let mut req = RequestCtx::new(EndpointKind::Tcp, random);
            req.tried = tried;
            let choice = steer::choose(&snap, &req)?;
            tried.push(choice.site);
            let name = snap.sites.get(choice.site)?.name.clone();
            let timeout = snap.config.proxy.connect_timeout;
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, TcpStream::connect(choice.addr)).await;
            let outcome = match result {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
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
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
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
        let mut shutdown = shutdown.clone();
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                tracing::debug!(site = %site, ?result, "tcp connection ended");
            }
            _ = close.notified() => {
                tracing::debug!(site = %site, "tcp connection closed: site left service");
            }
            _ = shutdown.changed() => {}
        }
        None
    }
}
