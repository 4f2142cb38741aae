//! The HTTP+SSE transport of a demo site (MCP 2024-11-05, as spoken by erlmcp
//! and the MCP Python SDK's `sse_client`).
//!
//! This module owns `GET /mcp/sse`, which opens a `text/event-stream` whose
//! first event names the per-stream POST endpoint
//! (`event: endpoint`, `data: /mcp/sse?sessionId=<32 hex>`), `POST
//! /mcp/sse?sessionId=...`, which answers `202 Accepted` and delivers the
//! JSON-RPC response as an `event: message` on that stream, and the bounded
//! table of open streams. A stream's session is forgotten as soon as its
//! client disconnects or the site shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::rpc::{self, PARSE_ERROR};
use crate::sessions::MAX_SSE_SESSIONS;
use crate::state::{lock, SiteState};
use crate::transports::{OpenConnection, Transport};

/// Interval of the `: keep-alive` comment on idle streams.
pub(super) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Responses queued for one stream before POSTs to it are refused with 503.
const STREAM_BACKLOG: usize = 64;

/// Query of `POST /mcp/sse`.
#[derive(Debug, Deserialize)]
pub(super) struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// Lives inside a stream: counts it as open and forgets its session when the
/// stream is dropped (client gone, or site shut down).
struct StreamGuard {
    state: Arc<SiteState>,
    session_id: String,
    _open: OpenConnection,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        lock(&self.state.sse).by_id.remove(&self.session_id);
        tracing::debug!(site = %self.state.name, session = %self.session_id, "sse stream closed");
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `GET /mcp/sse`: opens a stream and announces its POST endpoint.
pub(super) async fn open(State(state): State<Arc<SiteState>>) -> Response {
    let session_id = format!("{:032x}", fastrand::u128(..));
    let (tx, rx) = mpsc::channel::<Value>(STREAM_BACKLOG);
    {
        let mut sessions = lock(&state.sse);
        if sessions.by_id.len() >= MAX_SSE_SESSIONS {
            tracing::warn!(site = %state.name, limit = MAX_SSE_SESSIONS, "too many sse streams");
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "too many sse streams");
        }
        sessions.by_id.insert(session_id.clone(), tx);
    }
    tracing::debug!(site = %state.name, session = %session_id, "sse stream opened");
    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("/mcp/sse?sessionId={session_id}"));
    let guard = StreamGuard {
        _open: OpenConnection::new(Arc::clone(&state.transports), Transport::Sse),
        state,
        session_id,
    };
    let messages = stream::unfold((guard, rx), |(guard, mut rx)| async move {
        let message = tokio::select! {
            message = rx.recv() => message?,
            () = guard.state.shutting_down() => return None,
        };
        let event = Event::default().event("message").data(message.to_string());
        Some((Ok::<_, Infallible>(event), (guard, rx)))
    });
    let events = stream::once(std::future::ready(Ok(endpoint))).chain(messages);
    Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(KEEP_ALIVE_INTERVAL)
                .text("keep-alive"),
        )
        .into_response()
}

/// `POST /mcp/sse?sessionId=...`: one JSON-RPC message; the response (if
/// any) goes to the session's stream.
pub(super) async fn post(
    State(state): State<Arc<SiteState>>,
    Query(query): Query<SessionQuery>,
    body: Bytes,
) -> Response {
    state.transports.count_message(Transport::Sse);
    let Some(session_id) = query.session_id else {
        return error_response(StatusCode::BAD_REQUEST, "missing sessionId");
    };
    let Some(sender) = lock(&state.sse).by_id.get(&session_id).cloned() else {
        tracing::debug!(site = %state.name, session = %session_id, "unknown sse session");
        return error_response(StatusCode::NOT_FOUND, "session not found");
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(rpc::error_body(Value::Null, PARSE_ERROR, "parse error")),
            )
                .into_response();
        }
    };
    // The middleware already applied slow, hang and error to this request.
    let Some(reply) = rpc::respond(&state, state.control().mode, message) else {
        return StatusCode::ACCEPTED.into_response();
    };
    match sender.try_send(reply) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(TrySendError::Full(_)) => {
            tracing::debug!(site = %state.name, session = %session_id, "sse stream backlog full");
            error_response(StatusCode::SERVICE_UNAVAILABLE, "sse stream backlog full")
        }
        Err(TrySendError::Closed(_)) => error_response(StatusCode::NOT_FOUND, "session not found"),
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{send, TestSite, TEST_TIMEOUT};
    use axum::http::StatusCode;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;
    use serde_json::{json, Value};

    /// An open SSE stream read with a raw hyper HTTP/1 client.
    struct Stream {
        body: Incoming,
        buffer: String,
        conn: tokio::task::JoinHandle<()>,
    }

    impl Stream {
        async fn open(site: &TestSite) -> Stream {
            let tcp = tokio::net::TcpStream::connect(site.addr)
                .await
                .expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .expect("handshake");
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = hyper::Request::get("/mcp/sse")
                .header("host", site.addr.to_string())
                .header("accept", "text/event-stream")
                .body(Empty::<Bytes>::new())
                .expect("request");
            let response = sender.send_request(request).await.expect("send");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            Stream {
                body: response.into_body(),
                buffer: String::new(),
                conn,
            }
        }

        /// The next event as (event name, data), skipping comments.
        async fn next_event(&mut self) -> (String, String) {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut name = String::new();
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("event: ") {
                            name = value.to_string();
                        } else if let Some(value) = line.strip_prefix("data: ") {
                            data.push_str(value);
                        }
                    }
                    if !name.is_empty() || !data.is_empty() {
                        return (name, data);
                    }
                    continue;
                }
                let frame = self.body.frame().await.expect("open").expect("frame");
                if let Ok(data) = frame.into_data() {
                    self.buffer
                        .push_str(std::str::from_utf8(&data).expect("utf-8"));
                }
            }
        }
    }

    #[tokio::test]
    async fn sse_endpoint_post_and_message() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("sse-site").await;
            let mut stream = Stream::open(&site).await;
            let (name, endpoint) = stream.next_event().await;
            assert_eq!(name, "endpoint");
            let session = endpoint
                .strip_prefix("/mcp/sse?sessionId=")
                .expect("relative endpoint");
            assert_eq!(session.len(), 32);
            assert!(session.chars().all(|c| c.is_ascii_hexdigit()));
            site.wait_connections(json!({"ws":0,"sse":1,"tcp":0})).await;

            let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
            let accepted = send(site.addr, "POST", &endpoint, &[], ping).await;
            assert_eq!(accepted.status, StatusCode::ACCEPTED);
            assert!(accepted.body.is_empty());
            let (name, data) = stream.next_event().await;
            assert_eq!(name, "message");
            let reply: Value = serde_json::from_str(&data).expect("json");
            assert_eq!(reply, json!({"jsonrpc":"2.0","id":1,"result":{}}));

            // A notification is accepted and produces no event.
            let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
            let accepted = send(site.addr, "POST", &endpoint, &[], note).await;
            assert_eq!(accepted.status, StatusCode::ACCEPTED);
            let bad = send(site.addr, "POST", &endpoint, &[], "{nope").await;
            assert_eq!(bad.status, StatusCode::BAD_REQUEST);
            let list = r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#;
            send(site.addr, "POST", &endpoint, &[], list).await;
            let (_, data) = stream.next_event().await;
            let reply: Value = serde_json::from_str(&data).expect("json");
            assert_eq!(reply["id"], "l");
            assert_eq!(reply["result"]["tools"][0]["name"], "echo");

            let stranger = "/mcp/sse?sessionId=0123456789abcdef0123456789abcdef";
            let unknown = send(site.addr, "POST", stranger, &[], ping).await;
            assert_eq!(unknown.status, StatusCode::NOT_FOUND);
            let missing = send(site.addr, "POST", "/mcp/sse", &[], ping).await;
            assert_eq!(missing.status, StatusCode::BAD_REQUEST);

            // The client goes away: the stream and its session are gone.
            stream.conn.abort();
            drop(stream);
            site.wait_connections(json!({"ws":0,"sse":0,"tcp":0})).await;
            let gone = send(site.addr, "POST", &endpoint, &[], ping).await;
            assert_eq!(gone.status, StatusCode::NOT_FOUND);

            // Shutdown ends open streams, so serve returns.
            let mut open = Stream::open(&site).await;
            open.next_event().await;
            site.stop().await;
            while let Some(Ok(_)) = open.body.frame().await {}
        })
        .await
        .expect("test timed out");
    }
}
