//! Header over body. A 2026-07-28 POST says its method and name twice: in the `Mcp-Method`
//! and `Mcp-Name` headers and in its JSON-RPC body. What is safe to send again is judged
//! from the body alone (see `safe_to_repeat`), and a request whose headers contradict a body
//! sitesteer can hold (a known length up to [`checked::MAX_REQUEST`]) is refused with HTTP
//! 400 and JSON-RPC error `-32020`, as the MCP 2026-07-28 specification defines, before any
//! site sees it: a `tools/call` dressed as `ping` must not be repeated after a 5xx.

use pingora::proxy::Session;
use pingora::Result;

use super::{checked, respond_json, HttpProxy, RequestState};
use crate::mcp;

/// Whether the request carries either standard MCP header.
fn names_itself(session: &Session) -> bool {
    let headers = &session.req_header().headers;
    headers.contains_key("mcp-method") || headers.contains_key("mcp-name")
}

/// The declared length of a body sitesteer reads whole before choosing a site: a known
/// length up to `held` (and [`checked::MAX_REQUEST`]), no chunking, no `100 Continue`.
fn holdable(session: &Session, held: usize) -> bool {
    let headers = &session.req_header().headers;
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    !headers.contains_key("transfer-encoding")
        && !headers.contains_key("expect")
        && length.is_some_and(|n| n > 0 && n <= held.min(checked::MAX_REQUEST))
}

impl HttpProxy {
    /// For a POST naming itself in headers: reads its body (kept in `ctx` and in pingora's
    /// retry buffer, which sends it on) and answers 400 with `-32020` when the headers
    /// contradict it (`Ok(true)`: answered). `held` is `proxy.retry_buffer_bytes`.
    pub(super) async fn refuse_contradicting_headers(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
        held: usize,
    ) -> Result<bool> {
        if session.req_header().method != http::Method::POST
            || !names_itself(session)
            || !holdable(session, held)
        {
            return Ok(false);
        }
        let body = super::read_whole_body(session).await?;
        let header = |name: &str| {
            session
                .req_header()
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
        };
        let why = mcp::header_mismatch(
            header("mcp-method").as_deref(),
            header("mcp-name").as_deref(),
            &body,
        );
        if let Some(why) = why {
            self.metrics
                .refused
                .with_label_values(&["http", "header_mismatch"])
                .inc();
            tracing::debug!(%why, "MCP headers contradict the body: refused");
            session.set_keepalive(None);
            let answer = mcp::header_mismatch_answer(&body, &why);
            return respond_json(session, 400, answer).await;
        }
        ctx.body = Some(body);
        Ok(false)
    }
}
