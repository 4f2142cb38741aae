//! The Streamable HTTP transport of a demo site (`/mcp`).
//!
//! This module owns `POST /mcp` (one JSON-RPC message per request, answered
//! as `application/json`), `DELETE /mcp` (ends a session), `GET /mcp` (405: no
//! server-initiated stream) and the bounded table of `Mcp-Session-Id`
//! sessions. The JSON-RPC handling itself lives in [`crate::rpc`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::ALLOW;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::rpc::{self, Answer, Incoming, INVALID_REQUEST, PARSE_ERROR, SUPPORTED_VERSIONS};
use crate::state::{lock, SiteState};
use crate::transports::Transport;

/// MCP session header (Streamable HTTP transport).
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// MCP protocol version header sent by clients after initialization.
const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// Implementation-defined server error used for unknown sessions.
const SESSION_NOT_FOUND: i64 = -32001;

/// A JSON-RPC body with the given HTTP status.
fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn session_not_found(id: Value) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        rpc::error_body(id, SESSION_NOT_FOUND, "session not found"),
    )
}

/// `GET /mcp`: no server-initiated SSE stream is offered.
pub(super) async fn mcp_get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, HeaderValue::from_static("POST, DELETE"))],
    )
        .into_response()
}

/// `DELETE /mcp`: terminates the session named by `Mcp-Session-Id`.
pub(super) async fn mcp_delete(
    State(state): State<Arc<SiteState>>,
    headers: HeaderMap,
) -> Response {
    let Some(value) = headers.get(&SESSION_HEADER) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            rpc::error_body(
                Value::Null,
                INVALID_REQUEST,
                "missing Mcp-Session-Id header",
            ),
        );
    };
    let removed = value
        .to_str()
        .map(|id| lock(&state.sessions).remove(id))
        .unwrap_or(false);
    if removed {
        tracing::debug!(site = %state.name, "mcp session deleted");
        StatusCode::NO_CONTENT.into_response()
    } else {
        session_not_found(Value::Null)
    }
}

/// `POST /mcp`: one JSON-RPC message over Streamable HTTP.
pub(super) async fn mcp_post(
    State(state): State<Arc<SiteState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.transports.count_message(Transport::Http);
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                rpc::error_body(Value::Null, PARSE_ERROR, "parse error"),
            );
        }
    };
    let call = match rpc::validate(message) {
        Ok(Incoming::Call(call)) => call,
        // A JSON-RPC response or error sent by the client: acknowledge it.
        Ok(Incoming::ClientReply) => return StatusCode::ACCEPTED.into_response(),
        Err(error) => return json_response(StatusCode::BAD_REQUEST, error),
    };
    let initializing = call.method() == "initialize";
    if !initializing {
        if let Some(value) = headers.get(&SESSION_HEADER) {
            let known = value
                .to_str()
                .map(|sid| lock(&state.sessions).contains(sid))
                .unwrap_or(false);
            if !known {
                tracing::debug!(site = %state.name, method = call.method(), "unknown mcp session");
                return session_not_found(call.reply_id());
            }
        }
        if let Some(value) = headers.get(&PROTOCOL_HEADER) {
            let supported = value
                .to_str()
                .map(|v| SUPPORTED_VERSIONS.contains(&v))
                .unwrap_or(false);
            if !supported {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    rpc::error_body(
                        call.reply_id(),
                        INVALID_REQUEST,
                        "unsupported MCP-Protocol-Version",
                    ),
                );
            }
        }
    }
    match rpc::answer(&state, call) {
        Answer::Nothing => StatusCode::ACCEPTED.into_response(),
        Answer::Invalid(error) => json_response(StatusCode::BAD_REQUEST, error),
        Answer::Reply(reply) => {
            let created = initializing && reply.get("result").is_some();
            let mut response = json_response(StatusCode::OK, reply);
            if created {
                let session_id = format!("{:032x}", fastrand::u128(..));
                lock(&state.sessions).insert(session_id.clone());
                tracing::debug!(site = %state.name, "mcp session created");
                if let Ok(value) = HeaderValue::from_str(&session_id) {
                    response.headers_mut().insert(SESSION_HEADER, value);
                }
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{INVALID_PARAMS, METHOD_NOT_FOUND};
    use crate::test_support::{send, TestSite, TEST_TIMEOUT};
    use serde_json::json;
    use std::net::SocketAddr;

    use crate::test_support::Reply;

    async fn rpc(addr: SocketAddr, session: Option<&str>, body: Value) -> Reply {
        let headers: Vec<(&str, &str)> =
            session.map(|s| ("mcp-session-id", s)).into_iter().collect();
        send(addr, "POST", "/mcp", &headers, &body.to_string()).await
    }

    async fn initialize(addr: SocketAddr) -> String {
        let reply = rpc(
            addr,
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"test","version":"0"}}}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.json();
        assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(body["result"]["serverInfo"]["name"], "sitesteer-demo-alpha");
        assert_eq!(
            body["result"]["capabilities"]["tools"]["listChanged"],
            false
        );
        let sid = reply
            .headers
            .get("mcp-session-id")
            .expect("session header")
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(sid.len(), 32);
        assert!(sid.chars().all(|c| c.is_ascii_hexdigit()));
        sid
    }

    #[tokio::test]
    async fn mcp_session_lifecycle() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("alpha").await;
            let addr = site.addr;

            let root = send(addr, "GET", "/", &[], "").await;
            assert_eq!(root.status, StatusCode::OK);
            assert_eq!(root.json(), json!({"site":"alpha"}));
            assert_eq!(root.headers["x-demo-site"], "alpha");
            let health = send(addr, "GET", "/ready", &[], "").await;
            assert_eq!(health.json(), json!({"status":"ok","site":"alpha"}));

            let sid = initialize(addr).await;
            let note = rpc(
                addr,
                Some(&sid),
                json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
            assert_eq!(note.status, StatusCode::ACCEPTED);
            assert!(note.body.is_empty());

            let ping = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":2,"method":"ping"})).await;
            assert_eq!(ping.status, StatusCode::OK);
            assert_eq!(ping.headers["x-demo-site"], "alpha");
            assert_eq!(ping.json()["result"], json!({}));
            assert_eq!(ping.json()["id"], 2);

            let list = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":3,"method":"tools/list"})).await;
            let tools = list.json()["result"]["tools"].clone();
            assert_eq!(tools[0]["name"], "echo");
            assert_eq!(tools[0]["annotations"]["idempotentHint"], true);
            assert_eq!(tools[1]["name"], "increment");
            assert_eq!(tools[1]["annotations"]["readOnlyHint"], false);

            let echo = rpc(
                addr,
                Some(&sid),
                json!({"jsonrpc":"2.0","id":"e","method":"tools/call",
                       "params":{"name":"echo","arguments":{"text":"hello"}}}),
            )
            .await;
            let result = echo.json()["result"].clone();
            assert_eq!(result["content"][0]["text"], "hello");
            assert_eq!(result["structuredContent"], json!({"text":"hello","site":"alpha"}));
            assert_eq!(result["isError"], false);

            for expected in 1..=2 {
                let inc = rpc(
                    addr,
                    None,
                    json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"increment"}}),
                )
                .await;
                assert_eq!(inc.json()["result"]["structuredContent"]["value"], expected);
            }

            let unknown_tool = rpc(
                addr,
                Some(&sid),
                json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"nope"}}),
            )
            .await;
            assert_eq!(unknown_tool.json()["error"]["code"], INVALID_PARAMS);
            let unknown_method = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":6,"method":"nope"})).await;
            assert_eq!(unknown_method.json()["error"]["code"], METHOD_NOT_FOUND);
            let bad = send(addr, "POST", "/mcp", &[], "{not json").await;
            assert_eq!(bad.status, StatusCode::BAD_REQUEST);
            assert_eq!(bad.json()["error"]["code"], PARSE_ERROR);
            let get = send(addr, "GET", "/mcp", &[], "").await;
            assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);

            let stranger = "0123456789abcdef0123456789abcdef";
            let unknown = rpc(addr, Some(stranger), json!({"jsonrpc":"2.0","id":7,"method":"ping"})).await;
            assert_eq!(unknown.status, StatusCode::NOT_FOUND);
            assert_eq!(unknown.json()["error"]["code"], SESSION_NOT_FOUND);
            assert_eq!(unknown.headers["x-demo-site"], "alpha");

            let deleted = send(addr, "DELETE", "/mcp", &[("mcp-session-id", &sid)], "").await;
            assert!(deleted.status.is_success());
            let reused = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":8,"method":"ping"})).await;
            assert_eq!(reused.status, StatusCode::NOT_FOUND);
            let again = send(addr, "DELETE", "/mcp", &[("mcp-session-id", &sid)], "").await;
            assert_eq!(again.status, StatusCode::NOT_FOUND);

            site.stop().await;
        })
        .await
        .expect("test timed out");
    }
}
