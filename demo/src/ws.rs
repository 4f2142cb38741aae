//! The WebSocket transport of a demo site (`GET /mcp/ws`).
//!
//! This module owns the upgrade handler and the per-socket loop: every text
//! (or binary) frame is one JSON-RPC message, answered with one text frame
//! through [`rpc::handle_in_mode`], so the site's mode applies per message.
//! The mode also applies at upgrade time (the site's middleware runs first).
//! Ping/pong frames are answered by axum.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;

use crate::rpc;
use crate::state::SiteState;
use crate::transports::{OpenConnection, Transport};

/// Largest WebSocket message accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Close code sent when the site shuts down ("going away").
const CLOSE_GOING_AWAY: u16 = 1001;

/// `GET /mcp/ws`: upgrades to a WebSocket speaking JSON-RPC.
pub(super) async fn upgrade(State(state): State<Arc<SiteState>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| serve_socket(state, socket))
}

/// Answers the messages of one socket until it closes or the site shuts down.
async fn serve_socket(state: Arc<SiteState>, mut socket: WebSocket) {
    let _open = OpenConnection::new(Arc::clone(&state.transports), Transport::Ws);
    tracing::debug!(site = %state.name, "websocket opened");
    loop {
        let message = tokio::select! {
            message = socket.recv() => message,
            () = state.shutting_down() => {
                let close = Message::Close(Some(CloseFrame {
                    code: CLOSE_GOING_AWAY,
                    reason: "demo site shutting down".into(),
                }));
                if let Err(error) = socket.send(close).await {
                    tracing::debug!(site = %state.name, %error, "websocket close failed");
                }
                break;
            }
        };
        let bytes = match message {
            Some(Ok(Message::Text(text))) => axum::body::Bytes::from(text),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                tracing::debug!(site = %state.name, %error, "websocket read failed");
                break;
            }
        };
        state.transports.count_message(Transport::Ws);
        if rpc::closes_connection(&state) {
            tracing::debug!(site = %state.name, "cutting a websocket (drop mode)");
            break;
        }
        let Some(reply) = rpc::handle_in_mode(&state, &bytes).await else {
            continue;
        };
        if let Err(error) = socket.send(Message::text(reply.to_string())).await {
            tracing::debug!(site = %state.name, %error, "websocket write failed");
            break;
        }
    }
    tracing::debug!(site = %state.name, "websocket closed");
}

#[cfg(test)]
mod tests {
    use crate::test_support::{send, TestSite, TEST_TIMEOUT};
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn connect(site: &TestSite) -> Client {
        let url = format!("ws://{}/mcp/ws", site.addr);
        let (client, response) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        assert_eq!(response.headers()["x-demo-site"], "ws-site");
        client
    }

    async fn call(client: &mut Client, message: &str) -> Value {
        client
            .send(WsMessage::text(message.to_string()))
            .await
            .expect("send");
        loop {
            match client.next().await.expect("open").expect("frame") {
                WsMessage::Text(text) => return serde_json::from_str(&text).expect("json"),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn ws_round_trips_and_modes() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("ws-site").await;
            let mut client = connect(&site).await;
            site.wait_connections(json!({"ws":1,"sse":0,"tcp":0})).await;

            let pong = call(&mut client, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
            assert_eq!(pong, json!({"jsonrpc":"2.0","id":1,"result":{}}));
            let echo = call(
                &mut client,
                r#"{"jsonrpc":"2.0","id":"e","method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
            )
            .await;
            assert_eq!(echo["result"]["structuredContent"]["site"], "ws-site");
            let bad = call(&mut client, "{nope").await;
            assert_eq!(bad["error"]["code"], -32700);

            // WebSocket-level ping: answered by axum.
            client.send(WsMessage::Ping(vec![7].into())).await.expect("ping");
            match client.next().await.expect("open").expect("frame") {
                WsMessage::Pong(data) => assert_eq!(&data[..], &[7]),
                other => panic!("expected pong, got {other:?}"),
            }

            send(site.addr, "POST", "/control", &[], r#"{"mode":"error"}"#).await;
            let failed = call(&mut client, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#).await;
            assert_eq!(failed["error"]["code"], -32000);
            assert_eq!(failed["id"], 2);

            // Hang: the message is swallowed, the next one after recovery is answered.
            send(site.addr, "POST", "/control", &[], r#"{"mode":"hang"}"#).await;
            client
                .send(WsMessage::text(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#))
                .await
                .expect("send");
            let quiet =
                tokio::time::timeout(std::time::Duration::from_millis(200), client.next()).await;
            assert!(quiet.is_err(), "hang mode must not answer");
            send(site.addr, "POST", "/control", &[], r#"{"mode":"ok"}"#).await;
            let back = call(&mut client, r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#).await;
            assert_eq!(back["id"], 4);

            let control = send(site.addr, "GET", "/control", &[], "").await.json();
            assert_eq!(control["messages"]["ws"], 6);

            client.close(None).await.expect("close");
            site.wait_connections(json!({"ws":0,"sse":0,"tcp":0})).await;

            // An open socket is closed by shutdown.
            let mut second = connect(&site).await;
            site.wait_connections(json!({"ws":1,"sse":0,"tcp":0})).await;
            site.stop().await;
            loop {
                match second.next().await {
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .expect("test timed out");
    }
}
