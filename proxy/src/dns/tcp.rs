//! DNS over TCP (RFC 7766) on a thread of its own, never on the control runtime: one accept
//! loop and one task per connection on a current-thread runtime named `dns-tcp`, so a flood
//! of connections costs that thread and nothing else (the probes and the health owner have
//! their own runtime, the admin API the control runtime).
//!
//! Each connection reads length-prefixed queries one after the other (a client may pipeline
//! them), answers each through [`respond_packet`] (the same answer as over UDP, without the
//! UDP size limit) and writes the answers in order, flushing when no further query is
//! already buffered. Two limits of `[limits]`, read from the current config at every accept
//! (a reload applies to new connections):
//!
//! - `dns_tcp_max_connections`: a connection over the cap is closed at once, unanswered
//!   (`sitesteer_refused_total{listener="dns_tcp",reason="connections"}`);
//! - `dns_tcp_idle_timeout`: the next whole query must arrive within it (from the accept, or
//!   from the previous answer), and the answers must be taken within it; otherwise the
//!   connection is closed (`reason="idle_timeout"`). A client that trickles a query byte by
//!   byte or never reads its answers is closed like a silent one.
//!
//! `sitesteer_listener_connections{listener="dns_tcp"}` shows the open connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::limits::ConnCount;
use crate::metrics::Metrics;

use super::replay::HEADER_LEN;
use super::respond::{respond_packet, Packet, Transport};
use super::Shared;

/// The `listener` label of DNS-over-TCP series.
pub(super) const LISTENER: &str = "dns_tcp";
/// Pause after a failed accept (out of file descriptors, say), so that it cannot spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);
/// Read buffer per connection, bytes (a query is rarely over 100).
const READ_BUF: usize = 1024;
/// Write buffer per connection, bytes.
const WRITE_BUF: usize = 4096;

/// Starts serving DNS over TCP on `listener` (bound, non-blocking) on the thread `dns-tcp`,
/// for as long as the process lives.
pub(super) fn start(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("dns-tcp".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, shared, metrics).await,
                    Err(e) => tracing::error!(error = %e, "dns tcp listener unusable"),
                }
            })
        })?;
    Ok(())
}

/// Accepts connections for ever, each within the cap of the current config.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, metrics: Arc<Metrics>) {
    let open = Arc::new(ConnCount::with_gauge(
        metrics.listener_connections.with_label_values(&[LISTENER]),
    ));
    let refused = |reason: &str| metrics.refused.with_label_values(&[LISTENER, reason]).inc();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "dns tcp accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let limits = shared.health.snapshot().config.limits.dns.clone();
        let Some(slot) = open.acquire(limits.tcp_max_connections) else {
            refused("connections");
            tracing::debug!(%peer, "dns tcp connection over limits.dns_tcp_max_connections closed");
            drop(stream);
            continue;
        };
        let (shared, metrics) = (shared.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let end = connection(stream, peer, &shared, &metrics, limits.tcp_idle_timeout).await;
            if end == End::Idle {
                metrics
                    .refused
                    .with_label_values(&[LISTENER, "idle_timeout"])
                    .inc();
                tracing::debug!(%peer, "dns tcp connection idle past limits.dns_tcp_idle_timeout closed");
            }
        });
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed it, sent a message too short to be one, or the socket failed.
    Closed,
    /// Nothing whole arrived, or the answers were not taken, within the idle timeout.
    Idle,
}

/// Serves one connection until it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    metrics: &Metrics,
    idle: Duration,
) -> End {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUF, read);
    let mut writer = BufWriter::with_capacity(WRITE_BUF, write);
    let mut query = Vec::with_capacity(512);
    let mut answer = Vec::with_capacity(512);
    loop {
        match tokio::time::timeout(idle, read_message(&mut reader, &mut query)).await {
            Err(_) => return End::Idle,
            Ok(Err(_)) => return End::Closed,
            Ok(Ok(())) => {}
        }
        if !answer_message(
            shared,
            metrics,
            &query,
            peer,
            fastrand::u64(..),
            &mut answer,
        ) {
            return End::Closed;
        }
        let Ok(len) = u16::try_from(answer.len()) else {
            return End::Closed;
        };
        let more = !reader.buffer().is_empty();
        let written = async {
            writer.write_all(&len.to_be_bytes()).await?;
            writer.write_all(&answer).await?;
            if !more {
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(idle, written).await {
            Err(_) => return End::Idle,
            Ok(Err(_)) => return End::Closed,
            Ok(Ok(())) => {}
        }
    }
}

/// Answers one DNS-over-TCP message `query` from `peer` into `out` (without the length
/// prefix), the shuffle drawn from `seed`: `false` when there is nothing to answer (no
/// readable header), and the connection should close. Never panics on input.
pub fn answer_message(
    shared: &Shared,
    metrics: &Metrics,
    query: &[u8],
    peer: SocketAddr,
    seed: u64,
    out: &mut Vec<u8>,
) -> bool {
    let current = shared.current();
    match respond_packet(&current, metrics, query, peer, Transport::Tcp, seed, out) {
        Packet::Answered(..) | Packet::FormErr => true,
        Packet::Nothing => false,
    }
}

/// Reads one length-prefixed message into `into`; an error at the end of the stream, or for
/// a message shorter than a DNS header.
async fn read_message<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    into: &mut Vec<u8>,
) -> std::io::Result<()> {
    let len = usize::from(reader.read_u16().await?);
    if len < HEADER_LEN {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    into.resize(len, 0);
    reader.read_exact(into).await?;
    Ok(())
}
