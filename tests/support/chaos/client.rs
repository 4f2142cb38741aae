//! The clients the chaos load drives: HTTP/1.1 on a kept-alive connection, WebSocket,
//! HTTP+SSE and raw TCP newline-delimited JSON-RPC. Every call is bounded in time; none
//! retries on its own, so what the proxy does not hide, the figures show.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for one HTTP request, answer included. Longer than both proxies' upstream
/// read timeout (1 s) plus their retries, so a request the proxy rescues is not cut short.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a connect (TCP, and the WebSocket or SSE handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to one message on a long-lived connection.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest SSE buffer kept while looking for the end of an event.
const MAX_SSE_BUFFER: usize = 1 << 20;

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A header as a string ("" when missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON (Null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body, shortened for an error message.
    pub fn short_body(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(120).collect()
    }
}

/// One HTTP/1.1 connection kept alive across requests and reopened (before a request is
/// sent) when the proxy closed it.
pub struct KeepAlive {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Sent as `Cookie` on every request (HAProxy's server cookie, for SSE).
    pub cookie: Option<String>,
}

impl KeepAlive {
    /// A client of `addr`; connects on the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            sender: None,
            cookie: None,
        }
    }

    /// Sends one request, bounded by [`REQUEST_TIMEOUT`]. Any error drops the connection.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let result = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send_inner(method, path, headers, body),
        )
        .await
        .unwrap_or_else(|_| Err("timeout".to_string()));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if let Some(sender) = self.sender.as_mut() {
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("sender"));
            }
        }
        self.sender = None;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| "connect: timeout".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    async fn send_inner(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let host = self.addr.to_string();
        let cookie = self.cookie.clone();
        let sender = self.ready().await?;
        let mut req = Request::builder().method(method).uri(path);
        // A test may name its own `Host` (DNS rebinding, virtual hosts).
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body cut: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// One request on a fresh connection, bounded by `limit` (admin APIs, site control).
pub async fn fetch(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
    limit: Duration,
) -> Result<Answer, String> {
    let mut client = KeepAlive::new(addr);
    let headers = [("content-type", "application/json")];
    let body = Bytes::from(body.unwrap_or_default());
    tokio::time::timeout(limit, client.send(method, path, &headers, body))
        .await
        .unwrap_or_else(|_| Err("timeout".to_string()))
}

/// `GET path` on a fresh connection, bounded to 2 s.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    fetch(addr, Method::GET, path, None, Duration::from_secs(2)).await
}

/// A JSON-RPC request.
pub fn rpc(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Checks a JSON-RPC answer: the id must match and `result` must be there.
pub fn check_rpc(answer: &Value, id: u64) -> Result<&Value, String> {
    if answer["jsonrpc"] != "2.0" || answer["id"] != json!(id) {
        return Err(format!("bad JSON-RPC answer to id {id}: {answer}"));
    }
    answer
        .get("result")
        .ok_or_else(|| format!("JSON-RPC error: {answer}"))
}

/// A WebSocket speaking JSON-RPC, one text frame per message.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<TcpStream>,
    /// The site that took the handshake (`x-demo-site`).
    pub site: String,
}

impl Ws {
    /// Opens `ws://addr/mcp/ws`.
    pub async fn connect(addr: SocketAddr) -> Result<Ws, String> {
        let open = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let request = format!("ws://{addr}/mcp/ws")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            let (stream, response) = tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let site = response
                .headers()
                .get("x-demo-site")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            Ok(Ws { stream, site })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .unwrap_or_else(|_| Err("handshake: timeout".to_string()))
    }

    /// Sends `ping` with `id` and waits for its answer. `Err(Lost)` when the connection broke,
    /// `Err(Wrong)` when the answer was wrong.
    pub async fn ping(&mut self, id: u64) -> Result<(), LongLivedError> {
        let message = rpc(id, "ping", json!({})).to_string();
        let exchange = async {
            self.stream
                .send(Message::text(message))
                .await
                .map_err(|e| LongLivedError::Lost(format!("send: {e}")))?;
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let answer: Value = serde_json::from_str(text.as_str()).map_err(|_| {
                            LongLivedError::Wrong(format!("not JSON: {}", text.as_str()))
                        })?;
                        return check_rpc(&answer, id)
                            .map(|_| ())
                            .map_err(LongLivedError::Wrong);
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        return Err(LongLivedError::Lost("closed".to_string()))
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(LongLivedError::Lost(format!("read: {e}"))),
                }
            }
        };
        tokio::time::timeout(MESSAGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(LongLivedError::Lost("no answer in time".to_string())))
    }
}

/// Why a message on a long-lived connection failed.
#[derive(Debug)]
pub enum LongLivedError {
    /// The connection broke (closed, reset, timed out): the client reconnects.
    Lost(String),
    /// The answer was wrong: a failure the client sees.
    Wrong(String),
}

/// An HTTP+SSE session (MCP 2024-11-05): the event stream, and POSTs to its endpoint.
pub struct Sse {
    body: Incoming,
    buffer: String,
    endpoint: String,
    poster: KeepAlive,
    /// The site that opened the stream (`x-demo-site`).
    pub site: String,
    _conn: tokio::task::JoinHandle<()>,
}

impl Sse {
    /// Opens `GET /mcp/sse` and reads the `endpoint` event.
    pub async fn open(addr: SocketAddr) -> Result<Sse, String> {
        let open = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = Request::get("/mcp/sse")
                .header("host", addr.to_string())
                .header("accept", "text/event-stream")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("send: {e}"))?;
            if response.status() != 200 {
                return Err(format!("stream answered HTTP {}", response.status()));
            }
            let site = response
                .headers()
                .get("x-demo-site")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            // HAProxy's server cookie keeps the POSTs on the stream's server.
            let cookie = response
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_string);
            let mut poster = KeepAlive::new(addr);
            poster.cookie = cookie;
            let mut sse = Sse {
                body: response.into_body(),
                buffer: String::new(),
                endpoint: String::new(),
                poster,
                site,
                _conn: conn,
            };
            let (name, data) = sse.next_event().await.map_err(|e| format!("{e:?}"))?;
            if name != "endpoint" {
                return Err(format!("first event is {name:?}, not endpoint"));
            }
            sse.endpoint = data;
            Ok(sse)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .unwrap_or_else(|_| Err("open: timeout".to_string()))
    }

    /// The next event (name, data), skipping comments.
    async fn next_event(&mut self) -> Result<(String, String), LongLivedError> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Ok((name, data));
                }
                continue;
            }
            if self.buffer.len() > MAX_SSE_BUFFER {
                return Err(LongLivedError::Wrong("SSE event too large".to_string()));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer
                            .push_str(&String::from_utf8_lossy(&data).replace("\r\n", "\n"));
                    }
                }
                Some(Err(e)) => return Err(LongLivedError::Lost(format!("stream: {e}"))),
                None => return Err(LongLivedError::Lost("stream ended".to_string())),
            }
        }
    }

    /// POSTs `ping` with `id` to the endpoint and waits for its answer on the stream.
    pub async fn ping(&mut self, id: u64) -> Result<(), LongLivedError> {
        let exchange = async {
            let body = Bytes::from(rpc(id, "ping", json!({})).to_string());
            let endpoint = self.endpoint.clone();
            let headers = [("content-type", "application/json")];
            let answer = self
                .poster
                .send(Method::POST, &endpoint, &headers, body)
                .await
                .map_err(|e| LongLivedError::Lost(format!("post: {e}")))?;
            match answer.status {
                202 => {}
                404 => return Err(LongLivedError::Lost("session gone (404)".to_string())),
                s => {
                    return Err(LongLivedError::Wrong(format!(
                        "post answered HTTP {s}: {}",
                        answer.short_body()
                    )))
                }
            }
            loop {
                let (name, data) = self.next_event().await?;
                if name != "message" {
                    continue;
                }
                let answer: Value = serde_json::from_str(&data)
                    .map_err(|_| LongLivedError::Wrong(format!("not JSON: {data}")))?;
                return check_rpc(&answer, id)
                    .map(|_| ())
                    .map_err(LongLivedError::Wrong);
            }
        };
        tokio::time::timeout(MESSAGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(LongLivedError::Lost("no answer in time".to_string())))
    }
}

/// A raw TCP connection speaking newline-delimited JSON-RPC.
pub struct Tcp {
    conn: BufReader<TcpStream>,
    /// The site that answered the first echo.
    pub site: String,
}

impl Tcp {
    /// Connects and calls `echo` once to learn the site.
    pub async fn connect(addr: SocketAddr) -> Result<Tcp, String> {
        let open = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let mut tcp = Tcp {
                conn: BufReader::new(stream),
                site: String::new(),
            };
            let echo = rpc(
                0,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "hello"}}),
            );
            let answer = tcp.call(&echo).await.map_err(|e| format!("{e:?}"))?;
            let result = check_rpc(&answer, 0)?;
            tcp.site = result["structuredContent"]["site"]
                .as_str()
                .ok_or_else(|| format!("echo over tcp: {answer}"))?
                .to_string();
            Ok(tcp)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .unwrap_or_else(|_| Err("connect: timeout".to_string()))
    }

    async fn call(&mut self, message: &Value) -> Result<Value, LongLivedError> {
        let exchange = async {
            let mut line = message.to_string();
            line.push('\n');
            self.conn
                .get_mut()
                .write_all(line.as_bytes())
                .await
                .map_err(|e| LongLivedError::Lost(format!("write: {e}")))?;
            let mut answer = String::new();
            let n = (&mut self.conn)
                .take(1 << 20)
                .read_line(&mut answer)
                .await
                .map_err(|e| LongLivedError::Lost(format!("read: {e}")))?;
            if n == 0 {
                return Err(LongLivedError::Lost("closed".to_string()));
            }
            serde_json::from_str(&answer)
                .map_err(|_| LongLivedError::Wrong(format!("not JSON: {answer:?}")))
        };
        tokio::time::timeout(MESSAGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(LongLivedError::Lost("no answer in time".to_string())))
    }

    /// Sends `ping` with `id` and checks the answer.
    pub async fn ping(&mut self, id: u64) -> Result<(), LongLivedError> {
        let answer = self.call(&rpc(id, "ping", json!({}))).await?;
        check_rpc(&answer, id)
            .map(|_| ())
            .map_err(LongLivedError::Wrong)
    }
}
