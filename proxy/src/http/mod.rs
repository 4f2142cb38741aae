//! The HTTP data plane on pingora: HTTP, MCP Streamable HTTP, WebSocket upgrades and SSE.
//! Routes by path prefix to a site endpoint kind, takes each attempt's site from the
//! selection loop ([`steer::Attempts`]: the steering rules, or a session's own site), sets
//! the per-site upstream `Host`, adds
//! `x-sitesteer-site`, reports every outcome as a passive observation, registers long-lived
//! connections so they can be closed when their site leaves service, and retries on another
//! site when that cannot repeat a side effect. Requests that are safe to repeat and bound to
//! no session are answered by checked exchanges (`checked.rs`), which read the whole answer
//! before the client sees it. An HTTP+SSE stream's `endpoint` event gets the stream's token
//! (`sse_endpoint.rs`, `affinity.rs`, `streams.rs`), and long-lived connections are watched
//! for `limits.stream_idle_timeout` (`crate::idle`). Each request's client is placed by
//! `[[geo]]` first (the forwarded client only from `proxy.trusted_proxies`,
//! `forwarded.rs`), so its attempts prefer its region's sites.

pub mod affinity;
mod checked;
pub mod forwarded;
mod mcp_headers;
pub mod sse_endpoint;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};
use sitesteer_config::EndpointKind;
use sitesteer_probes::{Failure, Snapshot};
use tokio::time::Instant;

use crate::conns::{self, Closer, Registration, Registry, Transport};
use crate::idle::Activity;
use crate::limits;
use crate::mcp;
use crate::metrics::{Metrics, SiteHandle};
use crate::session::SessionCodec;
use crate::steer::{self, Attempts, NoSite, Steering};
use crate::tools::ToolCatalog;
use affinity::{Affinity, Claim, SESSION_HEADER};
use sse_endpoint::{Ended, EndpointRewriter};
use streams::{LiveStream, LiveStreams};

/// Response header naming the site that served.
pub const SITE_HEADER: &str = "x-sitesteer-site";
/// Largest `tools/list` answer read to learn tool annotations.
const MAX_TOOLS_ANSWER: usize = 1 << 20;

/// Everything the HTTP proxy shares across requests.
pub struct HttpProxy {
    steering: Arc<Steering>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    codec: SessionCodec,
    tools: Arc<ToolCatalog>,
    tls: Option<Arc<crate::tls::Tls>>,
    /// The HTTP+SSE streams open here, which their stream tokens may pin to.
    streams: Arc<LiveStreams>,
    /// Upstream connections of checked exchanges (`checked.rs`): pingora's HTTP/1
    /// connector, with its own pool.
    connector: pingora::connectors::http::v1::Connector,
}

impl HttpProxy {
    /// A proxy steering by `steering`.
    pub(crate) fn new(
        steering: Arc<Steering>,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        codec: SessionCodec,
        tools: Arc<ToolCatalog>,
    ) -> Self {
        Self {
            steering,
            metrics,
            registry,
            codec,
            tools,
            tls: None,
            streams: LiveStreams::new(),
            connector: pingora::connectors::http::v1::Connector::new(None),
        }
    }

    /// Reaches `[site.tls]` sites over TLS with the CAs in `tls`.
    pub fn with_tls(mut self, tls: Arc<crate::tls::Tls>) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Per-request state.
pub struct RequestState {
    /// The request's attempts at sites, and the Snapshot of the current one.
    attempts: Attempts,
    upstream_started: Option<Instant>,
    affinity: Option<Affinity>,
    long_lived: Option<Transport>,
    registration: Option<Registration>,
    /// The current attempt's connection to its site is up: what was sent may have run there.
    reached_site: bool,
    mcp: Option<Option<(String, Option<String>)>>,
    safe_to_repeat: Option<bool>,
    tools_answer: Option<Vec<u8>>,
    /// The search for an HTTP+SSE stream's `endpoint` event, until it ends.
    endpoint: Option<EndpointRewriter>,
    /// The stream's place among the live streams, once its token is issued.
    live_stream: Option<LiveStream>,
    /// When a WebSocket or SSE stream last moved a byte (`limits.stream_idle_timeout`).
    activity: Option<Arc<Activity>>,
    body_bytes: u64,
    /// The request body, when read whole before any site was chosen (a POST naming itself
    /// in `Mcp-Method` / `Mcp-Name`, checked against them).
    body: Option<Bytes>,
    /// The serving site's passive observation is already made (a checked exchange that
    /// passed a wrong answer on, having reported it as wrong).
    observed: bool,
    /// Every site was at its cap past `proxy.queue_timeout`: answered by [`crate::shed`].
    shed: bool,
    /// A WebSocket or SSE stream's place in its site's load, while it is open.
    stream_load: Option<steer::LoadGuard>,
    /// Counts the request for the drain on shutdown and upgrade.
    _in_flight: crate::restart::InFlight,
}

impl RequestState {
    /// The Snapshot the request is (or was last) steered by.
    fn snapshot(&self) -> &Arc<Snapshot> {
        self.attempts.snapshot()
    }

    /// The site of the current (or last) attempt.
    fn site(&self) -> Option<usize> {
        self.attempts.site()
    }

    /// The endpoint kind of the request's route.
    fn kind(&self) -> EndpointKind {
        self.attempts.kind()
    }

    /// The state of a request not yet routed, steered by `published`.
    fn new(published: Arc<steer::Published>) -> Self {
        Self {
            attempts: Attempts::new(EndpointKind::Http, published),
            upstream_started: None,
            affinity: None,
            long_lived: None,
            registration: None,
            reached_site: false,
            mcp: None,
            safe_to_repeat: None,
            tools_answer: None,
            endpoint: None,
            live_stream: None,
            activity: None,
            body: None,
            body_bytes: 0,
            observed: false,
            shed: false,
            stream_load: None,
            _in_flight: crate::restart::InFlight::start(),
        }
    }
}

fn failure_of(e: &Error) -> Failure {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Failure::Timeout
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert => Failure::Connect,
        ErrorType::HTTPStatus(code) => Failure::Status(*code),
        _ => Failure::Reset,
    }
}

/// The request body, read whole. A body that stalls or breaks is the client's: 408 or no
/// answer, as on pingora's path. What is read is kept in pingora's retry buffer too, which
/// sends it on when pingora proxies the request.
async fn read_whole_body(session: &mut Session) -> Result<Bytes> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
    {
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn respond_json(session: &mut Session, status: u16, body: impl Into<Bytes>) -> Result<bool> {
    let body = body.into();
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Answers a shed request ([`crate::shed`]): 503, `Retry-After`, and a JSON-RPC error with
/// the request's id when the body read so far is a JSON-RPC call.
pub(crate) async fn respond_shed(session: &mut Session) -> Result<()> {
    let buffered = session.as_ref().get_retry_buffer();
    let id = buffered.as_deref().and_then(checked::request_id);
    let body = Bytes::from(crate::shed::http_body(id.as_ref()));
    let mut resp = ResponseHeader::build(crate::shed::STATUS, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("retry-after", crate::shed::RETRY_AFTER_S.to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The JSON-RPC error code of a request whose site failed after it was sent (in the range
/// JSON-RPC leaves to implementations).
const OUTCOME_UNKNOWN: i64 = -32003;

/// Why a session's request is not served: its site is out of service, or failed it.
const SESSION_SITE_LOST: &str = "the session's site is out of service";

/// The MCP signal to start a new session.
const SESSION_GONE: &[u8] = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"session not found: its site is out of service; start a new session"}}"#;

impl HttpProxy {
    fn site_name(ctx: &RequestState) -> Option<&str> {
        let snap = ctx.snapshot();
        snap.sites.get(ctx.site()?).map(|s| s.name.as_str())
    }

    /// The MCP method (and tool) of a POST: from its body once read, else from
    /// `Mcp-Method`/`Mcp-Name` (for labels and logs; safety is judged from the body alone).
    fn mcp_method<'a>(
        session: &Session,
        ctx: &'a mut RequestState,
    ) -> Option<&'a (String, Option<String>)> {
        if ctx.mcp.is_none() {
            let req = session.req_header();
            let header = |name: &str| {
                req.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let body = session.as_ref().get_retry_buffer();
            let whole = !session.as_ref().retry_buffer_truncated();
            let found = match (body, header("mcp-method")) {
                // The body, once read, over the headers: they never say what it does not.
                (Some(body), _) if whole => mcp::method_of(&body),
                (_, Some(method)) => Some((
                    method,
                    header("mcp-name").and_then(|n| mcp::decode_header_value(&n)),
                )),
                _ => None,
            };
            // Only cache once the body is known (the retry buffer fills as the body is read).
            if found.is_none()
                && req.method == http::Method::POST
                && session.as_ref().get_retry_buffer().is_none()
            {
                return None;
            }
            ctx.mcp = Some(found);
        }
        ctx.mcp.as_ref().and_then(Option::as_ref)
    }

    /// Learns the tools of `site` from its `tools/list` answer `body`.
    fn learn_tools(&self, site: &str, body: &[u8]) {
        let learned = self.tools.learn(site, body);
        self.metrics
            .learned_tools
            .with_label_values(&[site])
            .set(i64::try_from(learned.known).unwrap_or(i64::MAX));
        if learned.dropped > 0 {
            tracing::debug!(
                site,
                dropped = learned.dropped,
                known = learned.known,
                "tools left out of the site's table: it is full or their names are too long"
            );
        }
        tracing::debug!(site, learned = learned.learned, "learned tool annotations");
    }

    /// Whether the request may be sent again to another site after bytes reached the first.
    fn safe_to_repeat(&self, session: &Session, ctx: &mut RequestState) -> bool {
        if let Some(safe) = ctx.safe_to_repeat {
            return safe;
        }
        let req = session.req_header();
        let safe = if req.method.is_idempotent() {
            true
        } else if req.method == http::Method::POST && !session.as_ref().retry_buffer_truncated() {
            let Some(body) = session.as_ref().get_retry_buffer() else {
                // Not one byte of the body was read, so none reached the site and nothing
                // ran there. Not cached: the body may still be read before the next error.
                return true;
            };
            let site = Self::site_name(ctx).unwrap_or("").to_string();
            // The body decides, never the `Mcp-Method` / `Mcp-Name` headers: a client may
            // dress a `tools/call` as `ping` in them.
            match mcp::method_of(&body) {
                Some((method, _)) if mcp::is_safe_method(&method) => true,
                Some((method, Some(tool))) if method == "tools/call" => self
                    .tools
                    .hints(&site, &tool)
                    .is_some_and(|h| h.repeatable()),
                _ => false,
            }
        } else {
            false
        };
        ctx.safe_to_repeat = Some(safe);
        safe
    }

    /// After the failed attempt `e` (already reported): marks `e` retryable when the request
    /// may go to another site (`allowed`), a try is left and a site can take it. A session's
    /// request is never sent elsewhere: when it could have been repeated, its session is lost
    /// (the client starts a new one).
    fn decide_retry(&self, ctx: &mut RequestState, mut e: Box<Error>, allowed: bool) -> Box<Error> {
        if ctx.affinity.is_some() {
            if allowed {
                return Error::explain(ErrorType::HTTPStatus(404), SESSION_SITE_LOST);
            }
            e.set_retry(false);
            return e;
        }
        // A failed connect draws from the retry budget too (Envoy's choice): a fleet whose
        // every site refuses or times out connects is not sent 1 + retries connects each.
        e.set_retry(
            allowed && ctx.attempts.may_retry(&self.steering) && ctx.attempts.grant(&self.steering),
        );
        e
    }
}

impl HttpProxy {
    /// Marks a site's answer for the client: `x-sitesteer-site`, and the site's MCP session
    /// id signed into sitesteer's own. `false` when no site served.
    fn label_answer(&self, ctx: &RequestState, answer: &mut ResponseHeader) -> Result<bool> {
        let Some(id) = ctx.site() else {
            return Ok(false);
        };
        let snap = ctx.snapshot();
        let Some(site) = snap.sites.get(id).map(|s| s.name.as_str()) else {
            return Ok(false);
        };
        // The site's header value is built once per config generation, not per response.
        let handles = self.metrics.site_handles(snap);
        match handles.get(id).and_then(SiteHandle::header) {
            Some(value) => answer.insert_header(SITE_HEADER, value.clone())?,
            None => answer.insert_header(SITE_HEADER, site)?,
        }
        let issued = answer
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|upstream| self.codec.encode(site, upstream));
        if let Some(token) = issued {
            answer.insert_header(SESSION_HEADER, token)?;
        }
        Ok(true)
    }

    /// Places the request's client by `[[geo]]`, so that its attempts prefer its region's
    /// sites: the connection's client `client` (a PROXY header's, if any), or the forwarded
    /// client a trusted proxy names ([`forwarded::client_ip`]). Counted in
    /// `sitesteer_client_regions_total` when `[[geo]]` has entries.
    fn locate_client(&self, session: &Session, ctx: &mut RequestState, client: Option<SocketAddr>) {
        if !ctx.attempts.places_clients() {
            return;
        }
        let trusted = &ctx.snapshot().config.proxy.trusted_proxies;
        let ip = forwarded::client_ip(session.req_header(), client.map(|c| c.ip()), trusted);
        let region = ctx.attempts.locate(ip).unwrap_or("none");
        self.metrics
            .client_regions
            .with_label_values(&["http", region])
            .inc();
    }

    /// How to reach `addr` of site `site`: over TLS with SNI and verification against the
    /// site's CA for a `[site.tls]` site, with the proxy's connect timeout, and its read
    /// timeout when the exchange is `short` (not a WebSocket or an SSE stream).
    fn peer_for(
        &self,
        snapshot: &Snapshot,
        site: usize,
        addr: SocketAddr,
        short: bool,
    ) -> HttpPeer {
        let proxy = &snapshot.config.proxy;
        let addr = crate::upstream::connect_addr(snapshot, site, addr);
        let site_tls = self.tls.as_ref().and_then(|tls| {
            let site = snapshot.config.sites.get(site)?;
            tls.http_peer(site, addr)
        });
        let mut peer = match site_tls {
            Some(t) => {
                let mut peer = HttpPeer::new(addr, true, t.sni);
                peer.options.verify_cert = true;
                peer.options.verify_hostname = true;
                peer.options.ca = Some(t.ca);
                peer.group_key = t.group_key;
                peer
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        // The TCP connect follows what the site's connects normally take; TLS on top of it
        // keeps the whole connect_timeout.
        let connect = snapshot.sites.get(site).map_or(proxy.connect_timeout, |s| {
            self.steering.connect_timeout(&s.name, proxy)
        });
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(proxy.connect_timeout);
        if short {
            peer.options.read_timeout = Some(proxy.read_timeout);
        }
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer
    }

    /// The JSON-RPC error answered for a request that reached its site, which then failed
    /// (`e` from the upstream side, `code` 502) before it answered: the request's own `id`,
    /// the site's name and that the outcome is unknown. `None` for anything else (a connect
    /// that failed never reached the site; a request that is not JSON-RPC gets the plain
    /// 502).
    fn outcome_unknown(
        &self,
        session: &Session,
        e: &Error,
        ctx: &mut RequestState,
        code: u16,
    ) -> Option<Vec<u8>> {
        if code != 502
            || e.esource() != &pingora::ErrorSource::Upstream
            || !ctx.reached_site
            || session.req_header().method != http::Method::POST
            || self.safe_to_repeat(session, ctx)
        {
            return None;
        }
        let id = checked::request_id(&session.as_ref().get_retry_buffer()?)?;
        let site = Self::site_name(ctx).unwrap_or("unknown");
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": OUTCOME_UNKNOWN,
                "message": format!("site {site} failed after the request reached it and before it answered; the request may or may not have run there, and was not sent to another site because it is not safe to repeat"),
                "data": {"site": site, "outcome": "unknown"},
            },
        });
        serde_json::to_vec(&body).ok()
    }

    /// Whether an upstream answer of `status` is dropped and the request retried on another
    /// site: a 500, 502, 503 or 504 (the statuses of HAProxy's `retry-on
    /// all-retryable-errors`) to a request that is safe to repeat (a WebSocket upgrade or an
    /// SSE stream included: this is their first answer), not bound to a session, with a try
    /// left, another site to take it and the fleet-wide retry budget granting it. Otherwise
    /// the site's own answer passes through, so that with every site failing the client
    /// still gets a real answer.
    fn retry_on_status(&self, session: &Session, ctx: &mut RequestState, status: u16) -> bool {
        if !matches!(status, 500 | 502 | 503 | 504) || ctx.affinity.is_some() {
            return false;
        }
        // The retry budget is asked last, and here rather than in decide_retry: refused, the
        // site's own answer is passed on instead of dropped (decide_retry then finds the
        // grant held).
        ctx.attempts.may_retry(&self.steering)
            && self.safe_to_repeat(session, ctx)
            && ctx.attempts.grant(&self.steering)
    }
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = RequestState;

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // pingora's default adds its response compression module at level 0, i.e. off: a
        // module context built and consulted on every request for nothing.
    }

    fn new_ctx(&self) -> Self::CTX {
        RequestState::new(self.steering.current())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let snapshot = ctx.snapshot().clone();
        // Before anything can send the request on (pingora's path and checked exchanges
        // both send this head): the site must see who the client is, and nothing forged.
        let client = session.client_addr().and_then(|a| a.as_inet()).copied();
        // The client's region, read before X-Forwarded-For is rewritten below.
        self.locate_client(session, ctx, client);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        forwarded::apply(
            session.req_header_mut(),
            client,
            tls,
            &snapshot.config.proxy.trusted_proxies,
        )?;
        let limits = &snapshot.config.limits;
        let declared = session.req_header().headers.get("content-length");
        if limits::declared_body_over(declared.map(|v| v.as_bytes()), limits) {
            self.metrics
                .refused
                .with_label_values(&["http", "body_bytes"])
                .inc();
            // Never drain a body this large to keep the connection.
            session.set_keepalive(None);
            return respond_json(session, 413, limits::fail_body(413).unwrap_or_default()).await;
        }
        if !session.is_upgrade_req() {
            // Slowloris on the body; WebSocket frames keep pingora's own read timeout.
            session.set_read_timeout(Some(limits.body_timeout));
        }
        let req = session.req_header();
        let Some(route) = snapshot.config.route_for(req.uri.path()) else {
            return respond_json(session, 404, &br#"{"error":"no route for this path"}"#[..]).await;
        };
        ctx.attempts.set_kind(route.endpoint);
        let is_get = req.method == http::Method::GET;
        let wants_stream = req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream") && !a.contains("application/json"));
        ctx.long_lived = if session.is_upgrade_req() {
            Some(Transport::Ws)
        } else if is_get && (ctx.kind() == EndpointKind::Sse || wants_stream) {
            Some(Transport::Sse)
        } else {
            None
        };
        let affinity = self.affinity_of(&snapshot, session.req_header());
        match affinity {
            Err(_) => return respond_json(session, 404, SESSION_GONE).await,
            Ok(Some(a)) => {
                let alive = snapshot
                    .sites
                    .iter()
                    .find(|s| s.name == a.site())
                    .is_some_and(|s| steer::serves_pinned(s.state));
                if !alive {
                    return respond_json(session, 404, SESSION_GONE).await;
                }
                ctx.affinity = Some(a);
            }
            Ok(None) => {}
        }
        let held = snapshot.config.proxy.retry_buffer_bytes;
        if session.req_header().method == http::Method::POST {
            session.as_mut().enable_retry_buffering();
        }
        if self
            .refuse_contradicting_headers(session, ctx, held)
            .await?
        {
            return Ok(true);
        }
        if checked::qualifies(session.req_header(), ctx, held) {
            // Boxed: every request's filter future would otherwise carry the exchange's size.
            return Box::pin(self.checked_exchange(session, ctx)).await;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let pinned = ctx.affinity.as_ref().map(Affinity::site);
        let queued = steer::next_queued(&mut ctx.attempts, &self.steering, pinned, "http");
        let choice = match queued.await {
            Ok(choice) => choice,
            Err(NoSite::Full) => {
                ctx.shed = true;
                return Err(Error::explain(
                    ErrorType::HTTPStatus(crate::shed::STATUS),
                    "every site is at its max_in_flight",
                ));
            }
            Err(NoSite::SessionLost) => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(404),
                    SESSION_SITE_LOST,
                ))
            }
            Err(NoSite::Unroutable) => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no site can take this request",
                ))
            }
            Err(NoSite::Exhausted) => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(502),
                    "every site tried failed the request",
                ))
            }
        };
        let peer = self.peer_for(
            ctx.snapshot(),
            choice.site,
            choice.addr,
            ctx.long_lived.is_none(),
        );
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.reached_site = true;
        if ctx.long_lived.is_some() {
            // A WebSocket or SSE stream weighs on its site as an open stream while it lasts.
            ctx.stream_load = ctx.attempts.take_stream();
        }
        if let (false, Some(started), Some(site)) =
            (reused, ctx.upstream_started, Self::site_name(ctx))
        {
            self.steering.connected(site, started.elapsed());
        }
        // A POST on this path (a side-effecting tool call, a body too large to check) is
        // registered too, so that when its site is judged down the sweeper cuts it and the
        // client hears at once that its outcome is unknown, instead of after read_timeout.
        let transport = ctx.long_lived.or_else(|| {
            (session.req_header().method == http::Method::POST).then_some(Transport::Request)
        });
        if let (Some(transport), Some(site)) = (transport, Self::site_name(ctx)) {
            if let Some((local, peer)) = conns::socket_addrs(fd) {
                let site = site.to_string();
                // Long-lived connections are closed after limits.stream_idle_timeout.
                let activity = ctx.long_lived.map(|_| Activity::new());
                ctx.activity.clone_from(&activity);
                ctx.registration = Some(self.registry.register(
                    &site,
                    transport,
                    Closer::Socket { fd, local, peer },
                    activity,
                ));
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(site) = ctx.site() {
            let sites = &ctx.snapshot().config.sites;
            if let Some(host) = sites.get(site).and_then(|s| s.host.as_deref()) {
                upstream_request.insert_header("host", host)?;
            }
        }
        if let Some(Affinity::Session(bound)) = &ctx.affinity {
            upstream_request.insert_header(SESSION_HEADER, bound.upstream.as_str())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if self.retry_on_status(session, ctx, status) {
            // Nothing reached the client yet: error_while_proxy reports the failure and
            // marks the error retryable, and pingora sends the request to the next site.
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "the site answered a server error; retrying on another site",
            )
            .into_up());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if !self.label_answer(ctx, upstream_response)? {
            return Ok(());
        }
        let is_stream = upstream_response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_stream
            && ctx.kind() == EndpointKind::Sse
            && session.req_header().method == http::Method::GET
        {
            ctx.endpoint = Some(EndpointRewriter::default());
            // The rewrite changes the body's length: the client reads it chunked.
            if upstream_response
                .remove_header(&http::header::CONTENT_LENGTH)
                .is_some()
            {
                upstream_response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
        }
        if upstream_response.status.is_success()
            && Self::mcp_method(session, ctx).is_some_and(|(m, _)| m == "tools/list")
        {
            ctx.tools_answer = Some(Vec::new());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let Some(activity) = &ctx.activity {
            if body.as_ref().is_some_and(|b| !b.is_empty()) {
                activity.touch();
            }
        }
        if ctx.endpoint.is_some() {
            self.rewrite_endpoint(session.req_header().uri.path(), body, end_of_stream, ctx);
        }
        if let Some(buf) = ctx.tools_answer.as_mut() {
            if let Some(chunk) = body.as_ref() {
                if buf.len() + chunk.len() <= MAX_TOOLS_ANSWER {
                    buf.extend_from_slice(chunk);
                } else {
                    ctx.tools_answer = None;
                }
            }
            if end_of_stream {
                if let (Some(buf), Some(site)) = (ctx.tools_answer.take(), Self::site_name(ctx)) {
                    self.learn_tools(site, &buf);
                }
            }
        }
        Ok(None)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // WebSocket frames after the upgrade are a stream, not a body.
        if ctx.long_lived == Some(Transport::Ws) {
            if let Some(activity) = &ctx.activity {
                if body.as_ref().is_some_and(|b| !b.is_empty()) {
                    activity.touch();
                }
            }
            return Ok(());
        }
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let max = ctx.snapshot().config.limits.max_body_bytes;
        if ctx.body_bytes > max {
            self.metrics
                .refused
                .with_label_values(&["http", "body_bytes"])
                .inc();
            tracing::debug!(
                received = ctx.body_bytes,
                limit = max,
                "request body over limits.max_body_bytes"
            );
            return Err(limits::body_too_large());
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> pingora::proxy::FailToProxy {
        let code = limits::fail_status(e);
        if ctx.shed {
            let written = respond_shed(session).await.is_ok();
            return pingora::proxy::FailToProxy {
                error_code: code,
                can_reuse_downstream: written,
            };
        }
        if let Some(body) = self.outcome_unknown(session, e, ctx, code) {
            // A JSON-RPC request that reached its site, which failed before answering, and
            // that is not safe to send elsewhere: the client must know it may have run.
            let written = respond_json(session, code, body).await.is_ok();
            return pingora::proxy::FailToProxy {
                error_code: code,
                can_reuse_downstream: written,
            };
        }
        if code == 404 && ctx.affinity.is_some() {
            // A lost session always gets the same JSON-RPC 404, whichever path found it lost.
            let written = respond_json(session, 404, SESSION_GONE).await.is_ok();
            return pingora::proxy::FailToProxy {
                error_code: code,
                can_reuse_downstream: written,
            };
        }
        if code > 0 {
            let body = limits::fail_body(code).map(Bytes::from_static);
            if let Err(e) = session
                .respond_error_with_body(code, body.unwrap_or_default())
                .await
            {
                tracing::debug!(error = %e, code, "could not answer a failed request");
            }
        }
        pingora::proxy::FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        ctx.attempts.failed(&self.steering, failure_of(&e));
        self.decide_retry(ctx, e, true)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        let e = e.more_context(format!("peer: {peer}"));
        // A WebSocket upgrade or SSE stream whose site failed before any answer reached the
        // client (a dead pooled connection, a reset) is as safe to send elsewhere as any GET.
        let not_started = session.response_written().is_none();
        if e.esource() == &pingora::ErrorSource::Upstream
            && (ctx.long_lived.is_none() || not_started)
        {
            ctx.attempts.failed(&self.steering, failure_of(&e));
            let safe = self.safe_to_repeat(session, ctx);
            self.decide_retry(ctx, e, safe)
        } else {
            let mut e = e;
            e.set_retry(false);
            e
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        ctx.registration = None;
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let transport = match ctx.long_lived {
            Some(t) => t.as_str(),
            None => ctx.kind().as_str(),
        };
        // The site's series are cached per config generation: no label hashing and no
        // allocation per request.
        // A site is chosen only for a routed request.
        let handles = ctx
            .site()
            .map(|_| self.metrics.site_handles(ctx.snapshot()));
        let handle = handles.as_deref().and_then(|h| h.get(ctx.site()?));
        let site = handle.map_or("-", SiteHandle::name);
        match handle {
            Some(h) => h.count_request(&self.metrics, transport, code),
            None => {
                let mut buf = itoa::Buffer::new();
                self.metrics
                    .requests
                    .with_label_values(&[site, transport, buf.format(code)])
                    .inc();
            }
        }
        if let Some((method, _)) = Self::mcp_method(session, ctx) {
            self.metrics
                .mcp_requests
                .with_label_values(&[site, mcp::method_label(method)])
                .inc();
        }
        if e.is_some() && !matches!(code, 404 | 408 | 413) {
            self.metrics
                .failed_requests
                .with_label_values(&[site])
                .inc();
        }
        if let (Some(started), Some(h)) = (ctx.upstream_started, handle) {
            if e.is_none() && ctx.long_lived.is_none() && site != "-" {
                h.observe_upstream_latency(&self.metrics, started.elapsed().as_secs_f64());
            }
        }
        if e.is_none() && ctx.long_lived.is_none() && !ctx.observed {
            if code >= 500 {
                ctx.attempts.failed(&self.steering, Failure::Status(code));
            } else {
                ctx.attempts.succeeded(&self.steering);
            }
        }
    }
}

impl HttpProxy {
    /// What the request is bound to: its session, or the HTTP+SSE stream its `sst=` token
    /// names when [`affinity::stream_affinity`] honours the token here. `Err` for a session
    /// or token sitesteer never issued.
    fn affinity_of(
        &self,
        snapshot: &Snapshot,
        req: &RequestHeader,
    ) -> std::result::Result<Option<Affinity>, affinity::UnknownSession> {
        let claim = affinity::of_request(
            &self.codec,
            req.headers.get(SESSION_HEADER).map(|v| v.as_bytes()),
            req.uri.query(),
        )?;
        Ok(match claim {
            None => None,
            Some(Claim::Session(bound)) => Some(Affinity::Session(bound)),
            Some(Claim::Stream(token)) => {
                let target = affinity::message_target(req.uri.path(), req.uri.query());
                let state = snapshot
                    .sites
                    .iter()
                    .find(|s| s.name == token.site)
                    .map(|s| s.state);
                let liveness = self.streams.liveness(&token);
                match affinity::stream_affinity(&token, &target, liveness, state) {
                    Ok(pin) => Some(pin),
                    Err(why) => {
                        tracing::debug!(site = %token.site, reason = why.reason(), "stream token not honoured; steering as a new request");
                        self.metrics
                            .sse_token_unpinned
                            .with_label_values(&[why.reason()])
                            .inc();
                        None
                    }
                }
            }
        })
    }

    /// Passes one chunk of an HTTP+SSE stream through the `endpoint` event rewrite: the
    /// message URL gets a token for this stream (registered live until the stream ends).
    /// The search ends with the endpoint event, or unrewritten (counted) past its bounds.
    fn rewrite_endpoint(
        &self,
        stream_path: &str,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestState,
    ) {
        let site = Self::site_name(ctx).unwrap_or("").to_string();
        let Some(rewriter) = ctx.endpoint.as_mut() else {
            return;
        };
        let chunk = body.take().unwrap_or_default();
        let live = &mut ctx.live_stream;
        let out = rewriter.feed(&chunk, end, &mut |url| {
            let target = affinity::endpoint_target(url, stream_path)?;
            let stream = self.streams.open();
            let token = affinity::StreamToken {
                site: site.clone(),
                instance: self.streams.instance(),
                stream: stream.serial(),
                target,
            };
            let signed = token.encode(&self.codec)?;
            *live = Some(stream);
            Some(affinity::with_token(url, &signed))
        });
        *body = Some(Bytes::from(out));
        if let Some(ended) = rewriter.ended() {
            if ended != Ended::Rewritten {
                tracing::info!(
                    site,
                    reason = ended.reason(),
                    "SSE endpoint event passed without a stream token"
                );
                self.metrics
                    .sse_endpoint_unrewritten
                    .with_label_values(&[ended.reason()])
                    .inc();
            }
            ctx.endpoint = None;
        }
    }
}
