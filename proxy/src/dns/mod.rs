//! Authoritative DNS with geo-steering, answering from the same health
//! [`Snapshot`] and the same [`crate::steer::choose()`]
//! as the proxy.
//!
//! This module owns the DNS listener on `listen.dns` and everything a query needs: [`zone`]
//! (names, SOA, NS, NXDOMAIN/NODATA/REFUSED, the TTL rule), [`geo`] (client network →
//! region, ECS scope), [`answer`] (addresses in steering order), [`respond`] (the reply to
//! one query, the single source of every answer), [`udp`] (UDP on its own threads, with
//! `recvmmsg`/`sendmmsg`) and [`replay`] (its per-packet path and replay cache), [`rrl`]
//! (response rate limiting over UDP), [`tcp`] (DNS over TCP on a thread of its own, with a
//! connection cap and an idle timeout) and [`watch`] (events when an answer set changes).
//!
//! The zone and the DNS view of the snapshot are rebuilt lazily on the query path whenever
//! the published snapshot changes, so a site that goes down leaves the answers at the next
//! query, and a reload that changes `[dns]` or `[[geo]]` takes effect at once (a new
//! `listen.dns` or `dns.udp_threads` needs a restart).

mod answer;
mod geo;
pub mod replay;
mod respond;
pub mod rrl;
pub mod tcp;
mod udp;
mod watch;
mod zone;

#[cfg(test)]
mod mmdb_writer;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_udp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sitesteer_config::{Config, Rrl};
use sitesteer_probes::{HealthHandle, Snapshot};

use crate::events::EventLog;
use crate::metrics::Metrics;

use answer::View;
use geo::{GeoDb, GeoMap};
use rrl::RateLimiter;
use zone::Zone;

/// What one query answers from: the zone of a config generation and the DNS view of one
/// snapshot version.
#[derive(Debug)]
pub struct Current {
    /// The zone; `None` when the running config has no `[dns]` (every query is REFUSED).
    pub zone: Option<Arc<Zone>>,
    /// The snapshot, re-keyed by address family.
    pub view: View,
    /// Response rate limiting over UDP, from the snapshot's config.
    pub rrl: Rrl,
}

impl Current {
    /// What queries answer from with `zone` and `snap`.
    pub fn new(zone: Option<Arc<Zone>>, snap: &Snapshot) -> Self {
        Self {
            zone,
            view: View::new(snap),
            rrl: snap.config.limits.dns.rrl,
        }
    }
}

/// The state shared by the UDP threads, the TCP thread and the event watcher.
pub struct Shared {
    health: HealthHandle,
    current: ArcSwap<Current>,
    /// The UDP threads' response rate limiter.
    limiter: RateLimiter,
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not bind.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The GeoIP database could not be read.
    #[error("cannot read the GeoIP database {path}: {reason}")]
    GeoDb {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A name of `[dns]` is not a valid DNS name.
    #[error("{0}")]
    Zone(#[from] zone::ZoneError),
}

fn geo_map(config: &Config, strict: bool) -> Result<GeoMap, StartError> {
    let db = match config.dns.as_ref().and_then(|d| d.geoip.as_ref()) {
        None => None,
        Some(g) => match GeoDb::load(g) {
            Ok(db) => Some(db),
            Err(e) if strict => {
                return Err(StartError::GeoDb {
                    path: g.db.clone(),
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                tracing::warn!(path = %g.db.display(), error = %e, "cannot read the GeoIP database; placing clients by [[geo]] only");
                None
            }
        },
    };
    Ok(GeoMap::new(&config.geo, db))
}

impl Shared {
    /// The shared state for `health`'s current snapshot; fails when the zone or its GeoIP
    /// database cannot be loaded.
    pub fn new(health: HealthHandle) -> Result<Self, StartError> {
        let snap = health.snapshot();
        let zone = Zone::build(&snap.config, geo_map(&snap.config, true)?)?.map(Arc::new);
        let current = Current::new(zone, &snap);
        Ok(Self {
            health,
            current: ArcSwap::from_pointee(current),
            limiter: RateLimiter::default(),
        })
    }

    fn rebuild(&self, snap: &Snapshot, old: &Current) -> Arc<Current> {
        let zone = if old.view.generation == snap.generation {
            old.zone.clone()
        } else {
            let built = geo_map(&snap.config, false)
                .and_then(|geo| Zone::build(&snap.config, geo).map_err(StartError::from));
            match built {
                Ok(zone) => {
                    tracing::info!(
                        generation = snap.generation,
                        zone = zone
                            .as_ref()
                            .map(|z| z.apex.to_string())
                            .unwrap_or_default(),
                        "dns zone loaded"
                    );
                    zone.map(Arc::new)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dns zone not reloaded; keeping the previous one");
                    old.zone.clone()
                }
            }
        };
        let fresh = Arc::new(Current::new(zone, snap));
        self.current.store(fresh.clone());
        fresh
    }

    /// What a query answers from now: rebuilt when the snapshot changed since the last call.
    pub fn current(&self) -> Arc<Current> {
        let snap = self.health.cell().load();
        let cur = self.current.load_full();
        if cur.view.version == snap.version && cur.view.generation == snap.generation {
            return cur;
        }
        self.rebuild(&snap, &cur)
    }
}

/// Binds `addr` and serves the zone until the process ends: TCP on a thread of its own
/// ([`tcp`]), UDP on `dns.udp_threads` threads of their own ([`udp`]); also starts the
/// answer-set watcher on the current tokio runtime.
pub async fn start(
    addr: SocketAddr,
    health: HealthHandle,
    metrics: Arc<Metrics>,
    events: Arc<EventLog>,
) -> Result<(), StartError> {
    let bind = |source| StartError::Bind { addr, source };
    // TCP first: during an upgrade it fails while the old process still holds the port.
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .and_then(|l| l.into_std())
        .map_err(bind)?;
    let threads = health
        .snapshot()
        .config
        .dns
        .as_ref()
        .map_or(udp::DEFAULT_THREADS, |d| d.udp_threads);
    let shared = Arc::new(Shared::new(health)?);
    let udp =
        udp::UdpServer::start(addr, threads, shared.clone(), metrics.clone()).map_err(bind)?;
    udp.detach();
    tcp::start(tcp, shared.clone(), metrics).map_err(bind)?;
    tokio::spawn(watch::watch(shared, events));
    tracing::info!(%addr, "dns listening (tcp)");
    Ok(())
}
