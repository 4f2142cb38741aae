//! Limits on what one client may send and hold open (`[limits]`), enforced in front of
//! pingora so that every hostile input gets a clear answer and leaves the proxy serving:
//!
//! - [`HttpGate`] wraps the pingora HTTP app. It counts the listener's open connections
//!   (the excess gets `503` and a close at once), and reads each HTTP/1 request head itself
//!   under a deadline before pingora parses it: a request line over `max_request_line` is
//!   `414`, a head over `max_header_bytes` or with more than `max_headers` fields is `431`,
//!   a head that does not arrive within `header_timeout` is `408` (slowloris), a head RFC
//!   9112 forbids ([`Malformed`]: control characters, bare CRs, line folding) is `400` as
//!   soon as the bad byte arrives, and an idle keep-alive connection is closed after
//!   `keepalive_timeout`. The bytes read go to pingora as the session's prefix, so nothing
//!   is parsed twice from the socket.
//! - [`TcpGate`] counts the TCP listener's connections; the excess gets one JSON-RPC error
//!   line and a close.
//! - Both gates first let `crate::proxy_protocol` read (or refuse) a PROXY header on a plain
//!   connection, under the same `header_timeout`.
//! - The HTTP proxy (`crate::http`) answers `413` for bodies over `max_body_bytes` (from
//!   `Content-Length` before anything is sent upstream, or by counting a chunked body) and
//!   `408` when a body pauses longer than `body_timeout`.
//!
//! pingora fixes two limits of its own that these can only tighten: a head of at most
//! 1048575 bytes and at most 256 header fields (both answered `400`).
//!
//! Limits are read from the current Snapshot's config on every connection, so a reload
//! changes them without a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType};
use sitesteer_config::Limits;
use sitesteer_probes::HealthHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::proxy_protocol::{self, Listener};

/// How long a refusal may take to write.
const WRITE_REFUSAL: Duration = Duration::from_secs(1);
/// After a refusal, unread input is drained this long (and at most [`LINGER_BYTES`]) so the
/// answer is not lost to a TCP reset.
const LINGER: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 1 << 20;
/// Connections over the limit linger only briefly: they must be freed fast.
const LINGER_EXCESS: Duration = Duration::from_millis(50);

/// Why a request head is refused before pingora parses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request line is longer than `max_request_line` (`414`).
    RequestLine,
    /// The head is larger than `max_header_bytes` (`431`).
    HeadBytes,
    /// The head has more than `max_headers` fields (`431`).
    Headers,
    /// The head did not arrive within `header_timeout` (`408`).
    HeaderTimeout,
    /// The listener already holds `max_connections` connections (`503`).
    Connections,
    /// The head breaks RFC 9112's syntax in a way that must not reach a site (`400`).
    Malformed(Malformed),
}

/// A request head that RFC 9112 says to refuse, found by [`HeadScan`] as the bytes arrive
/// (so a head that would never end, such as one whose lines end in a bare CR, is refused at
/// once instead of at `header_timeout`). Other syntax errors are pingora's (also `400`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A CR not followed by LF anywhere in the head (RFC 9112 section 2.2).
    BareCr,
    /// A control character (0x00-0x1F, 0x7F) in the request line: none is allowed in a
    /// method, a request target (RFC 3986) or a version.
    RequestLineControl,
    /// A request line that is not `method SP target SP version` (a space inside the target,
    /// which pingora would otherwise percent-encode and pass on; RFC 9112 section 3).
    RequestLineShape,
    /// A control character other than HTAB (NUL included) in a header line (RFC 9110
    /// section 5.5).
    HeaderControl,
    /// A header line that starts with whitespace: obsolete line folding (RFC 9112
    /// section 5.2), or whitespace before the first field name.
    ObsFold,
}

impl Malformed {
    fn message(self) -> &'static str {
        match self {
            Malformed::BareCr => "malformed request head: a CR not followed by LF",
            Malformed::RequestLineControl => {
                "malformed request head: a control character in the request line"
            }
            Malformed::RequestLineShape => {
                "malformed request head: the request line is not method, target and version separated by single spaces"
            }
            Malformed::HeaderControl => {
                "malformed request head: a control character in a header field"
            }
            Malformed::ObsFold => {
                "malformed request head: a header line that starts with whitespace (line folding)"
            }
        }
    }
}

/// Checks a complete request line (its `\r\n` or `\n` removed).
fn check_request_line(line: &[u8]) -> Result<(), Malformed> {
    line.iter().try_for_each(|&b| request_line_byte(b))?;
    let mut parts = line.split(|&b| b == b' ');
    let shaped = parts.by_ref().take(3).all(|p| !p.is_empty()) && parts.next().is_none();
    if shaped && line.iter().filter(|&&b| b == b' ').count() == 2 {
        Ok(())
    } else {
        Err(Malformed::RequestLineShape)
    }
}

fn request_line_byte(b: u8) -> Result<(), Malformed> {
    match b {
        b'\r' => Err(Malformed::BareCr),
        0..=0x1f | 0x7f => Err(Malformed::RequestLineControl),
        _ => Ok(()),
    }
}

/// Checks a complete header line (its `\r\n` or `\n` removed; not empty).
fn check_header_line(line: &[u8]) -> Result<(), Malformed> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Malformed::ObsFold);
    }
    line.iter().try_for_each(|&b| header_byte(b))
}

fn header_byte(b: u8) -> Result<(), Malformed> {
    match b {
        b'\r' => Err(Malformed::BareCr),
        b'\t' => Ok(()),
        0..=0x1f | 0x7f => Err(Malformed::HeaderControl),
        _ => Ok(()),
    }
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Refusal::RequestLine => 414,
            Refusal::HeadBytes | Refusal::Headers => 431,
            Refusal::HeaderTimeout => 408,
            Refusal::Connections => 503,
            Refusal::Malformed(_) => 400,
        }
    }

    /// The metric label (`sitesteer_refused_total{reason}`).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::RequestLine => "request_line",
            Refusal::HeadBytes => "header_bytes",
            Refusal::Headers => "headers",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Connections => "connections",
            Refusal::Malformed(_) => "malformed_head",
        }
    }

    /// One sentence naming the limit.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::RequestLine => "request line longer than limits.max_request_line",
            Refusal::HeadBytes => "request head larger than limits.max_header_bytes",
            Refusal::Headers => "more header fields than limits.max_headers",
            Refusal::HeaderTimeout => "request head not received within limits.header_timeout",
            Refusal::Connections => "too many open connections (limits.max_connections)",
            Refusal::Malformed(m) => m.message(),
        }
    }

    fn reason_phrase(self) -> &'static str {
        match self {
            Refusal::RequestLine => "URI Too Long",
            Refusal::HeadBytes | Refusal::Headers => "Request Header Fields Too Large",
            Refusal::HeaderTimeout => "Request Timeout",
            Refusal::Connections => "Service Unavailable",
            Refusal::Malformed(_) => "Bad Request",
        }
    }

    /// The whole HTTP/1.1 answer: JSON error body, `Connection: close`.
    pub fn response(self) -> Vec<u8> {
        let body = format!("{{\"error\":\"{}\"}}", self.message());
        let retry = if self == Refusal::Connections {
            "retry-after: 1\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
            self.status(),
            self.reason_phrase(),
            body.len()
        )
        .into_bytes()
    }
}

/// What [`HeadScan::feed`] found so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is not complete yet and within the limits.
    Partial,
    /// The head ends at this offset (just past its empty line).
    Complete(usize),
    /// The head breaks a limit.
    Refused(Refusal),
}

/// Incremental scan of an HTTP/1 request head for the size limits: the request line, the
/// number of header fields and the total size, and for the bytes RFC 9112 forbids that
/// must never reach a site ([`Malformed`]: bare CRs, control characters, line folding),
/// each byte checked once as it arrives. The rest of the syntax is pingora's (`400`); this
/// finds where the head ends. Lines end with `\n`, with or without `\r`; empty lines
/// before the request line are skipped, as RFC 9112 allows.
#[derive(Clone, Debug, Default)]
pub struct HeadScan {
    scanned: usize,
    line_start: usize,
    request_line_seen: bool,
    headers: usize,
    /// Bytes of the unfinished line before this offset passed [`Malformed`]'s checks.
    checked: usize,
}

impl HeadScan {
    /// Scans `buf` (everything read so far; it only grows between calls) against `limits`.
    pub fn feed(&mut self, buf: &[u8], limits: &Limits) -> Scan {
        while let Some(i) = buf
            .get(self.scanned..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let end = self.scanned + i;
            let line = buf.get(self.line_start..end).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.scanned = end + 1;
            self.line_start = end + 1;
            if !self.request_line_seen {
                if line.is_empty() {
                    continue;
                }
                if line.len() > limits.max_request_line {
                    return Scan::Refused(Refusal::RequestLine);
                }
                if let Err(m) = check_request_line(line) {
                    return Scan::Refused(Refusal::Malformed(m));
                }
                self.request_line_seen = true;
            } else if line.is_empty() {
                if end + 1 > limits.max_header_bytes {
                    return Scan::Refused(Refusal::HeadBytes);
                }
                return Scan::Complete(end + 1);
            } else {
                self.headers += 1;
                if self.headers > limits.max_headers {
                    return Scan::Refused(Refusal::Headers);
                }
                if let Err(m) = check_header_line(line) {
                    return Scan::Refused(Refusal::Malformed(m));
                }
            }
            if self.scanned > limits.max_header_bytes {
                return Scan::Refused(Refusal::HeadBytes);
            }
        }
        self.scanned = self.scanned.max(buf.len());
        if let Err(m) = self.check_pending(buf) {
            return Scan::Refused(Refusal::Malformed(m));
        }
        // A pending `\r` may be the start of the line's ending, which does not count
        // (found by fuzzing: fuzz/regressions/http_head).
        let pending = buf.get(self.line_start..).unwrap_or_default();
        let pending = pending.strip_suffix(b"\r").unwrap_or(pending);
        if !self.request_line_seen && pending.len() > limits.max_request_line {
            return Scan::Refused(Refusal::RequestLine);
        }
        if buf.len() > limits.max_header_bytes {
            return Scan::Refused(Refusal::HeadBytes);
        }
        Scan::Partial
    }
}

impl HeadScan {
    /// Checks the new bytes of the unfinished line, so that a head that breaks the syntax
    /// is refused before its line ends (a head of bare CRs never would). A CR at the very
    /// end may still be followed by its LF: it waits for the next read.
    fn check_pending(&mut self, buf: &[u8]) -> Result<(), Malformed> {
        let from = self.checked.max(self.line_start);
        for (i, &b) in buf.iter().enumerate().skip(from) {
            if b == b'\r' && i + 1 == buf.len() {
                self.checked = i;
                return Ok(());
            }
            if !self.request_line_seen {
                request_line_byte(b)?;
            } else {
                if i == self.line_start && matches!(b, b' ' | b'\t') {
                    return Err(Malformed::ObsFold);
                }
                header_byte(b)?;
            }
        }
        self.checked = buf.len();
        Ok(())
    }
}

/// Counts one listener's open connections, and keeps its gauge current.
#[derive(Default)]
pub struct ConnCount {
    open: AtomicUsize,
    gauge: Option<prometheus::IntGauge>,
}

/// One open connection; dropping it frees its place.
pub struct ConnSlot(Arc<ConnCount>);

impl ConnCount {
    /// A count that `gauge` (`sitesteer_listener_connections{listener}`) follows, on every
    /// connection that opens and every one that closes.
    pub fn with_gauge(gauge: prometheus::IntGauge) -> Self {
        Self {
            open: AtomicUsize::new(0),
            gauge: Some(gauge),
        }
    }

    /// Takes a place; `None` when `max` are already taken.
    pub fn acquire(self: &Arc<Self>, max: usize) -> Option<ConnSlot> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnSlot(self.clone());
        if before < max {
            self.show(before + 1);
            Some(slot)
        } else {
            None
        }
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn show(&self, open: usize) {
        if let Some(g) = &self.gauge {
            g.set(open as i64);
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let before = self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.show(before.saturating_sub(1));
    }
}

/// The IP address of `stream`'s client (the PROXY header's, once one was read): `None`
/// for a peer that is not an IP socket.
pub(crate) fn peer_ip(stream: &Stream) -> Option<std::net::IpAddr> {
    match stream.get_socket_digest()?.peer_addr()? {
        pingora::protocols::l4::socket::SocketAddr::Inet(a) => Some(a.ip()),
        _ => None,
    }
}

/// The client address of `stream` for logs (a PROXY header's, when one was accepted).
pub(crate) fn peer_of(stream: &Stream) -> String {
    stream
        .get_socket_digest()
        .and_then(|d| {
            d.peer_addr().map(|a| match a {
                pingora::protocols::l4::socket::SocketAddr::Inet(a) => a.to_string(),
                other => format!("{other:?}"),
            })
        })
        .unwrap_or_else(|| "-".to_string())
}

/// Writes `answer`, half-closes, and drains what the client still sends (bounded) so the
/// answer reaches it before the close.
async fn answer_and_close(stream: &mut Stream, answer: &[u8], linger: Duration) {
    let written = tokio::time::timeout(WRITE_REFUSAL, async {
        stream.write_all(answer).await?;
        stream.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + linger;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// How reading a request head ended, when it did not produce one.
enum HeadEnd {
    /// The client closed, went idle, or the service is shutting down: close quietly.
    Quiet,
    /// Refused with an answer.
    Refused(Refusal),
}

/// Reads one request head from `stream`. Before the first byte it waits until `idle_until`;
/// from the first byte the head must be complete by `head_deadline` (default: the first
/// byte's time plus `header_timeout`). An idle keep-alive connection (`idle_on_shutdown`,
/// nothing read yet) is closed when the service shuts down; a request already on its way
/// is read to the end, so a graceful shutdown or upgrade loses none.
async fn read_head(
    stream: &mut Stream,
    limits: &Limits,
    idle_until: Instant,
    head_deadline: Option<Instant>,
    idle_on_shutdown: Option<&ShutdownWatch>,
) -> Result<BytesMut, HeadEnd> {
    let mut shutdown = idle_on_shutdown.cloned();
    let mut buf = BytesMut::with_capacity(4096);
    let mut scan = HeadScan::default();
    let mut deadline = idle_until;
    let mut started = false;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let reading = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf));
        let read = match shutdown.as_mut().filter(|_| !started) {
            None => reading.await,
            Some(shutdown) => tokio::select! {
                biased;
                read = reading => read,
                _ = shutdown.changed() => {
                    tracing::debug!(why = "shutdown", "closing an idle connection");
                    return Err(HeadEnd::Quiet);
                }
            },
        };
        match read {
            Err(_) if buf.is_empty() => {
                tracing::debug!(why = "idle", "closing before a request head");
                return Err(HeadEnd::Quiet);
            }
            Err(_) => return Err(HeadEnd::Refused(Refusal::HeaderTimeout)),
            Ok(Ok(0)) | Ok(Err(_)) => {
                tracing::debug!(
                    why = "closed",
                    read = buf.len(),
                    "client left before a request head"
                );
                return Err(HeadEnd::Quiet);
            }
            Ok(Ok(_)) => {}
        }
        if !started {
            started = true;
            deadline = head_deadline.unwrap_or_else(|| Instant::now() + limits.header_timeout);
        }
        match scan.feed(&buf, limits) {
            Scan::Partial => {}
            Scan::Complete(_) => return Ok(buf),
            Scan::Refused(r) => return Err(HeadEnd::Refused(r)),
        }
    }
}

/// The HTTP listener's gate in front of pingora's HTTP app `A` (see the module docs).
pub struct HttpGate<A> {
    inner: Arc<A>,
    health: HealthHandle,
    metrics: Arc<Metrics>,
    open: Arc<ConnCount>,
}

impl<A> HttpGate<A> {
    /// Gates `inner`, reading the limits from `health`'s current config.
    pub fn new(inner: A, health: HealthHandle, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(inner),
            health,
            open: Arc::new(ConnCount::with_gauge(
                metrics.listener_connections.with_label_values(&["http"]),
            )),
            metrics,
        }
    }

    fn refused(&self, refusal: Refusal, peer: &str) {
        tracing::debug!(
            listener = "http",
            reason = refusal.reason(),
            status = refusal.status(),
            peer,
            "request refused"
        );
        self.metrics
            .refused
            .with_label_values(&["http", refusal.reason()])
            .inc();
    }
}

#[async_trait]
impl<A> ServerApp for HttpGate<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let config = self.health.snapshot().config.clone();
        let limits = config.limits.clone();
        let Some(_slot) = self.open.acquire(limits.max_connections) else {
            let peer = peer_of(&stream);
            self.refused(Refusal::Connections, &peer);
            answer_and_close(&mut stream, &Refusal::Connections.response(), LINGER_EXCESS).await;
            return None;
        };
        // A PROXY header first (from a trusted proxy) or none at all; the TLS listener's
        // was read before its handshake.
        let deadline = accepted + limits.header_timeout;
        let mut stream =
            proxy_protocol::on_plain(stream, Listener::Http, &config, &self.metrics, deadline)
                .await?;
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let custom = matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(_)));
        if h2 || custom {
            // HTTP/2 frames are not HTTP/1 heads; pingora's own limits apply.
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        // An HTTP/1 connection counts as in flight until it closes: one accepted just as the
        // listeners stopped is still reading its first head, and the drain must wait for it
        // (an idle keep-alive connection gives way to the shutdown below, so it never holds
        // the drain up).
        let _connection = crate::restart::InFlight::start();
        let mut settings = None;
        let mut first = true;
        loop {
            if !first && *shutdown.borrow() {
                return None;
            }
            let (idle_until, head_deadline) = if first {
                // The first head counts from the accept: a silent connection is a slowloris too.
                let deadline = accepted + limits.header_timeout;
                (deadline, Some(deadline))
            } else {
                (Instant::now() + limits.keepalive_timeout, None)
            };
            // Only an idle keep-alive connection gives way to a shutdown.
            let idle_on_shutdown = (!first).then_some(shutdown);
            let head = match read_head(
                &mut stream,
                &limits,
                idle_until,
                head_deadline,
                idle_on_shutdown,
            )
            .await
            {
                Ok(head) => head,
                Err(HeadEnd::Quiet) => return None,
                Err(HeadEnd::Refused(refusal)) => {
                    let peer = peer_of(&stream);
                    self.refused(refusal, &peer);
                    answer_and_close(&mut stream, &refusal.response(), LINGER).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                None => {
                    let keepalive = limits.keepalive_timeout.as_secs().max(1);
                    session.set_keepalive((!*shutdown.borrow()).then_some(keepalive));
                    session.set_keepalive_reuses_remaining(
                        self.inner
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            session.set_pipelined_prefix(head);
            let reused = self.inner.process_new_http(session, shutdown).await?;
            let (next, next_settings) = reused.consume();
            stream = next;
            settings = next_settings;
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// The TCP listener's gate: counts connections; the excess gets one JSON-RPC error line.
pub struct TcpGate<A> {
    inner: Arc<A>,
    health: HealthHandle,
    metrics: Arc<Metrics>,
    open: Arc<ConnCount>,
}

/// The line a TCP client over the connection limit reads before the close.
pub const TCP_REFUSAL: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"too many open connections (limits.max_connections)\"}}\n";

impl<A> TcpGate<A> {
    /// Gates `inner`, reading the limit from `health`'s current config.
    pub fn new(inner: A, health: HealthHandle, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(inner),
            health,
            open: Arc::new(ConnCount::with_gauge(
                metrics.listener_connections.with_label_values(&["tcp"]),
            )),
            metrics,
        }
    }
}

#[async_trait]
impl<A> ServerApp for TcpGate<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let config = self.health.snapshot().config.clone();
        let max = config.limits.max_connections;
        let Some(_slot) = self.open.acquire(max) else {
            let peer = peer_of(&stream);
            tracing::debug!(
                listener = "tcp",
                reason = "connections",
                peer,
                "connection refused"
            );
            self.metrics
                .refused
                .with_label_values(&["tcp", Refusal::Connections.reason()])
                .inc();
            answer_and_close(&mut stream, TCP_REFUSAL, LINGER_EXCESS).await;
            return None;
        };
        let deadline = Instant::now() + config.limits.header_timeout;
        let stream =
            proxy_protocol::on_plain(stream, Listener::Tcp, &config, &self.metrics, deadline)
                .await?;
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The `Content-Length` of a request when it is over `max_body_bytes` (answer `413` before
/// anything reaches a site).
pub fn declared_body_over(content_length: Option<&[u8]>, limits: &Limits) -> bool {
    content_length
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limits.max_body_bytes)
}

/// The `413` error for a body that grew past `max_body_bytes` while it streamed.
pub fn body_too_large() -> Box<Error> {
    let mut e = Error::explain(
        ErrorType::HTTPStatus(413),
        "request body larger than limits.max_body_bytes",
    );
    e.set_retry(false);
    e
}

/// The JSON body of an error answer that a limit caused, naming the limit.
pub fn fail_body(code: u16) -> Option<&'static [u8]> {
    match code {
        413 => Some(br#"{"error":"request body larger than limits.max_body_bytes"}"#),
        408 => Some(br#"{"error":"request body paused longer than limits.body_timeout"}"#),
        _ => None,
    }
}

/// The status answered for a failed request: pingora's default mapping, except that a
/// client too slow to send its body (`body_timeout`) gets `408` instead of `400`.
pub fn fail_status(e: &Error) -> u16 {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (_, ErrorSource::Upstream) => 502,
        (ErrorType::ReadTimedout, ErrorSource::Downstream) => 408,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Limits {
        Limits {
            max_request_line: 32,
            max_header_bytes: 128,
            max_headers: 3,
            ..Limits::default()
        }
    }

    fn scan_all(bytes: &[u8], limits: &Limits) -> Scan {
        HeadScan::default().feed(bytes, limits)
    }

    #[test]
    fn finds_the_end_of_a_head() {
        let l = small();
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(scan_all(head, &l), Scan::Complete(head.len() - 4));
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\nHost: a\n\n", &l),
            Scan::Complete(24)
        );
        assert_eq!(
            scan_all(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", &l),
            Scan::Complete(22)
        );
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\r\nHost: a\r\n", &l),
            Scan::Partial
        );
    }

    #[test]
    fn the_head_may_arrive_a_byte_at_a_time() {
        let l = small();
        let head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        let mut scan = HeadScan::default();
        for n in 1..head.len() {
            assert_eq!(scan.feed(&head[..n], &l), Scan::Partial, "after {n} bytes");
        }
        assert_eq!(scan.feed(head, &l), Scan::Complete(head.len()));
    }

    #[test]
    fn refuses_what_breaks_a_limit() {
        let l = small();
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40));
        assert_eq!(
            scan_all(long_line.as_bytes(), &l),
            Scan::Refused(Refusal::RequestLine)
        );
        // An unterminated request line is refused as soon as it is too long.
        assert_eq!(
            scan_all(&[b'G'; 33], &l),
            Scan::Refused(Refusal::RequestLine)
        );
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(scan_all(many, &l), Scan::Refused(Refusal::Headers));
        let big = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "b".repeat(200));
        assert_eq!(
            scan_all(big.as_bytes(), &l),
            Scan::Refused(Refusal::HeadBytes)
        );
        let partial = format!("GET / HTTP/1.1\r\nA: {}", "b".repeat(200));
        assert_eq!(
            scan_all(partial.as_bytes(), &l),
            Scan::Refused(Refusal::HeadBytes)
        );
    }

    #[test]
    fn a_request_line_at_the_limit_may_pause_before_its_newline() {
        // Found by fuzzing: the line's `\r` arrived without its `\n` and was counted.
        let l = small();
        let line = format!("GET /{} HTTP/1.1", "a".repeat(18));
        assert_eq!(line.len(), l.max_request_line);
        let head = format!("{line}\r\n\r\n");
        let mut scan = HeadScan::default();
        assert_eq!(
            scan.feed(&head.as_bytes()[..line.len() + 1], &l),
            Scan::Partial
        );
        assert_eq!(scan.feed(head.as_bytes(), &l), Scan::Complete(head.len()));
        let longer = format!("{line}x\r");
        assert_eq!(
            HeadScan::default().feed(longer.as_bytes(), &l),
            Scan::Refused(Refusal::RequestLine)
        );
    }

    /// Every input the fuzzer crashed on (`fuzz/regressions/http_head/`): the first byte is
    /// where the head is cut in two, as in the fuzz target.
    #[test]
    fn fuzz_regressions_scan_the_same_in_pieces() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/http_head");
        let limits = Limits {
            max_request_line: 64,
            max_header_bytes: 512,
            max_headers: 8,
            ..Limits::default()
        };
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the regression folder") {
            let data = std::fs::read(entry.expect("entry").path()).expect("read");
            let Some((&cut, input)) = data.split_first() else {
                continue;
            };
            let whole = HeadScan::default().feed(input, &limits);
            let cut = usize::from(cut).min(input.len());
            let mut scan = HeadScan::default();
            let pieces = match scan.feed(&input[..cut], &limits) {
                Scan::Partial => scan.feed(input, &limits),
                other => other,
            };
            assert_eq!(
                std::mem::discriminant(&whole),
                std::mem::discriminant(&pieces),
                "{whole:?} {pieces:?}"
            );
            seen += 1;
        }
        assert!(seen > 0);
    }

    #[test]
    fn refusals_are_complete_http_answers() {
        for r in [
            Refusal::RequestLine,
            Refusal::HeadBytes,
            Refusal::Headers,
            Refusal::HeaderTimeout,
            Refusal::Connections,
            Refusal::Malformed(Malformed::BareCr),
            Refusal::Malformed(Malformed::RequestLineControl),
            Refusal::Malformed(Malformed::RequestLineShape),
            Refusal::Malformed(Malformed::HeaderControl),
            Refusal::Malformed(Malformed::ObsFold),
        ] {
            let text = String::from_utf8(r.response()).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {} ", r.status())));
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
            match r {
                Refusal::Malformed(_) => assert!(body.contains("malformed request head")),
                _ => assert!(body.contains("limits."), "{body}"),
            }
        }
        assert!(serde_json::from_slice::<serde_json::Value>(TCP_REFUSAL).is_ok());
    }

    #[test]
    fn heads_rfc_9112_forbids_are_refused_as_their_bytes_arrive() {
        let l = Limits::default();
        let bad = |m| Scan::Refused(Refusal::Malformed(m));
        let cases: [(&[u8], Malformed); 14] = [
            (
                b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
                Malformed::RequestLineControl,
            ),
            (
                b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
                Malformed::RequestLineControl,
            ),
            (
                b"GET /a\x00b HTTP/1.1\r\n\r\n",
                Malformed::RequestLineControl,
            ),
            (b"GET /a\tb HTTP/1.1\r\n\r\n", Malformed::RequestLineControl),
            (b"GET /a b HTTP/1.1\r\n\r\n", Malformed::RequestLineShape),
            (b"GET  / HTTP/1.1\r\n\r\n", Malformed::RequestLineShape),
            (b"GET / HTTP/1.1 \r\n\r\n", Malformed::RequestLineShape),
            (b"GET /\r\n\r\n", Malformed::RequestLineShape),
            // Lines ending in a bare CR: no LF ever comes.
            (b"GET / HTTP/1.1\rHost: a\r\r", Malformed::BareCr),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", Malformed::BareCr),
            (b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", Malformed::BareCr),
            (
                b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
                Malformed::HeaderControl,
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n",
                Malformed::HeaderControl,
            ),
            (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Malformed::ObsFold),
        ];
        for (head, why) in cases {
            assert_eq!(
                scan_all(head, &l),
                bad(why),
                "{:?}",
                String::from_utf8_lossy(head)
            );
            // And byte by byte: refused as soon as the bad byte (and the one after a CR) is in.
            let mut scan = HeadScan::default();
            let at = (1..=head.len())
                .find(|&n| scan.feed(&head[..n], &l) != Scan::Partial)
                .expect("refused");
            assert_eq!(HeadScan::default().feed(&head[..at], &l), bad(why));
        }
        // The bare-CR head is refused before any LF arrives.
        let bare = b"GET / HTTP/1.1\rH";
        assert_eq!(scan_all(bare, &l), bad(Malformed::BareCr));
        // What is fine: a tab inside a value, bytes past 0x7f, a CR that waits for its LF.
        for ok in [
            &b"GET / HTTP/1.1\r\nX: a\tb\r\n\r\n"[..],
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n",
            b"\r\nGET / HTTP/1.1\n\n",
        ] {
            assert!(matches!(scan_all(ok, &l), Scan::Complete(_)), "{ok:?}");
        }
        assert_eq!(scan_all(b"GET / HTTP/1.1\r", &l), Scan::Partial);
        // The body is not the head's: control bytes after the empty line are not looked at.
        assert!(matches!(
            scan_all(b"POST / HTTP/1.1\r\n\r\n\x00\r\x01", &l),
            Scan::Complete(19)
        ));
    }

    #[test]
    fn declared_bodies_over_the_limit() {
        let l = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        assert!(declared_body_over(Some(b"11"), &l));
        assert!(!declared_body_over(Some(b"10"), &l));
        assert!(!declared_body_over(Some(b"junk"), &l));
        assert!(!declared_body_over(None, &l));
    }

    #[test]
    fn connection_slots_are_freed_on_drop() {
        let count = Arc::new(ConnCount::default());
        let a = count.acquire(2).expect("first");
        let _b = count.acquire(2).expect("second");
        assert!(count.acquire(2).is_none());
        assert_eq!(count.open(), 2);
        drop(a);
        assert!(count.acquire(2).is_some());
    }

    proptest! {
        #[test]
        fn scanning_in_pieces_agrees_with_scanning_at_once(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b':'), Just(b' '), Just(0u8)], 0..300),
            cut in 0usize..300,
        ) {
            let l = small();
            let whole = scan_all(&bytes, &l);
            let cut = cut.min(bytes.len());
            let mut scan = HeadScan::default();
            let first = scan.feed(&bytes[..cut], &l);
            let pieces = match first {
                Scan::Partial => scan.feed(&bytes, &l),
                other => other,
            };
            // The same head is found, or both refuse (maybe for another reason, first).
            match (whole, pieces) {
                (Scan::Complete(a), Scan::Complete(b)) => prop_assert_eq!(a, b),
                (Scan::Refused(_), Scan::Refused(_)) | (Scan::Partial, Scan::Partial) => {}
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
