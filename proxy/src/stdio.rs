//! `sitesteer stdio --url URL`: lets an MCP client that launches a command (stdio transport,
//! newline-delimited JSON-RPC) talk to the front door over Streamable HTTP. It keeps the
//! session id, and when the session's site is lost (the front door answers `404`), it starts
//! a new session by replaying the client's `initialize` and sends the request again, so the
//! client never sees the loss.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// How often a request is tried when the front door cannot be reached.
const ATTEMPTS: u32 = 5;
/// Pause between attempts (doubled each time).
const BACKOFF: Duration = Duration::from_millis(100);
/// Longest stdin line accepted.
const MAX_LINE: usize = 16 << 20;

/// Why the bridge stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StdioError {
    /// The URL is not `http://host:port/path`.
    #[error("the URL {0:?} is not an http:// URL with a host")]
    BadUrl(String),
    /// stdin or stdout failed.
    #[error("stdio failed: {0}")]
    Io(#[from] std::io::Error),
}

struct Target {
    authority: String,
    path: String,
}

#[derive(Default)]
struct SessionState {
    id: Option<String>,
    protocol: Option<String>,
    initialize: Option<Value>,
}

/// One HTTP answer, split into JSON-RPC messages.
struct Reply {
    status: u16,
    session: Option<String>,
    messages: Vec<Value>,
}

/// Runs the bridge until stdin closes.
pub(crate) async fn run(url: &str) -> Result<(), StdioError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| StdioError::BadUrl(url.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(StdioError::BadUrl(url.to_string()));
    }
    let target = Arc::new(Target {
        authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
    });
    let state = Arc::new(Mutex::new(SessionState::default()));
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(256);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = out_rx.recv().await {
            let mut line = msg.to_string();
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE {
            let _ = out_tx
                .send(rpc_error(Value::Null, -32600, "message too large"))
                .await;
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(_) => {
                let _ = out_tx
                    .send(rpc_error(Value::Null, -32700, "parse error"))
                    .await;
                continue;
            }
        };
        if message.get("method") == Some(&json!("initialize")) {
            state.lock().await.initialize = Some(message.clone());
            // initialize must finish before anything else is sent.
            forward(&target, &state, message, &out_tx).await;
        } else {
            let (target, state, out_tx) = (target.clone(), state.clone(), out_tx.clone());
            tasks.spawn(async move { forward(&target, &state, message, &out_tx).await });
        }
    }
    while tasks.join_next().await.is_some() {}
    let session = state.lock().await.id.clone();
    if let Some(id) = session {
        let _ = post(&target, Method::DELETE, None, Some(&id), None).await;
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Sends one client message, recovering a lost session once, and writes the answers.
async fn forward(
    target: &Target,
    state: &Mutex<SessionState>,
    message: Value,
    out: &mpsc::Sender<Value>,
) {
    let id = message.get("id").cloned();
    let is_initialize = message.get("method") == Some(&json!("initialize"));
    let mut recovered = false;
    loop {
        let (session, protocol) = {
            let s = state.lock().await;
            (s.id.clone(), s.protocol.clone())
        };
        let reply = match send_with_retries(
            target,
            &message,
            session.as_deref(),
            protocol.as_deref(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                if let Some(id) = id {
                    let _ = out
                        .send(rpc_error(
                            id,
                            -32000,
                            &format!("the front door is unreachable: {e}"),
                        ))
                        .await;
                }
                return;
            }
        };
        if reply.status == 404 && session.is_some() && !recovered && !is_initialize {
            recovered = true;
            tracing::warn!("session lost with its site; starting a new one");
            if reinitialize(target, state).await {
                continue;
            }
        }
        if is_initialize {
            let mut s = state.lock().await;
            s.id = reply.session.clone();
            s.protocol = reply
                .messages
                .iter()
                .find_map(|m| m.pointer("/result/protocolVersion").and_then(Value::as_str))
                .map(str::to_string);
        }
        if reply.messages.is_empty() && !(200..300).contains(&reply.status) {
            if let Some(id) = id {
                let _ = out
                    .send(rpc_error(
                        id,
                        -32000,
                        &format!("the front door answered HTTP {}", reply.status),
                    ))
                    .await;
            }
        }
        for m in reply.messages {
            let _ = out.send(m).await;
        }
        return;
    }
}

/// Replays the client's `initialize` and `notifications/initialized`; true on success.
async fn reinitialize(target: &Target, state: &Mutex<SessionState>) -> bool {
    let mut s = state.lock().await;
    let Some(init) = s.initialize.clone() else {
        return false;
    };
    let Ok(reply) = send_with_retries(target, &init, None, None).await else {
        return false;
    };
    if !(200..300).contains(&reply.status) {
        return false;
    }
    s.id = reply.session;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let _ = send_with_retries(target, &initialized, s.id.as_deref(), s.protocol.as_deref()).await;
    true
}

async fn send_with_retries(
    target: &Target,
    message: &Value,
    session: Option<&str>,
    protocol: Option<&str>,
) -> Result<Reply, String> {
    let body = Bytes::from(message.to_string());
    let mut pause = BACKOFF;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match post(target, Method::POST, Some(body.clone()), session, protocol).await {
            Ok(r) if r.status != 502 && r.status != 503 => return Ok(r),
            Ok(r) => last = format!("HTTP {}", r.status),
            Err(e) => last = e,
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    Err(last)
}

async fn post(
    target: &Target,
    method: Method,
    body: Option<Bytes>,
    session: Option<&str>,
    protocol: Option<&str>,
) -> Result<Reply, String> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header("host", target.authority.as_str())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    if let Some(p) = protocol {
        req = req.header("mcp-protocol-version", p);
    }
    let req = req
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let messages = if is_sse {
        sse_messages(&body)
    } else {
        json_messages(&body)
    };
    Ok(Reply {
        status,
        session,
        messages,
    })
}

fn json_messages(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items,
        Ok(v @ Value::Object(_)) if v.get("jsonrpc").is_some() => vec![v],
        _ => Vec::new(),
    }
}

fn sse_messages(body: &[u8]) -> Vec<Value> {
    crate::mcp::sse_messages(&String::from_utf8_lossy(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_answers_into_messages() {
        assert_eq!(
            json_messages(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).len(),
            1
        );
        assert_eq!(json_messages(b"{\"error\":\"no\"}").len(), 0);
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n: keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"n\"}\n";
        assert_eq!(sse_messages(sse).len(), 2);
    }
}
