//! The HTTP data plane on pingora: HTTP, MCP Streamable HTTP, WebSocket upgrades and SSE.
//! Routes by path prefix to a site endpoint kind, asks [`steer::choose`] for the site, sets
//! the per-site upstream `Host`, adds `x-sitesteer-site`, reports every outcome as a passive
//! observation, and retries on another site when that cannot repeat a side effect.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};
use sitesteer_config::EndpointKind;
use sitesteer_probes::{Failure, HealthHandle, Observation, Snapshot, Source};
use tokio::time::Instant;

use crate::mcp;
use crate::metrics::Metrics;
use crate::steer::{self, Mode, RequestCtx, Tried};

/// Response header naming the site that served.
pub const SITE_HEADER: &str = "x-sitesteer-site";

/// The pingora proxy logic.
pub struct HttpProxy {
    health: HealthHandle,
    metrics: Arc<Metrics>,
}

impl HttpProxy {
    /// A proxy steering by `health`'s snapshots.
    pub fn new(health: HealthHandle, metrics: Arc<Metrics>) -> Self {
        Self { health, metrics }
    }

    fn report(&self, ctx: &RequestState, outcome: Result<Duration, Failure>) {
        let (Some(site), Some(snap)) = (ctx.site, ctx.snapshot.as_ref()) else {
            return;
        };
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

/// Per-request state.
pub struct RequestState {
    snapshot: Option<Arc<Snapshot>>,
    kind: EndpointKind,
    site: Option<usize>,
    tried: Tried,
    random: u64,
    started: Instant,
    upstream_started: Option<Instant>,
    safe_to_repeat: Option<bool>,
}

fn kind_label(kind: EndpointKind) -> &'static str {
    kind.as_str()
}

fn failure_of(e: &Error) -> Failure {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Failure::Timeout
        }
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            Failure::Connect
        }
        ErrorType::HTTPStatus(code) => Failure::Status(*code),
        _ => Failure::Reset,
    }
}

impl HttpProxy {
    /// Whether the request may be sent again to another site after bytes reached the first.
    fn safe_to_repeat(&self, session: &Session, ctx: &mut RequestState) -> bool {
        if let Some(safe) = ctx.safe_to_repeat {
            return safe;
        }
        let req = session.req_header();
        let safe = if req.method.is_idempotent() {
            true
        } else if req.method == http::Method::POST && !session.as_ref().retry_buffer_truncated() {
            let method = req
                .headers
                .get("mcp-method")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| {
                    session
                        .as_ref()
                        .get_retry_buffer()
                        .and_then(|b| mcp::method_of(&b))
                });
            method.is_some_and(|m| mcp::is_safe_method(&m))
        } else {
            false
        };
        ctx.safe_to_repeat = Some(safe);
        safe
    }
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = RequestState;

    fn new_ctx(&self) -> Self::CTX {
        RequestState {
            snapshot: None,
            kind: EndpointKind::Http,
            site: None,
            tried: Tried::default(),
            random: fastrand::u64(..),
            started: Instant::now(),
            upstream_started: None,
            safe_to_repeat: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let snapshot = self.health.snapshot();
        let path = session.req_header().uri.path();
        let Some(route) = snapshot.config.route_for(path) else {
            let mut resp = ResponseHeader::build(404, Some(2))?;
            resp.insert_header("content-type", "application/json")?;
            let body = bytes::Bytes::from_static(br#"{"error":"no route for this path"}"#);
            resp.insert_header("content-length", body.len().to_string())?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await?;
            return Ok(true);
        };
        ctx.kind = route.endpoint;
        ctx.snapshot = Some(snapshot);
        if session.req_header().method == http::Method::POST {
            session.as_mut().enable_retry_buffering();
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // A retry sees the newest health state, so it avoids sites that just failed.
        let snapshot = if ctx.tried.is_empty() {
            ctx.snapshot
                .clone()
                .unwrap_or_else(|| self.health.snapshot())
        } else {
            self.health.snapshot()
        };
        let mut req = RequestCtx::new(ctx.kind, ctx.random);
        req.tried = ctx.tried;
        let Some(choice) = steer::choose(&snapshot, &req) else {
            self.metrics.unroutable.inc();
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no site can take this request",
            ));
        };
        if choice.mode == Mode::Panic {
            self.metrics.panic_decisions.inc();
            self.metrics.panic_mode.set(1);
        } else {
            self.metrics.panic_mode.set(0);
        }
        ctx.site = Some(choice.site);
        ctx.tried.push(choice.site);
        let proxy = &snapshot.config.proxy;
        let mut peer = HttpPeer::new(choice.addr, false, String::new());
        peer.options.connection_timeout = Some(proxy.connect_timeout);
        peer.options.total_connection_timeout = Some(proxy.connect_timeout);
        peer.options.read_timeout = Some(proxy.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        ctx.snapshot = Some(snapshot);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let host = match (ctx.snapshot.as_ref(), ctx.site) {
            (Some(snap), Some(site)) => snap.config.sites.get(site).and_then(|s| s.host.clone()),
            _ => None,
        };
        if let Some(host) = host {
            upstream_request.insert_header("host", host)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(snap), Some(site)) = (ctx.snapshot.as_ref(), ctx.site) {
            if let Some(view) = snap.sites.get(site) {
                upstream_response.insert_header(SITE_HEADER, view.name.as_str())?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.report(ctx, Err(failure_of(&e)));
        self.count_retry(ctx, &mut e, true);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if e.esource() == &pingora::ErrorSource::Upstream {
            self.report(ctx, Err(failure_of(&e)));
            let safe = self.safe_to_repeat(session, ctx);
            self.count_retry(ctx, &mut e, safe);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let site = match (ctx.snapshot.as_ref(), ctx.site) {
            (Some(snap), Some(site)) => {
                snap.sites.get(site).map(|s| s.name.as_str()).unwrap_or("-")
            }
            _ => "-",
        };
        let mut buf = itoa::Buffer::new();
        self.metrics
            .requests
            .with_label_values(&[site, kind_label(ctx.kind), buf.format(code)])
            .inc();
        if let Some(started) = ctx.upstream_started {
            if e.is_none() && site != "-" {
                self.metrics
                    .upstream_latency
                    .with_label_values(&[site])
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        if e.is_none() && ctx.site.is_some() {
            let outcome = if code >= 500 {
                Err(Failure::Status(code))
            } else {
                Ok(ctx.started.elapsed())
            };
            self.report(ctx, outcome);
        }
    }
}

impl HttpProxy {
    /// Marks `e` retryable when the request may go to another site and tries are left.
    fn count_retry(&self, ctx: &RequestState, e: &mut Box<Error>, allowed: bool) {
        let limit = ctx
            .snapshot
            .as_ref()
            .map(|s| s.config.proxy.retries)
            .unwrap_or(0);
        let retry = allowed && ctx.tried.len() <= limit && ctx.tried.len() < Tried::CAP;
        e.set_retry(retry);
        if retry {
            if let (Some(snap), Some(site)) = (ctx.snapshot.as_ref(), ctx.site) {
                if let Some(view) = snap.sites.get(site) {
                    self.metrics
                        .retries
                        .with_label_values(&[view.name.as_str()])
                        .inc();
                }
            }
        }
    }
}
