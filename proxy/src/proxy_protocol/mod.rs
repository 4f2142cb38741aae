//! The PROXY protocol (v1 and v2) on `listen.http` and `listen.tcp`: a load balancer in
//! `proxy.trusted_proxies` opens each connection on a listener named in
//! `proxy.proxy_protocol` with a header that names the client, and from then on that
//! address is the connection's peer everywhere (forwarded headers, logs, refusals).
//!
//! The rules, per connection, by the socket's own peer:
//! - a trusted peer on a listener that expects the header must send one, within
//!   `limits.header_timeout` of the accept; a connection without one (or with a broken one)
//!   is closed, with a warning naming the peer;
//! - anyone else who opens with a PROXY signature there is closed (the header would be a
//!   forged client address), counted and logged at debug level; other bytes pass untouched.
//!
//! On a listener not in `proxy.proxy_protocol` nothing is read: a PROXY header on HTTP is a
//! malformed request line (`400`, `crate::limits`), on TCP bytes like any others.
//!
//! The header is read before anything else: on a TLS listener from the raw socket before
//! the handshake ([`PreTls`], pingora's pre-TLS hook), on a plain listener by the listener's
//! gate ([`on_plain`]). What was read past the header is put back into the stream. Parsing
//! is in [`parse`] (pure, bounded).

pub mod parse;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, UniqueID};
use sitesteer_config::Config;
use sitesteer_probes::HealthHandle;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::metrics::Metrics;
use parse::{Parsed, Signature, MAX_HEADER};

/// A data-plane listener that may carry PROXY headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `listen.http`.
    Http,
    /// `listen.tcp`.
    Tcp,
}

impl Listener {
    /// The metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Tcp => "tcp",
        }
    }

    fn expects_header(self, config: &Config) -> bool {
        let on = config.proxy.proxy_protocol;
        match self {
            Listener::Http => on.http,
            Listener::Tcp => on.tcp,
        }
    }
}

/// What a connection's first bytes must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A trusted peer on a listener that expects it: a PROXY header.
    Header,
    /// Anyone else: anything but a PROXY header.
    NoHeader,
}

/// Why a connection was closed before its protocol began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A peer not in `proxy.trusted_proxies` (or on a listener that expects no header) sent
    /// a PROXY header.
    Untrusted,
    /// A trusted peer on a listener that expects a header sent something else first.
    Missing,
    /// A trusted peer sent a broken header.
    Invalid(&'static str),
    /// A trusted peer sent no complete header within `limits.header_timeout`.
    Timeout,
    /// The peer closed (or the socket failed) before anything could be decided.
    Closed,
}

impl Refusal {
    /// The `reason` label of `sitesteer_refused_total`; `None` for a client that left.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Refusal::Untrusted => Some("proxy_untrusted"),
            Refusal::Missing => Some("proxy_missing"),
            Refusal::Invalid(_) => Some("proxy_invalid"),
            Refusal::Timeout => Some("proxy_timeout"),
            Refusal::Closed => None,
        }
    }
}

/// Reads what `expect` says from the start of `l4`, until `deadline`: the header (its
/// client address set as the stream's peer), or the first bytes checked and put back.
async fn read_start(
    l4: &mut L4Stream,
    expect: Expect,
    deadline: Instant,
) -> Result<Option<parse::Header>, Refusal> {
    let mut buf = [0u8; MAX_HEADER];
    let mut n = 0;
    loop {
        let seen = buf.get(..n).unwrap_or_default();
        match expect {
            Expect::Header => match parse::parse(seen) {
                Parsed::Incomplete => {}
                Parsed::Header(header) => {
                    l4.rewind(seen.get(header.len..).unwrap_or_default());
                    if let Some(client) = header.source {
                        set_peer(l4, client);
                    }
                    return Ok(Some(header));
                }
                Parsed::NotProxy => return Err(Refusal::Missing),
                Parsed::Invalid(why) => return Err(Refusal::Invalid(why)),
            },
            Expect::NoHeader => match parse::signature(seen) {
                Signature::Unknown => {}
                Signature::Proxy => return Err(Refusal::Untrusted),
                Signature::NotProxy => {
                    l4.rewind(seen);
                    return Ok(None);
                }
            },
        }
        let Some(room) = buf.get_mut(n..).filter(|r| !r.is_empty()) else {
            // Not reached: the parser decides within MAX_HEADER bytes.
            return Err(Refusal::Invalid("header longer than the parser reads"));
        };
        match tokio::time::timeout_at(deadline, l4.read(room)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Refusal::Closed),
            Ok(Ok(read)) => n += read,
            Err(_) if expect == Expect::Header => return Err(Refusal::Timeout),
            Err(_) => {
                // A silent client, or one that stopped inside a prefix of a signature: its
                // bytes go on to the protocol, whose own timeouts apply.
                l4.rewind(buf.get(..n).unwrap_or_default());
                return Ok(None);
            }
        }
    }
}

/// Makes `client` the peer address that everything after reads from the stream's digest.
fn set_peer(l4: &mut L4Stream, client: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(l4.id());
    // A fresh digest: its peer address is not computed yet, so this cannot fail.
    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
    l4.set_socket_digest(digest);
}

fn socket_peer(l4: &L4Stream) -> Option<SocketAddr> {
    match l4.get_socket_digest()?.peer_addr()? {
        PeerAddr::Inet(a) => Some(*a),
        _ => None,
    }
}

/// Checks the start of one accepted connection on `listener` (see the module docs): `Ok`
/// when it may go on (its peer is the header's client when there was one).
async fn check(
    l4: &mut L4Stream,
    listener: Listener,
    config: &Config,
    metrics: &Metrics,
    deadline: Instant,
) -> Result<(), Refusal> {
    let peer = socket_peer(l4);
    let trusted = peer.is_some_and(|p| config.proxy.trusted_proxies.contains(p.ip()));
    let expect = if trusted && listener.expects_header(config) {
        Expect::Header
    } else {
        Expect::NoHeader
    };
    let peer_text = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
    match read_start(l4, expect, deadline).await {
        Ok(None) => Ok(()),
        Ok(Some(header)) => {
            metrics
                .proxy_protocol
                .with_label_values(&[listener.label(), header.version.label()])
                .inc();
            tracing::debug!(
                listener = listener.label(),
                peer = %peer_text,
                client = ?header.source,
                version = header.version.label(),
                "PROXY header accepted"
            );
            Ok(())
        }
        Err(refusal) => {
            let Some(reason) = refusal.reason() else {
                return Err(refusal);
            };
            metrics
                .refused
                .with_label_values(&[listener.label(), reason])
                .inc();
            match refusal {
                Refusal::Untrusted => tracing::debug!(
                    listener = listener.label(),
                    peer = %peer_text,
                    reason,
                    "connection closed: a PROXY header from a peer not in proxy.trusted_proxies (or on a listener not in proxy.proxy_protocol)"
                ),
                Refusal::Invalid(why) => tracing::warn!(
                    listener = listener.label(),
                    peer = %peer_text,
                    reason,
                    why,
                    "connection closed: a broken PROXY header from a trusted proxy"
                ),
                Refusal::Timeout => tracing::warn!(
                    listener = listener.label(),
                    peer = %peer_text,
                    reason,
                    "connection closed: a trusted proxy sent no complete PROXY header within limits.header_timeout"
                ),
                _ => tracing::warn!(
                    listener = listener.label(),
                    peer = %peer_text,
                    reason,
                    "connection closed: a trusted proxy sent no PROXY header, which proxy.proxy_protocol requires on this listener"
                ),
            }
            Err(refusal)
        }
    }
}

/// The gate's check on a plain (not TLS) connection of `listener`, with `deadline` from the
/// accept: the stream to go on with, or `None` when it was refused and is to be dropped. A
/// TLS connection passes unchecked: [`PreTls`] read its start before the handshake. On a
/// listener not in `proxy_protocol` nothing is read, at no cost per connection: on HTTP a
/// PROXY header is a malformed request line there (`400` from the head scan), on TCP its
/// bytes pass to the site like any others.
pub async fn on_plain(
    stream: Stream,
    listener: Listener,
    config: &Config,
    metrics: &Metrics,
    deadline: Instant,
) -> Option<Stream> {
    if !listener.expects_header(config) {
        return Some(stream);
    }
    if !stream.as_any().is::<L4Stream>() {
        return Some(stream);
    }
    // Cannot fail: the type was checked just above.
    let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
    check(&mut l4, listener, config, metrics, deadline)
        .await
        .ok()?;
    Some(l4)
}

/// The pre-TLS hook of a TLS listener: the same check, on the raw socket before the
/// handshake, when the listener is in `proxy.proxy_protocol` (without it a PROXY header
/// fails the handshake anyway).
pub struct PreTls {
    listener: Listener,
    health: HealthHandle,
    metrics: Arc<Metrics>,
}

impl PreTls {
    /// The hook for `listener`, reading the current config from `health`.
    pub fn new(listener: Listener, health: HealthHandle, metrics: Arc<Metrics>) -> Self {
        Self {
            listener,
            health,
            metrics,
        }
    }
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, l4: &mut L4Stream) -> pingora::Result<()> {
        let config = self.health.snapshot().config.clone();
        if !self.listener.expects_header(&config) {
            return Ok(());
        }
        let deadline = Instant::now() + config.limits.header_timeout;
        check(l4, self.listener, &config, &self.metrics, deadline)
            .await
            .map_err(|refusal| {
                pingora::Error::explain(
                    pingora::ErrorType::AcceptError,
                    format!("PROXY protocol: {refusal:?}"),
                )
            })
    }
}
