//! Checked exchanges. A request that is safe to repeat and not bound to a session (a `GET`,
//! or a small JSON-RPC request such as MCP `ping`, `tools/list`, `resources/read` or a
//! `tools/call` of a tool its site marks read-only and idempotent) is sent by sitesteer
//! itself, and the site's whole answer is read and checked before any byte of it reaches
//! the client. A connection refused or reset, a timeout, a body cut short, a 5xx, or a 2xx
//! that is not the JSON-RPC answer to the request (another `id`, neither `result` nor
//! `error`, not JSON-RPC at all) counts against the site, and the request goes to the next
//! site, up to `proxy.retries`. pingora's streaming path cannot take an answer back once its
//! head is out; this one can, because nothing goes out until the answer is known to be
//! right. With no site left, the last site's own answer is passed on (or a 502 when none
//! answered).
//!
//! Silence is a failure too: an attempt still without an answer after its site's usual time
//! ([`steer::hedge_after`]: probe p99 × `proxy.hedge_factor`, at least `proxy.hedge_floor`)
//! is hedged to another site within the fleet's hedge budget, the first right answer wins,
//! and an attempt whose site is judged down, put in maintenance or turns suspect (while
//! another site is up) meanwhile is rescued: sent elsewhere at once. A hung site so costs a safe request tens of milliseconds, not
//! `read_timeout`.
//!
//! Limits: an answer over [`MAX_ANSWER`] is passed on as it comes once that much is held,
//! and an event stream (`text/event-stream`) as soon as its head arrives, so a stream of
//! progress events is never held back; from there a failure can only cut the answer.
//!
//! Everything else goes through pingora as before: JSON bodies over
//! `proxy.retry_buffer_bytes` (at most [`MAX_REQUEST`]), sessions, WebSocket upgrades and
//! SSE streams, notifications and batches, and requests that are not safe to repeat. A
//! body read here is handed back to pingora through its retry buffer, which holds it whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::proxy::Session;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::Result;
use serde_json::Value;
use sitesteer_config::EndpointKind;
use sitesteer_probes::{Failure, SiteState, Snapshot};
use tokio::time::Instant;

use super::{failure_of, HttpProxy, RequestState};
use crate::limits;
use crate::steer::{self, Choice, NoSite};

/// An attempt in flight beside the first one of a round (a hedge).
type InFlight<'a> = Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;

/// How often a round in flight looks whether its sites were judged out of service.
const RESCUE_POLL: Duration = Duration::from_millis(10);

/// The hedge's outcome, or never when there is none.
async fn in_flight(hedge: &mut Option<(usize, Instant, InFlight<'_>)>) -> Attempt {
    match hedge {
        Some((_, _, attempt)) => attempt.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Largest request body read ahead to judge the request: pingora's retry buffer, which
/// hands it back to pingora when the exchange is not checked, holds 64 KiB.
pub(super) const MAX_REQUEST: usize = 64 * 1024;
/// Largest answer held back to be checked; a longer one is passed on unchecked as it comes.
const MAX_ANSWER: usize = 1 << 20;

/// Whether the request head allows a checked exchange: to the HTTP endpoint, bound to no
/// session, not a WebSocket upgrade or an SSE stream, and either a `GET` without a body or
/// a `POST` of JSON of a known length up to `max_body` (at most [`MAX_REQUEST`]) from a
/// client that takes a JSON answer.
pub(super) fn qualifies(req: &RequestHeader, ctx: &RequestState, max_body: usize) -> bool {
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let plain = ctx.kind() == EndpointKind::Http
        && ctx.long_lived.is_none()
        && ctx.affinity.is_none()
        && header("transfer-encoding").is_none()
        && header("upgrade").is_none()
        // The client waits for a `100 Continue` before its body: pingora's path relays it.
        && header("expect").is_none();
    let length = header("content-length").map(|v| v.trim().parse::<usize>().ok());
    if req.method == http::Method::GET {
        return plain && matches!(length, None | Some(Some(0)));
    }
    req.method == http::Method::POST
        && plain
        && length
            .flatten()
            .is_some_and(|n| n > 0 && n <= max_body.min(MAX_REQUEST))
        && header("content-type").is_some_and(|v| v.starts_with("application/json"))
        && header("accept").is_none_or(|v| v.contains("application/json") || v.contains("*/*"))
}

/// The `id` of a single JSON-RPC request (not a notification, not a batch) in `body`.
pub(super) fn request_id(body: &[u8]) -> Option<Value> {
    let message = serde_json::from_slice::<Value>(body).ok()?;
    message.get("method")?.as_str()?;
    match message.get("id")? {
        id @ (Value::String(_) | Value::Number(_)) => Some(id.clone()),
        _ => None,
    }
}

/// Why a 2xx answer is not the answer to the request with `id`; `Ok` when it is: one
/// JSON-RPC 2.0 response in JSON, with that `id` and either a `result` or an `error`. (Event
/// streams are passed on as they come, never checked here.)
pub(super) fn check_answer(
    id: &Value,
    content_type: &str,
    body: &[u8],
) -> Result<(), &'static str> {
    if !content_type.starts_with("application/json") {
        return Err("not a JSON answer");
    }
    let message: Value = serde_json::from_slice(body).map_err(|_| "not valid JSON")?;
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("not a JSON-RPC 2.0 answer");
    }
    if !message
        .get("id")
        .is_some_and(|answered| same_id(answered, id))
    {
        return Err("the answer to another request id");
    }
    if message.get("result").is_some() == message.get("error").is_some() {
        return Err("neither a result nor an error");
    }
    Ok(())
}

/// Where one attempt goes: the site's peer, `Host` and name.
struct Target<'a> {
    peer: HttpPeer,
    host: Option<&'a str>,
    site: usize,
    name: &'a str,
    read_timeout: Duration,
}

/// Whether `a` and `b` are the same JSON-RPC id as JSON-RPC means it: the same string, or
/// the same number however it is written (`1`, `1.0` and `1e0` are one id; a site that
/// normalises numbers answers `1` to `1.0`). Integers compare exactly, beyond what a float
/// holds; other numbers by value.
fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y),
            }
        }
        _ => a == b,
    }
}

/// A site's answer, read whole.
struct Answer {
    site: usize,
    head: ResponseHeader,
    body: Bytes,
}

/// How one try at one site ended.
enum Attempt {
    /// The right answer (or a client error, which is the client's to see).
    Good(Answer),
    /// An answer that must not reach the client while another site can take the request.
    Wrong(Answer, Failure, &'static str),
    /// No answer: connect, timeout, reset or a body cut short.
    Failed(Failure),
    /// An answer too long to hold back: its head and first bytes, and the rest to stream.
    Long(Answer, Box<Http1Session>),
}

impl HttpProxy {
    /// Answers a request that [`qualifies`] by a checked exchange (`Ok(true)`): a `GET`
    /// always, a `POST` when its body is one JSON-RPC request that is safe to repeat.
    /// Otherwise `Ok(false)`: pingora proxies it, sending the body from its retry buffer.
    pub(super) async fn checked_exchange(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
    ) -> Result<bool> {
        if session.req_header().method == http::Method::GET {
            self.exchange(session, ctx, &Bytes::new(), None).await?;
            return Ok(true);
        }
        let body = match ctx.body.clone() {
            // Read already, to check it against its MCP headers.
            Some(body) => body,
            None => super::read_whole_body(session).await?,
        };
        let Some(id) = request_id(&body) else {
            return Ok(false);
        };
        if session.as_ref().retry_buffer_truncated() || !self.safe_to_repeat(session, ctx) {
            return Ok(false);
        }
        self.exchange(session, ctx, &body, Some(&id)).await?;
        Ok(true)
    }

    /// Sends the request to sites in turn until one gives the right answer, and passes the
    /// answer on.
    async fn exchange(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
        body: &Bytes,
        id: Option<&Value>,
    ) -> Result<()> {
        self.steering
            .earn_hedge(ctx.snapshot().config.proxy.hedge_budget);
        let mut last: Option<Answer> = None;
        let no_site = loop {
            let queued = steer::next_queued(&mut ctx.attempts, &self.steering, None, "http");
            let choice = match queued.await {
                Ok(choice) => choice,
                Err(why) => break why,
            };
            ctx.upstream_started = Some(Instant::now());
            let won = self
                .race(session.req_header(), ctx, body, id, choice, &mut last)
                .await;
            match won {
                Some(Attempt::Good(answer)) => return self.deliver(session, ctx, answer).await,
                Some(Attempt::Long(answer, upstream)) => {
                    return self.deliver_long(session, ctx, answer, upstream).await
                }
                // Every attempt of the round failed (each reported): the next site.
                _ => {}
            }
        };
        match last {
            // No site gave the right answer: the last site's own answer is the truest one.
            // It was reported as wrong already; the access log must not count it as served.
            Some(answer) => {
                ctx.observed = true;
                self.deliver(session, ctx, answer).await
            }
            None if no_site == NoSite::Full => super::respond_shed(session).await,
            None => {
                let code = if no_site == NoSite::Unroutable {
                    503
                } else {
                    502
                };
                let body = limits::fail_body(code).map(Bytes::from_static);
                session
                    .respond_error_with_body(code, body.unwrap_or_default())
                    .await
            }
        }
    }

    /// One round of attempts, starting at `choice`. While it waits, the attempt is hedged to a
    /// second site once it is slower than its site normally is ([`steer::hedge_after`], within
    /// the hedge budget), and abandoned when its site is judged down, put in maintenance or suspect
    /// (a rescue: the next round sends the request elsewhere at once instead of waiting for
    /// `read_timeout`). Returns the first right answer (`Good` or `Long`; a late one is
    /// dropped with its connection), or `None` when every attempt of the round failed, each
    /// reported against its site (wrong answers kept in `last`).
    async fn race(
        &self,
        head: &RequestHeader,
        ctx: &mut RequestState,
        body: &Bytes,
        id: Option<&Value>,
        choice: Choice,
        last: &mut Option<Answer>,
    ) -> Option<Attempt> {
        let snapshot = ctx.attempts.snapshot().clone();
        let proxy = &snapshot.config.proxy;
        // Bounded as a whole: a site that drips its answer cannot hold the request.
        let limit = proxy.connect_timeout + proxy.read_timeout * 2;
        let started = Instant::now();
        let first = choice.site;
        let mut hedge_at = snapshot
            .sites
            .get(first)
            .and_then(|s| steer::hedge_after(s, proxy))
            .map(|after| started + after);
        let primary = self.attempt_at(head, snapshot.clone(), choice, body, id);
        tokio::pin!(primary);
        let mut primary_live = true;
        let mut hedge: Option<(usize, Instant, InFlight<'_>)> = None;
        loop {
            if !primary_live && hedge.is_none() {
                return None;
            }
            let mut wake = Instant::now() + RESCUE_POLL;
            if primary_live {
                wake = wake.min(started + limit);
                if hedge.is_none() {
                    wake = hedge_at.map_or(wake, |at| wake.min(at));
                }
            }
            if let Some((_, hedge_started, _)) = &hedge {
                wake = wake.min(*hedge_started + limit);
            }
            tokio::select! {
                biased;
                out = &mut primary, if primary_live => {
                    primary_live = false;
                    if let Some(won) = self.judge(ctx, first, out, last) {
                        return Some(won);
                    }
                }
                out = in_flight(&mut hedge) => {
                    let site = hedge.take().map_or(first, |(site, _, _)| site);
                    if let Some(won) = self.judge(ctx, site, out, last) {
                        return Some(won);
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if primary_live && now >= started + limit {
                        primary_live = false;
                        ctx.attempts.failed_at(&self.steering, first, Failure::Timeout);
                    }
                    if hedge.as_ref().is_some_and(|(_, at, _)| now >= *at + limit) {
                        if let Some((site, _, _)) = hedge.take() {
                            ctx.attempts.failed_at(&self.steering, site, Failure::Timeout);
                        }
                    }
                    self.rescue(ctx, &snapshot, first, &mut primary_live, &mut hedge);
                    if primary_live && hedge.is_none() && hedge_at.is_some_and(|at| now >= at) {
                        hedge_at = None;
                        if ctx.attempts.may_retry(&self.steering)
                            && ctx.attempts.hedge(&self.steering, &snapshot, first)
                        {
                            if let Ok(second) = ctx.attempts.next(&self.steering, None) {
                                let site = second.site;
                                let newest = ctx.attempts.snapshot().clone();
                                tracing::debug!(site = snapshot.sites.get(first).map(|s| s.name.as_str()), "slow: hedged");
                                hedge = Some((site, now, Box::pin(self.attempt_at(head, newest, second, body, id))));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Abandons the attempts in flight whose site the newest Snapshot has down, in
    /// maintenance or suspect, when another site can take the request: each is reported as a
    /// timeout and counted as a rescue.
    fn rescue(
        &self,
        ctx: &mut RequestState,
        snapshot: &Snapshot,
        first: usize,
        primary_live: &mut bool,
        hedge: &mut Option<(usize, Instant, InFlight<'_>)>,
    ) {
        let newest = self.steering.current();
        if newest.snapshot.generation != snapshot.generation {
            // A reload renumbered the sites; the deadlines still bound the attempts.
            return;
        }
        // A suspect site is left only for one that is up: when every site is suspect, an
        // answer from the one the request is on is still the best hope.
        let up_elsewhere = |site: usize| {
            newest
                .snapshot
                .sites
                .iter()
                .any(|s| s.id != site && s.state == SiteState::Up)
        };
        let out = |site: usize| {
            newest.snapshot.sites.get(site).is_some_and(|s| {
                matches!(s.state, SiteState::Down | SiteState::Maintenance)
                    || (s.suspect && up_elsewhere(site))
            })
        };
        let lost = (*primary_live && out(first)) || hedge.as_ref().is_some_and(|h| out(h.0));
        if !lost || !ctx.attempts.may_retry(&self.steering) || !ctx.attempts.grant(&self.steering) {
            // Nothing to rescue, nowhere to send it, or the retry budget is spent: keep
            // waiting (the deadlines still bound the attempt).
            return;
        }
        if *primary_live && out(first) {
            *primary_live = false;
            self.steering.count_rescue(snapshot, first);
            ctx.attempts
                .failed_at(&self.steering, first, Failure::Timeout);
        }
        if hedge.as_ref().is_some_and(|(site, _, _)| out(*site)) {
            if let Some((site, _, _)) = hedge.take() {
                self.steering.count_rescue(snapshot, site);
                ctx.attempts
                    .failed_at(&self.steering, site, Failure::Timeout);
            }
        }
    }

    /// Reports how an attempt at `site` ended: the winning answer, or `None` after the
    /// failure is reported (a wrong answer is kept in `last`, the truest answer when no site
    /// gives a right one).
    fn judge(
        &self,
        ctx: &mut RequestState,
        site: usize,
        out: Attempt,
        last: &mut Option<Answer>,
    ) -> Option<Attempt> {
        match out {
            won @ (Attempt::Good(_) | Attempt::Long(..)) => Some(won),
            Attempt::Wrong(answer, failure, why) => {
                tracing::debug!(
                    site = ctx.snapshot().sites.get(site).map(|s| s.name.as_str()),
                    why,
                    "wrong answer; next site"
                );
                ctx.attempts.failed_at(&self.steering, site, failure);
                *last = Some(answer);
                None
            }
            Attempt::Failed(failure) => {
                ctx.attempts.failed_at(&self.steering, site, failure);
                None
            }
        }
    }

    /// An attempt at the site of `choice`, with its peer and `Host` from `snapshot`.
    async fn attempt_at(
        &self,
        head: &RequestHeader,
        snapshot: Arc<Snapshot>,
        choice: Choice,
        body: &Bytes,
        id: Option<&Value>,
    ) -> Attempt {
        let site = snapshot.config.sites.get(choice.site);
        let target = Target {
            peer: self.peer_for(&snapshot, choice.site, choice.addr, true),
            host: site.and_then(|s| s.host.as_deref()),
            site: choice.site,
            name: site.map_or("", |s| s.name.as_str()),
            read_timeout: snapshot.config.proxy.read_timeout,
        };
        self.attempt(head, &target, body, id).await
    }

    /// One try at one site: the request out, the whole answer in (or its first
    /// [`MAX_ANSWER`] bytes), judged. A pooled connection that turns out dead before any
    /// answer is replaced by a fresh one once, without counting against the site.
    async fn attempt(
        &self,
        head: &RequestHeader,
        target: &Target<'_>,
        body: &Bytes,
        id: Option<&Value>,
    ) -> Attempt {
        let (peer, host, site) = (&target.peer, target.host, target.site);
        // A pooled connection that turns out dead before any answer gets one more try (a
        // fresh connection, or another pooled one); a failure then counts against the site.
        let mut second = false;
        let (mut upstream, resp) = loop {
            let pooled = self.connector.reused_http_session(peer).await;
            let reused = pooled.is_some() && !second;
            let mut upstream = match pooled {
                Some(upstream) => upstream,
                // Connecting (TLS included) is a large future: boxed, and only when the pool
                // has nothing.
                None => {
                    let connecting = Instant::now();
                    match Box::pin(self.connector.get_http_session(peer)).await {
                        Ok((upstream, _)) => {
                            self.steering.connected(target.name, connecting.elapsed());
                            upstream
                        }
                        Err(e) => return Attempt::Failed(failure_of(&e)),
                    }
                }
            };
            upstream.read_timeout = Some(target.read_timeout);
            upstream.write_timeout = Some(target.read_timeout);
            match send(&mut upstream, head, host, body).await {
                Ok(resp) => break (upstream, resp),
                Err(_) if reused => second = true,
                Err(e) => return Attempt::Failed(failure_of(&e)),
            }
        };
        let content_type = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let status = resp.status.as_u16();
        if content_type.starts_with("text/event-stream") && status < 500 {
            // Events may come for as long as the work runs: passed on as they come.
            let answer = Answer {
                site,
                head: resp,
                body: Bytes::new(),
            };
            return Attempt::Long(answer, Box::new(upstream));
        }
        let mut answer = BytesMut::new();
        loop {
            match upstream.read_body_bytes().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Attempt::Failed(failure_of(&e)),
            }
            if answer.len() > MAX_ANSWER {
                if status < 500 {
                    let answer = Answer {
                        site,
                        head: resp,
                        body: answer.freeze(),
                    };
                    return Attempt::Long(answer, Box::new(upstream));
                }
                // A server error that long is not held whole; its head says enough.
                answer.truncate(MAX_ANSWER);
                break;
            }
        }
        if upstream.is_body_done() {
            upstream.respect_keepalive();
            self.connector
                .release_http_session(upstream, peer, peer.idle_timeout())
                .await;
        }
        let answer = Answer {
            site,
            head: resp,
            body: answer.freeze(),
        };
        if status >= 500 {
            return Attempt::Wrong(answer, Failure::Status(status), "a server error");
        }
        let Some(id) = id.filter(|_| (200..300).contains(&status)) else {
            return Attempt::Good(answer);
        };
        match check_answer(id, &content_type, &answer.body) {
            Ok(()) => Attempt::Good(answer),
            Err(why) => Attempt::Wrong(answer, Failure::BadAnswer, why),
        }
    }

    /// Passes a whole answer on, with `Content-Length`, the site header and the session id
    /// signed for the client.
    async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
        answer: Answer,
    ) -> Result<()> {
        ctx.attempts.answered_by(answer.site);
        let mut head = answer.head;
        for hop in ["transfer-encoding", "connection", "keep-alive"] {
            head.remove_header(hop);
        }
        head.insert_header("content-length", answer.body.len().to_string())?;
        self.label_answer(ctx, &mut head)?;
        if head.status.is_success()
            && Self::mcp_method(session, ctx).is_some_and(|(m, _)| m == "tools/list")
        {
            if let Some(site) = Self::site_name(ctx) {
                self.learn_tools(site, &answer.body);
            }
        }
        session
            .write_response_header(Box::new(head), false)
            .await
            .map_err(|e| e.into_down())?;
        session
            .write_response_body(Some(answer.body), true)
            .await
            .map_err(|e| e.into_down())
    }

    /// Passes on an answer too long to hold back: its head and the bytes read so far, then
    /// the rest as it comes. A failure from here on can only cut the answer.
    async fn deliver_long(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
        answer: Answer,
        mut upstream: Box<Http1Session>,
    ) -> Result<()> {
        ctx.attempts.answered_by(answer.site);
        let mut head = answer.head;
        for hop in ["connection", "keep-alive"] {
            head.remove_header(hop);
        }
        self.label_answer(ctx, &mut head)?;
        let down = |e: Box<pingora::Error>| e.into_down();
        session
            .write_response_header(Box::new(head), false)
            .await
            .map_err(down)?;
        if !answer.body.is_empty() {
            session
                .write_response_body(Some(answer.body), false)
                .await
                .map_err(down)?;
        }
        loop {
            match upstream.read_body_bytes().await {
                Ok(Some(chunk)) => session
                    .write_response_body(Some(chunk), false)
                    .await
                    .map_err(down)?,
                Ok(None) => return session.write_response_body(None, true).await.map_err(down),
                Err(e) => {
                    ctx.attempts.failed(&self.steering, failure_of(&e));
                    return Err(e.into_up());
                }
            }
        }
    }
}

/// Writes the request (its head with the site's `Host`, and the body) and reads the answer's
/// head, skipping interim `1xx` heads.
async fn send(
    upstream: &mut Http1Session,
    head: &RequestHeader,
    host: Option<&str>,
    body: &Bytes,
) -> Result<ResponseHeader> {
    let mut req = head.clone();
    if let Some(host) = host {
        req.insert_header("host", host)?;
    }
    upstream.write_request_header(Box::new(req)).await?;
    upstream.write_body(body).await?;
    upstream.finish_body().await?;
    for _ in 0..4 {
        upstream.read_response().await?;
        let resp = upstream
            .resp_header()
            .cloned()
            .ok_or_else(|| pingora::Error::new(pingora::ErrorType::InvalidHTTPHeader))?;
        if !resp.status.is_informational() {
            return Ok(resp);
        }
    }
    Err(pingora::Error::explain(
        pingora::ErrorType::InvalidHTTPHeader,
        "too many interim answers",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    /// A request not yet routed, steered by a one-site Snapshot.
    fn request_state() -> RequestState {
        let text = "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n";
        let config =
            sitesteer_config::parse(text, "test", std::path::Path::new(".")).expect("test config");
        let now = Instant::now();
        let mut table =
            sitesteer_probes::HealthTable::new(Arc::new(config), Default::default(), now);
        let snapshot = Arc::new(table.snapshot(now));
        RequestState::new(Arc::new(crate::steer::Published::new(snapshot)))
    }

    #[test]
    fn only_single_requests_have_an_id() {
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#),
            Some(json!(7))
        );
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#),
            Some(json!("a"))
        );
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        assert_eq!(
            request_id(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            None
        );
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#),
            None
        );
        assert_eq!(request_id(b"not json"), None);
    }

    #[test]
    fn ids_compare_as_json_rpc_means_them() {
        let yes = [
            (json!(1), json!(1)),
            (json!(1.0), json!(1)),
            (json!(1), json!(1.0)),
            (json!(1e0), json!(1)),
            (json!(-3), json!(-3.0)),
            (json!("a"), json!("a")),
            (json!(u64::MAX), json!(u64::MAX)),
        ];
        for (a, b) in yes {
            assert!(same_id(&a, &b), "{a} and {b} are one id");
        }
        let no = [
            (json!(1), json!(2)),
            (json!(1), json!("1")),
            (json!("a"), json!("A")),
            (json!(1.5), json!(1)),
            (json!(u64::MAX), json!(u64::MAX - 1)),
            (json!(null), json!(0)),
        ];
        for (a, b) in no {
            assert!(!same_id(&a, &b), "{a} and {b} are different ids");
        }
        // The answer of a site that normalises numbers is the right answer.
        let normalised = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(
            check_answer(&json!(1.0), "application/json", normalised),
            Ok(())
        );
    }

    #[test]
    fn a_json_answer_must_answer_this_id() {
        let id = json!(7);
        let ok = br#"{"jsonrpc":"2.0","id":7,"result":{}}"#;
        assert_eq!(check_answer(&id, "application/json", ok), Ok(()));
        let error = br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
        assert_eq!(
            check_answer(&id, "application/json; charset=utf-8", error),
            Ok(())
        );
        for wrong in [
            &br#"{"jsonrpc":"2.0","id":"not-yours","result":"garbage"}"#[..],
            br#"{"jsonrpc":"2.0","id":8,"result":{}}"#,
            br#"{"jsonrpc":"1.0","id":7,"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":7}"#,
            br#"{"jsonrpc":"2.0","id":7,"result":{},"error":{}}"#,
            br#"{"jsonrpc":"2.0","id":7,"res"#,
            b"",
        ] {
            assert!(
                check_answer(&id, "application/json", wrong).is_err(),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(check_answer(&id, "text/html", ok).is_err());
    }

    fn head(lines: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/mcp", None).expect("head");
        for (k, v) in lines {
            req.insert_header(k.to_string(), *v).expect("header");
        }
        req
    }

    #[test]
    fn small_json_posts_without_a_session_qualify() {
        let ctx = request_state();
        let json = [
            ("content-type", "application/json"),
            ("content-length", "40"),
            ("accept", "application/json, text/event-stream"),
        ];
        assert!(qualifies(&head(&json), &ctx, MAX_REQUEST));
        let big = [
            ("content-type", "application/json"),
            ("content-length", "70000"),
        ];
        assert!(!qualifies(&head(&big), &ctx, MAX_REQUEST));
        let chunked = [
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
        ];
        assert!(!qualifies(&head(&chunked), &ctx, MAX_REQUEST));
        let stream_only = [
            ("content-type", "application/json"),
            ("content-length", "40"),
            ("accept", "text/event-stream"),
        ];
        assert!(!qualifies(&head(&stream_only), &ctx, MAX_REQUEST));
        let form = [("content-type", "text/plain"), ("content-length", "40")];
        assert!(!qualifies(&head(&form), &ctx, MAX_REQUEST));
        let mut expecting = json.to_vec();
        expecting.push(("expect", "100-continue"));
        assert!(!qualifies(&head(&expecting), &ctx, MAX_REQUEST));
        assert!(
            !qualifies(&head(&json), &ctx, 39),
            "over proxy.retry_buffer_bytes"
        );
        assert!(
            !qualifies(&head(&json), &ctx, 0),
            "checked POSTs turned off"
        );
    }

    #[test]
    fn plain_gets_qualify_but_not_streams_upgrades_or_sessions() {
        let mut get = RequestHeader::build("GET", b"/health", None).expect("head");
        let mut ctx = request_state();
        assert!(qualifies(&get, &ctx, 0));
        ctx.long_lived = Some(crate::conns::Transport::Sse);
        assert!(!qualifies(&get, &ctx, 0));
        ctx.long_lived = None;
        ctx.attempts.set_kind(EndpointKind::Ws);
        assert!(!qualifies(&get, &ctx, 0));
        ctx.attempts.set_kind(EndpointKind::Http);
        get.insert_header("upgrade", "websocket").expect("header");
        assert!(!qualifies(&get, &ctx, 0));
    }
}
