//! Graceful restart and shutdown.
//!
//! **Upgrade.** `sitesteer run --upgrade` starts a new process that asks pingora for the
//! listening sockets of the running one over `proxy.upgrade_sock` (a path both derive from
//! the same config). `SIGQUIT` to the old process makes it send them; from then on both
//! accept on the same sockets (no connection is refused in between), and after pingora's
//! hand-over pause (5 s) the old one stops accepting, finishes what it has in flight and
//! exits. The admin listener and the DNS listener are sitesteer's own, not pingora
//! services: the admin socket is bound with `SO_REUSEPORT` so the new process can bind it
//! while the old one still serves, and the old one closes its own admin socket as soon as
//! it hands its sockets over; the DNS listener of the new process is bound once the old
//! one has let go of it.
//!
//! **Drain.** On `SIGTERM` (and at the end of an upgrade) pingora stops accepting and
//! closes idle keep-alive connections; sitesteer then waits until no request, HTTP/1
//! connection or TCP connection is in flight, at most `proxy.drain_timeout`, and exits 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pingora::server::ExecutionPhase;
use tokio::sync::{broadcast, watch};

/// Requests and HTTP/1 connections (HTTP) and connections (TCP) in flight in the data planes.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Marks one request or connection in flight for as long as it lives.
#[derive(Debug)]
pub(crate) struct InFlight(());

impl InFlight {
    /// Starts counting.
    pub(crate) fn start() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        Self(())
    }

    /// How many are in flight now.
    pub(crate) fn count() -> usize {
        IN_FLIGHT.load(Ordering::Acquire)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds the admin listener with `SO_REUSEPORT`, so that a process started with
/// `--upgrade` can bind it while the old process still holds it. Without `upgrade`, a
/// plain bind is tried first, so that a second sitesteer on the same port still fails to
/// start instead of sharing it by accident.
pub(crate) fn bind_admin(
    addr: SocketAddr,
    upgrade: bool,
) -> std::io::Result<tokio::net::TcpListener> {
    if !upgrade {
        std::net::TcpListener::bind(addr).map(drop)?;
    }
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds with retries while an old process (during an upgrade) still holds `addr`: every
/// 100 ms until `limit`. Returns the last error when it never frees up.
pub(crate) async fn retry_bind<T, E, F, Fut>(limit: Duration, mut bind: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match bind().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Follows pingora's execution phases: closes the admin listener (`admin_stop`) once the
/// listening sockets are handed to a new process, and once pingora has stopped accepting
/// (after `SIGTERM`, or at the end of an upgrade), waits until nothing is in flight, at
/// most `drain`, then exits the process with 0.
pub(crate) async fn watch_shutdown(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    admin_stop: watch::Sender<bool>,
    drain: Duration,
) {
    loop {
        let phase = match phases.recv().await {
            Ok(p) => p,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        match phase {
            ExecutionPhase::GracefulUpgradeTransferringFds => {
                tracing::info!("SIGQUIT: handing the listening sockets to the new process");
                let _ = admin_stop.send(true);
            }
            ExecutionPhase::GracefulUpgradeCloseTimeout => {
                tracing::info!("listening sockets handed over; both processes accept until pingora's hand-over pause ends");
            }
            ExecutionPhase::GracefulTerminate => {
                tracing::info!(in_flight = InFlight::count(), "SIGTERM: draining");
            }
            ExecutionPhase::ShutdownGracePeriod => {
                let (left, waited) = wait_drained(drain).await;
                if left == 0 {
                    tracing::info!(waited_ms = waited.as_millis() as u64, "drained; exiting");
                } else {
                    tracing::warn!(
                        in_flight = left,
                        drain_timeout_ms = drain.as_millis() as u64,
                        "drain timeout reached; exiting with requests still in flight"
                    );
                }
                std::process::exit(0);
            }
            _ => {}
        }
    }
}

/// How many idle checks in a row make the data planes drained (100 ms).
const IDLE_CHECKS: u32 = 5;

/// Waits until nothing has been in flight for `IDLE_CHECKS` checks in a row, 20 ms apart (a
/// connection accepted just as the listeners stopped is handed to the app a moment later),
/// at most `limit`. Returns what is left and how long it took.
async fn wait_drained(limit: Duration) -> (usize, Duration) {
    let started = tokio::time::Instant::now();
    let mut idle_checks = 0;
    loop {
        let left = InFlight::count();
        idle_checks = if left == 0 { idle_checks + 1 } else { 0 };
        if idle_checks >= IDLE_CHECKS || started.elapsed() >= limit {
            return (left, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_while_alive() {
        let before = InFlight::count();
        let a = InFlight::start();
        let b = InFlight::start();
        assert!(InFlight::count() >= before + 2);
        drop((a, b));
    }

    #[tokio::test]
    async fn an_admin_port_is_shared_only_on_upgrade() {
        let first = bind_admin("127.0.0.1:0".parse().expect("addr"), false).expect("bind");
        let addr = first.local_addr().expect("addr");
        assert!(bind_admin(addr, false).is_err(), "a plain start must fail");
        let second = bind_admin(addr, true).expect("an upgrade shares the port");
        drop((first, second));
    }
}
