//! The `mcp` probe: a JSON-RPC conversation that fails when the answer is wrong, even when
//! TCP and HTTP look fine. 2025-11-25 servers get `initialize`, `notifications/initialized`,
//! `ping` and a `DELETE` of the session; 2026-07-28 servers get `server/discover`.

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};
use sitesteer_config::McpProtocol;

use super::client::{request_via as request, Answer, Dial};
use crate::observation::Failure;

/// The protocol version a sessions-style probe announces.
pub const SESSIONS_VERSION: &str = "2025-11-25";
/// The stateless protocol version.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// A failed MCP probe: what failed and, for the reason, a detail.
pub type McpFailure = (Failure, Option<String>);

/// Runs one MCP probe. `learned` remembers, for `Auto`, which protocol the site speaks.
pub async fn probe(
    addr: &Dial,
    path: &str,
    host: &str,
    protocol: McpProtocol,
    learned: &mut Option<McpProtocol>,
) -> Result<(), McpFailure> {
    let t = Target { addr, path, host };
    match (protocol, *learned) {
        (McpProtocol::Sessions, _) | (McpProtocol::Auto, Some(McpProtocol::Sessions)) => {
            sessions(t).await
        }
        (McpProtocol::Stateless, _) | (McpProtocol::Auto, Some(McpProtocol::Stateless)) => {
            stateless(t).await.map_err(|(f, d, _)| (f, d))
        }
        (McpProtocol::Auto, _) => match stateless(t).await {
            Ok(()) => {
                *learned = Some(McpProtocol::Stateless);
                Ok(())
            }
            Err((_, _, true)) => {
                let result = sessions(t).await;
                if result.is_ok() {
                    *learned = Some(McpProtocol::Sessions);
                }
                result
            }
            Err((f, d, false)) => Err((f, d)),
        },
    }
}

fn post_headers(version: &str, session: Option<&str>, method: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("content-type", "application/json".to_string()),
        ("accept", "application/json, text/event-stream".to_string()),
        ("mcp-protocol-version", version.to_string()),
        ("mcp-method", method.to_string()),
    ];
    if let Some(s) = session {
        h.push(("mcp-session-id", s.to_string()));
    }
    h
}

/// The JSON-RPC message of an answer, which may be plain JSON or the first SSE `data:` event.
pub fn jsonrpc_message(answer: &Answer) -> Option<Value> {
    let is_sse = answer
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return serde_json::from_slice(&answer.body).ok();
    }
    let text = std::str::from_utf8(&answer.body).ok()?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            break;
        }
    }
    serde_json::from_str(&data).ok()
}

fn result_of(answer: &Answer, id: u64) -> Result<Value, McpFailure> {
    if !answer.status.is_success() {
        return Err((
            Failure::Status(answer.status.as_u16()),
            Some(format!("HTTP {}", answer.status.as_u16())),
        ));
    }
    let msg = jsonrpc_message(answer).ok_or((
        Failure::BadAnswer,
        Some("the answer is not JSON-RPC".into()),
    ))?;
    if msg.get("jsonrpc") != Some(&json!("2.0")) || msg.get("id") != Some(&json!(id)) {
        return Err((
            Failure::BadAnswer,
            Some("wrong JSON-RPC envelope or id".into()),
        ));
    }
    if let Some(err) = msg.get("error") {
        return Err((Failure::BadAnswer, Some(format!("JSON-RPC error {err}"))));
    }
    msg.get("result")
        .cloned()
        .ok_or((Failure::BadAnswer, Some("no result".into())))
}

/// Where an MCP probe talks to.
#[derive(Clone, Copy)]
struct Target<'a> {
    addr: &'a Dial,
    path: &'a str,
    host: &'a str,
}

async fn call(
    t: Target<'_>,
    version: &str,
    session: Option<&str>,
    id: u64,
    method: &str,
    params: Value,
) -> Result<(Answer, Value), McpFailure> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let answer = request(
        t.addr,
        Method::POST,
        t.path,
        t.host,
        &post_headers(version, session, method),
        Some(Bytes::from(body.to_string())),
    )
    .await
    .map_err(|f| (f, None))?;
    let result = result_of(&answer, id)?;
    Ok((answer, result))
}

/// 2026-07-28: `server/discover` must return an object. The bool says whether the site
/// seems to speak the older protocol instead (so `Auto` should fall back).
async fn stateless(t: Target<'_>) -> Result<(), (Failure, Option<String>, bool)> {
    match call(t, STATELESS_VERSION, None, 1, "server/discover", json!({})).await {
        Ok((_, result)) if result.is_object() => Ok(()),
        Ok(_) => Err((
            Failure::BadAnswer,
            Some("server/discover result is not an object".into()),
            false,
        )),
        Err((Failure::Connect, d)) => Err((Failure::Connect, d, false)),
        Err((Failure::Timeout, d)) => Err((Failure::Timeout, d, false)),
        Err((Failure::Status(500..=599), d)) => Err((Failure::Status(500), d, false)),
        Err((f, d)) => Err((f, d, true)),
    }
}

/// 2025-11-25: initialize, initialized, ping (must answer `{}`), DELETE.
async fn sessions(t: Target<'_>) -> Result<(), McpFailure> {
    let Target { addr, path, host } = t;
    let params = json!({
        "protocolVersion": SESSIONS_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "sitesteer-probe", "version": env!("CARGO_PKG_VERSION")}
    });
    let (answer, result) = call(t, SESSIONS_VERSION, None, 1, "initialize", params).await?;
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or((
            Failure::BadAnswer,
            Some("initialize result has no protocolVersion".into()),
        ))?
        .to_string();
    let session = answer
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let notify = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let ack = request(
        addr,
        Method::POST,
        path,
        host,
        &post_headers(&version, session.as_deref(), "notifications/initialized"),
        Some(Bytes::from(notify.to_string())),
    )
    .await
    .map_err(|f| (f, None))?;
    if !ack.status.is_success() {
        return Err((
            Failure::Status(ack.status.as_u16()),
            Some("notifications/initialized refused".into()),
        ));
    }
    let (_, pong) = call(t, &version, session.as_deref(), 2, "ping", json!({})).await?;
    if pong != json!({}) {
        return Err((
            Failure::BadAnswer,
            Some(format!("ping answered {pong} instead of {{}}")),
        ));
    }
    if let Some(s) = session {
        let mut h = post_headers(&version, Some(&s), "");
        h.retain(|(n, _)| *n == "mcp-session-id" || *n == "mcp-protocol-version");
        // A server may refuse DELETE (405); the probe has already proven the session works.
        let _ = request(addr, Method::DELETE, path, host, &h, None).await;
    }
    Ok(())
}
