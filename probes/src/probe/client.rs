//! A minimal HTTP/1.1 client for probes: one fresh connection per probe, so that a probe
//! measures connect and answer together and never rides on a stale pooled connection.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::observation::Failure;

/// Largest probe answer body read.
const MAX_BODY: usize = 256 * 1024;

/// A probe's HTTP answer.
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body (up to 256 KiB).
    pub body: Bytes,
}

/// Connects to `addr`; a refused or unreachable connect is [`Failure::Connect`].
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends one request over a new connection and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&'static str, String)],
    body: Option<Bytes>,
) -> Result<Answer, Failure> {
    let stream = connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Reset)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "sitesteer-probe");
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    let req = req
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|_| Failure::BadAnswer)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|_| Failure::Reset)?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| Failure::Reset)?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

/// Sends one request and returns the status, content type and first body chunk, without
/// waiting for the body to end (for streams).
pub async fn first_bytes(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&'static str, String)],
) -> Result<(u16, String, Bytes), Failure> {
    let stream = connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Reset)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|_| Failure::BadAnswer)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|_| Failure::Reset)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = resp.into_body();
        let first = loop {
            match body.frame().await {
                None => break Bytes::new(),
                Some(Err(_)) => return Err(Failure::Reset),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            break data;
                        }
                    }
                }
            }
        };
        Ok((status, content_type, first))
    }
    .await;
    driver.abort();
    result
}

/// WebSocket handshake at `path`, then one JSON-RPC `ping` that must be answered.
pub async fn ws_ping(
    addr: SocketAddr,
    path: &str,
    host: &str,
) -> Result<(), (Failure, Option<String>)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let stream = connect(addr).await.map_err(|f| (f, None))?;
    let url = format!("ws://{host}{path}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| {
            (
                Failure::BadAnswer,
                Some(format!("websocket handshake failed: {e}")),
            )
        })?;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    ws.send(Message::text(ping))
        .await
        .map_err(|_| (Failure::Reset, None))?;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str()).map_err(|_| {
                    (
                        Failure::BadAnswer,
                        Some("websocket answer is not JSON".into()),
                    )
                })?;
                if v.get("id") != Some(&serde_json::json!(1)) {
                    continue;
                }
                let _ = ws.close(None).await;
                return if v.get("result").is_some() {
                    Ok(())
                } else {
                    Err((Failure::BadAnswer, Some(format!("ping answered {v}"))))
                };
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Err((
        Failure::Reset,
        Some("websocket closed before the ping answer".into()),
    ))
}
