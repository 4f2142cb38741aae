//! Probes of long-lived transports: an SSE stream must open and deliver an event or comment;
//! a WebSocket must complete its handshake and answer one JSON-RPC `ping`; a raw TCP
//! (newline-delimited JSON-RPC) endpoint must answer one `ping` line.

use hyper::Method;

use super::{client, ProbeFailure, ProbeTarget};
use crate::observation::Failure;

/// The SSE probe: `GET path` with `Accept: text/event-stream`, 200, and a first line.
pub(super) async fn sse(target: &ProbeTarget) -> Result<(), ProbeFailure> {
    let first = client::first_bytes_via(
        &target.dial,
        Method::GET,
        &target.spec.path,
        &target.host,
        &[("accept", "text/event-stream".to_string())],
    )
    .await
    .map_err(|f| (f, None))?;
    if first.0 != 200 {
        return Err((Failure::Status(first.0), Some(format!("HTTP {}", first.0))));
    }
    if !first.1.starts_with("text/event-stream") {
        return Err((
            Failure::BadAnswer,
            Some(format!("content-type {:?} is not an event stream", first.1)),
        ));
    }
    if first.2.is_empty() {
        return Err((
            Failure::BadAnswer,
            Some("the stream closed before any event".into()),
        ));
    }
    Ok(())
}

/// The WebSocket probe: handshake, one JSON-RPC ping, a matching answer.
pub(super) async fn ws(target: &ProbeTarget) -> Result<(), ProbeFailure> {
    client::ws_ping_via(&target.dial, &target.spec.path, &target.host).await
}

/// Longest answer line read from a TCP endpoint.
const MAX_LINE: u64 = 64 * 1024;

/// The TCP MCP probe: one `ping` line, one matching answer line.
pub(super) async fn tcp_ping(target: &ProbeTarget) -> Result<(), ProbeFailure> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let mut stream = client::open(&target.dial).await.map_err(|f| (f, None))?;
    stream
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
        .await
        .map_err(|_| (Failure::Reset, None))?;
    let mut reader = BufReader::new(stream).take(MAX_LINE);
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .map_err(|_| (Failure::Reset, None))?;
    if n == 0 {
        return Err((Failure::Reset, Some("closed before answering ping".into())));
    }
    let answer: serde_json::Value = serde_json::from_str(line.trim()).map_err(|_| {
        (
            Failure::BadAnswer,
            Some("the ping answer is not JSON".into()),
        )
    })?;
    if answer.get("id") == Some(&serde_json::json!(1)) && answer.get("result").is_some() {
        Ok(())
    } else {
        Err((Failure::BadAnswer, Some(format!("ping answered {answer}"))))
    }
}
