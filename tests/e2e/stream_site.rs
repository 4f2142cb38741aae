//! A small scripted site for the stream tests, in the test process on 127.0.0.1: an HTTP
//! listener that answers `/health`, opens HTTP+SSE streams whose `endpoint` event it writes
//! in the pieces the test names (one chunk and a pause per piece), and accepts message
//! POSTs; and a raw TCP listener that counts its accepts and echoes lines. Plus a client
//! that reads such a stream through the proxy (chunked or not) as it arrives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest any backend connection lives.
const LIFETIME: Duration = Duration::from_secs(30);
/// Pause between two pieces of a scripted event.
const PIECE_PAUSE: Duration = Duration::from_millis(40);

/// One scripted site; its tasks end when it drops.
pub(crate) struct StreamSite {
    /// The HTTP listener (health, SSE, messages).
    pub http: SocketAddr,
    /// The raw TCP listener (line echo).
    pub tcp: SocketAddr,
    accepts: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for StreamSite {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl StreamSite {
    /// Starts the site `name`.
    pub(crate) async fn start(name: &'static str) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let accepts = Arc::new(AtomicUsize::new(0));
        let addrs = (
            http.local_addr().expect("addr"),
            tcp.local_addr().expect("addr"),
        );
        let http_task = tokio::spawn(async move {
            while let Ok((conn, _)) = http.accept().await {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LIFETIME, serve_http(name, conn)).await;
                });
            }
        });
        let counted = accepts.clone();
        let tcp_task = tokio::spawn(async move {
            while let Ok((conn, _)) = tcp.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(LIFETIME, echo_lines(name, conn)).await;
                });
            }
        });
        Self {
            http: addrs.0,
            tcp: addrs.1,
            accepts,
            tasks: vec![http_task, tcp_task],
        }
    }

    /// Connections its TCP listener accepted so far.
    pub(crate) fn tcp_accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// Echoes each line as `NAME: line`.
async fn echo_lines(name: &str, conn: TcpStream) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write
            .write_all(format!("{name}: {line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The query parameter `key` of `target`.
fn param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

/// The endpoint event a stream opened with `sid` and line ending `nl` writes.
pub(crate) fn endpoint_event(sid: &str, nl: &str) -> String {
    format!("event: endpoint{nl}data: /messages/?session_id={sid}{nl}{nl}")
}

async fn serve_http(name: &str, mut conn: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 65536 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/health") => {
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
        ("GET", "/sse") => serve_sse(name, conn, target).await,
        ("POST", p) if p.starts_with("/messages") => {
            let answer = format!("HTTP/1.1 202 Accepted\r\ncontent-length: 8\r\nx-backend: {name}\r\nconnection: close\r\n\r\nAccepted");
            let _ = conn.write_all(answer.as_bytes()).await;
        }
        _ => {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    }
}

/// `GET /sse?sid=S&nl=lf|crlf|cr&cuts=3,17&keepalive=MS`: the endpoint event for session
/// `S`, written in pieces cut at those offsets (one chunk each, a pause between), then a
/// `: ping` comment every `keepalive` ms, or silence, until the proxy closes.
async fn serve_sse(name: &str, mut conn: TcpStream, target: &str) {
    let sid = param(target, "sid").unwrap_or("s").to_string();
    let nl = match param(target, "nl") {
        Some("crlf") => "\r\n",
        Some("cr") => "\r",
        _ => "\n",
    };
    let event = endpoint_event(&sid, nl).into_bytes();
    let mut cuts: Vec<usize> = param(target, "cuts")
        .unwrap_or("")
        .split(',')
        .filter_map(|c| c.parse().ok())
        .filter(|&c| c > 0 && c < event.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(event.len());
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nx-backend: {name}\r\n\r\n");
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut last = 0;
    for cut in cuts {
        if write_chunk(&mut conn, &event[last..cut]).await.is_err() {
            return;
        }
        last = cut;
        tokio::time::sleep(PIECE_PAUSE).await;
    }
    let keepalive = param(target, "keepalive").and_then(|k| k.parse::<u64>().ok());
    match keepalive {
        Some(ms) => loop {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if write_chunk(&mut conn, b": ping\n\n").await.is_err() {
                return;
            }
        },
        None => {
            // Silent until the proxy closes.
            let mut sink = [0u8; 1024];
            while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    }
}

async fn write_chunk(conn: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    conn.write_all(&out).await?;
    conn.flush().await
}

/// An SSE stream read through the proxy over a raw socket.
pub(crate) struct SseClient {
    conn: TcpStream,
    raw: Vec<u8>,
    head: Option<String>,
    /// The decoded body so far.
    pub body: Vec<u8>,
    /// The body ended (terminal chunk) or the connection closed.
    pub ended: bool,
}

impl SseClient {
    /// `GET target` on `proxy`; waits for the response head (at most 5 s).
    pub(crate) async fn open(proxy: SocketAddr, target: &str) -> Self {
        let mut conn = TcpStream::connect(proxy)
            .await
            .expect("connect to the proxy");
        let req = format!(
            "GET {target} HTTP/1.1\r\nhost: sitesteer\r\naccept: text/event-stream\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.expect("send");
        let mut client = Self {
            conn,
            raw: Vec::new(),
            head: None,
            body: Vec::new(),
            ended: false,
        };
        let headed = client
            .read_until(Duration::from_secs(5), |c| c.head.is_some())
            .await;
        assert!(headed, "no response head for {target}: {:?}", client.raw);
        client
    }

    /// A response header ("" when missing).
    pub(crate) fn header(&self, name: &str) -> String {
        let head = self.head.as_deref().unwrap_or("");
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }

    fn decode(&mut self) {
        if self.head.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            self.head = Some(String::from_utf8_lossy(&self.raw[..end]).into_owned());
            self.raw.drain(..end + 4);
        }
        if !self.header("transfer-encoding").contains("chunked") {
            self.body.append(&mut self.raw);
            return;
        }
        while let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..line])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
            let Some(size) = size else {
                self.ended = true;
                return;
            };
            if self.raw.len() < line + 2 + size + 2 {
                return;
            }
            if size == 0 {
                self.ended = true;
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line + 2..line + 2 + size]);
            self.raw.drain(..line + 2 + size + 2);
        }
    }

    /// Reads until `done` holds, the stream ends or `limit` passes; whether `done` held.
    pub(crate) async fn read_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = [0u8; 8192];
        loop {
            self.decode();
            if done(self) {
                return true;
            }
            if self.ended {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.ended = true;
                }
                Ok(Ok(n)) => self.raw.extend_from_slice(&buf[..n]),
                Err(_) => return false,
            }
        }
    }

    /// Reads the endpoint event; its data URL (at most 5 s).
    pub(crate) async fn endpoint_url(&mut self) -> Option<String> {
        self.read_until(Duration::from_secs(5), |c| endpoint_data(&c.body).is_some())
            .await;
        endpoint_data(&self.body)
    }

    /// How long until the stream ends, if it does within `limit`.
    pub(crate) async fn ends_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        self.read_until(limit, |c| c.ended)
            .await
            .then(|| start.elapsed())
    }
}

/// The data of the first complete `endpoint` event in `body`.
pub(crate) fn endpoint_data(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let (events, _) = text.rsplit_once("\n\n")?;
    events.split("\n\n").find_map(|event| {
        let mut lines = event.lines();
        let is_endpoint = lines.clone().any(|l| l.trim_end() == "event: endpoint");
        let data = lines.find_map(|l| l.strip_prefix("data: "))?;
        is_endpoint.then(|| data.to_string())
    })
}
