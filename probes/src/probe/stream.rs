//! Probes of long-lived transports: an SSE stream must open and deliver an event or comment;
//! a WebSocket must complete its handshake and answer one JSON-RPC `ping`.

use hyper::Method;

use super::{client, ProbeFailure, ProbeTarget};
use crate::observation::Failure;

/// The SSE probe: `GET path` with `Accept: text/event-stream`, 200, and a first line.
pub async fn sse(target: &ProbeTarget) -> Result<(), ProbeFailure> {
    let first = client::first_bytes(
        target.addr,
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
pub async fn ws(target: &ProbeTarget) -> Result<(), ProbeFailure> {
    client::ws_ping(target.addr, &target.spec.path, &target.host).await
}
