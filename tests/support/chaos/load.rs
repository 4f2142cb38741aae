//! The steady mixed load of a chaos run, and its record.
//!
//! Request workers send a request every `pause` (open loop) on one of a few kept-alive
//! HTTP/1.1 connections, cycling through `GET /`, MCP `ping`, `tools/list` and `tools/call
//! echo` (all safe to retry: the demo site marks `echo` idempotent and read-only). Long-lived clients hold a WebSocket, an HTTP+SSE session or a
//! raw TCP connection each and send a JSON-RPC `ping` on it every `ll_pause`; when their
//! connection breaks they reconnect. Every request and message is recorded with when it was
//! sent, how long it took, which site answered and how it ended.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use super::client::{check_rpc, rpc, KeepAlive, LongLivedError, Sse, Tcp, Ws};

/// Most records kept (about 30 minutes at 1500 per second); later ones are only counted.
const MAX_RECORDS: usize = 3_000_000;
/// Pause after a failed (re)connect before the next attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// What was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `GET /`.
    Get,
    /// MCP `ping` over Streamable HTTP.
    Ping,
    /// MCP `tools/list`.
    ToolsList,
    /// MCP `tools/call` of `echo`.
    Echo,
    /// A `ping` on a WebSocket.
    Ws,
    /// A `ping` on an HTTP+SSE session.
    Sse,
    /// A `ping` on a raw TCP connection.
    Tcp,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 7] = [
        Kind::Get,
        Kind::Ping,
        Kind::ToolsList,
        Kind::Echo,
        Kind::Ws,
        Kind::Sse,
        Kind::Tcp,
    ];
    /// The kinds the request workers cycle through.
    const REQUESTS: [Kind; 4] = [Kind::Get, Kind::Ping, Kind::ToolsList, Kind::Echo];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "http-get",
            Kind::Ping => "mcp-ping",
            Kind::ToolsList => "mcp-tools/list",
            Kind::Echo => "mcp-tools/call",
            Kind::Ws => "ws",
            Kind::Sse => "sse",
            Kind::Tcp => "tcp",
        }
    }

    /// Whether it rides on a long-lived connection.
    pub fn long_lived(self) -> bool {
        matches!(self, Kind::Ws | Kind::Sse | Kind::Tcp)
    }
}

/// How a request or message ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered correctly.
    Ok,
    /// The client saw a failure: an error status, a wrong or cut answer, a transport error
    /// on a request, or a failed (re)connect of a long-lived client.
    Failed(String),
    /// A long-lived connection broke under the message; the client reconnects.
    Lost(String),
}

/// One request or message.
#[derive(Clone, Debug)]
pub struct Record {
    /// What.
    pub kind: Kind,
    /// When it was sent, since the load started.
    pub sent: Duration,
    /// How long it took.
    pub took: Duration,
    /// The site that answered, or held the long-lived connection (index into the load's
    /// site names).
    pub site: Option<u8>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What the load sends, and to where.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The proxy's HTTP listener.
    pub http: SocketAddr,
    /// The proxy's raw TCP listener.
    pub tcp: SocketAddr,
    /// Request workers.
    pub workers: usize,
    /// Pause between two requests of one worker.
    pub pause: Duration,
    /// Kept-alive connections per worker (a request that finds them all busy is skipped).
    pub conns_per_worker: usize,
    /// WebSocket clients.
    pub ws: usize,
    /// HTTP+SSE clients.
    pub sse: usize,
    /// Raw TCP clients.
    pub tcp_clients: usize,
    /// Pause between two pings of one long-lived client.
    pub ll_pause: Duration,
    /// A long-lived connection is closed (cleanly, not counted) and reopened after this long.
    pub ll_lifetime: Duration,
    /// The site names, as answers carry them.
    pub sites: Vec<String>,
}

struct Shared {
    started: Instant,
    stop: AtomicBool,
    records: Mutex<Vec<Record>>,
    dropped: AtomicU64,
    skipped: AtomicU64,
    open: [AtomicI64; 3],
    sites: Vec<String>,
}

impl Shared {
    fn push(&self, record: Record) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() < MAX_RECORDS {
            records.push(record);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn site(&self, name: &str) -> Option<u8> {
        self.sites
            .iter()
            .position(|s| s == name)
            .and_then(|i| u8::try_from(i).ok())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn open_slot(&self, kind: Kind) -> &AtomicI64 {
        match kind {
            Kind::Ws => &self.open[0],
            Kind::Sse => &self.open[1],
            _ => &self.open[2],
        }
    }
}

/// Running load.
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts every worker and client of `spec`.
    pub fn start(spec: &LoadSpec) -> Load {
        let shared = Arc::new(Shared {
            started: Instant::now(),
            stop: AtomicBool::new(false),
            records: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            open: [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)],
            sites: spec.sites.clone(),
        });
        let mut tasks = Vec::new();
        for w in 0..spec.workers {
            tasks.push(tokio::spawn(request_worker(
                shared.clone(),
                spec.http,
                (spec.pause, spec.conns_per_worker),
                w,
            )));
        }
        let long_lived = [
            (Kind::Ws, spec.ws, spec.http),
            (Kind::Sse, spec.sse, spec.http),
            (Kind::Tcp, spec.tcp_clients, spec.tcp),
        ];
        for (kind, n, addr) in long_lived {
            for c in 0..n {
                tasks.push(tokio::spawn(long_lived_client(
                    shared.clone(),
                    kind,
                    addr,
                    (spec.ll_pause, spec.ll_lifetime),
                    c,
                )));
            }
        }
        Load { shared, tasks }
    }

    /// Time since the load started.
    pub fn now(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// The instant the load started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Long-lived connections the clients hold open right now.
    pub fn open_long_lived(&self) -> i64 {
        self.shared
            .open
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .sum()
    }

    /// A copy of the records so far.
    pub fn snapshot(&self) -> Vec<Record> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records sent in `[from, to)`.
    pub fn between(&self, from: Duration, to: Duration) -> Vec<Record> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.sent >= from && r.sent < to)
            .cloned()
            .collect()
    }

    /// The index of site `name` in records.
    pub fn site_index(&self, name: &str) -> Option<u8> {
        self.shared.site(name)
    }

    /// Successful records sent since `from` that site `site` answered.
    pub fn served_by_since(&self, site: &str, from: Duration) -> usize {
        let Some(i) = self.shared.site(site) else {
            return 0;
        };
        // Records are kept in completion order; none completes later than 20 s after it was
        // sent, so the scan can stop there.
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .take_while(|r| r.sent + Duration::from_secs(20) >= from)
            .filter(|r| r.sent >= from && r.site == Some(i) && r.outcome == Outcome::Ok)
            .count()
    }

    /// Request ticks skipped because every connection of the worker was busy.
    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Records not kept because `MAX_RECORDS` was reached.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stops every worker and client (each closes its connections) and returns the records.
    pub async fn stop(self) -> Vec<Record> {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            // Every call is bounded (10 s at most), so this ends.
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        let mut records = self
            .shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        records.sort_by_key(|r| r.sent);
        records
    }
}

/// One request of `kind`; returns the answering site, or what went wrong (and the site that
/// answered wrongly, when known).
async fn request(
    client: &mut KeepAlive,
    kind: Kind,
    n: u64,
) -> Result<String, (Option<String>, String)> {
    let (answer, echo_text) = send_request(client, kind, n).await.map_err(|e| (None, e))?;
    let site = answer.header("x-demo-site").to_string();
    let named = (!site.is_empty()).then(|| site.clone());
    if answer.status != 200 {
        return Err((
            named,
            format!("HTTP {}: {}", answer.status, answer.short_body()),
        ));
    }
    if site.is_empty() {
        return Err((None, "no x-demo-site header".to_string()));
    }
    let body = answer.json();
    check_answer(kind, n, &site, echo_text.as_deref(), &body)
        .map(|()| site)
        .map_err(|e| (named, e))
}

/// Sends one request of `kind`; returns the answer and, for `echo`, the text sent.
async fn send_request(
    client: &mut KeepAlive,
    kind: Kind,
    n: u64,
) -> Result<(super::client::Answer, Option<String>), String> {
    let mcp_headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let (answer, echo_text) = match kind {
        Kind::Get => (
            client.send(Method::GET, "/", &[], Bytes::new()).await?,
            None,
        ),
        Kind::Ping | Kind::ToolsList | Kind::Echo => {
            let text = format!("chaos-{n}");
            let body = match kind {
                Kind::Ping => rpc(n, "ping", json!({})),
                Kind::ToolsList => rpc(n, "tools/list", json!({})),
                _ => rpc(
                    n,
                    "tools/call",
                    json!({"name": "echo", "arguments": {"text": text}}),
                ),
            };
            let answer = client
                .send(
                    Method::POST,
                    "/mcp",
                    &mcp_headers,
                    Bytes::from(body.to_string()),
                )
                .await?;
            (answer, (kind == Kind::Echo).then_some(text))
        }
        _ => return Err("not a request kind".to_string()),
    };
    Ok((answer, echo_text))
}

/// Checks the body of a 200 answer to a request of `kind`.
fn check_answer(
    kind: Kind,
    n: u64,
    site: &str,
    echo_text: Option<&str>,
    body: &Value,
) -> Result<(), String> {
    match kind {
        Kind::Get => (body["site"] == json!(site))
            .then_some(())
            .ok_or_else(|| format!("GET / answered {body}")),
        Kind::Ping => {
            let result = check_rpc(body, n)?;
            (result == &json!({}))
                .then_some(())
                .ok_or_else(|| format!("ping answered {body}"))
        }
        Kind::ToolsList => {
            let result = check_rpc(body, n)?;
            result["tools"]
                .as_array()
                .filter(|t| t.iter().any(|t| t["name"] == "echo"))
                .map(|_| ())
                .ok_or_else(|| format!("tools/list answered {body}"))
        }
        _ => {
            let result = check_rpc(body, n)?;
            let s = &result["structuredContent"];
            (s["text"] == json!(echo_text) && s["site"] == json!(site))
                .then_some(())
                .ok_or_else(|| format!("echo answered {body}"))
        }
    }
}

/// One request worker: every `pause` it sends the next request on whichever of its
/// `conns` kept-alive connections is free (open loop, so that requests stuck on a hung site
/// do not stop the others); when all are busy the tick is skipped and counted.
async fn request_worker(
    shared: Arc<Shared>,
    http: SocketAddr,
    (pause, conns): (Duration, usize),
    w: usize,
) {
    let pool: Vec<Arc<tokio::sync::Mutex<KeepAlive>>> = (0..conns.max(1))
        .map(|_| Arc::new(tokio::sync::Mutex::new(KeepAlive::new(http))))
        .collect();
    let mut inflight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(pause);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded: the stop flag, and at most 10 million requests per worker.
    for i in 0..10_000_000u64 {
        tick.tick().await;
        while inflight.try_join_next().is_some() {}
        if shared.stopped() {
            break;
        }
        let Some(mut client) = pool.iter().find_map(|c| c.clone().try_lock_owned().ok()) else {
            shared.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let kind = Kind::REQUESTS[(w + i as usize) % Kind::REQUESTS.len()];
        let shared = shared.clone();
        inflight.spawn(async move {
            let sent = shared.started.elapsed();
            let t = Instant::now();
            let n = (w as u64) << 40 | i;
            let result = request(&mut client, kind, n).await;
            let (site, outcome) = match result {
                Ok(site) => (shared.site(&site), Outcome::Ok),
                Err((site, e)) => (site.and_then(|s| shared.site(&s)), Outcome::Failed(e)),
            };
            shared.push(Record {
                kind,
                sent,
                took: t.elapsed(),
                site,
                outcome,
            });
        });
    }
    // Every request is bounded (REQUEST_TIMEOUT), so this ends.
    while inflight.join_next().await.is_some() {}
}

/// A long-lived connection of any transport.
enum Conn {
    Ws(Box<Ws>),
    Sse(Box<Sse>),
    Tcp(Tcp),
}

impl Conn {
    async fn open(kind: Kind, addr: SocketAddr) -> Result<Conn, String> {
        match kind {
            Kind::Ws => Ws::connect(addr).await.map(|w| Conn::Ws(Box::new(w))),
            Kind::Sse => Sse::open(addr).await.map(|s| Conn::Sse(Box::new(s))),
            _ => Tcp::connect(addr).await.map(Conn::Tcp),
        }
    }

    fn site(&self) -> &str {
        match self {
            Conn::Ws(c) => &c.site,
            Conn::Sse(c) => &c.site,
            Conn::Tcp(c) => &c.site,
        }
    }

    async fn ping(&mut self, id: u64) -> Result<(), LongLivedError> {
        match self {
            Conn::Ws(c) => c.ping(id).await,
            Conn::Sse(c) => c.ping(id).await,
            Conn::Tcp(c) => c.ping(id).await,
        }
    }
}

async fn long_lived_client(
    shared: Arc<Shared>,
    kind: Kind,
    addr: SocketAddr,
    (pause, lifetime): (Duration, Duration),
    c: usize,
) {
    let mut id = (c as u64) << 40;
    // Bounded: the stop flag, and at most 100k connections per client.
    for _ in 0..100_000 {
        if shared.stopped() {
            break;
        }
        let sent = shared.started.elapsed();
        let t = Instant::now();
        let mut conn = match Conn::open(kind, addr).await {
            Ok(conn) => conn,
            Err(e) => {
                shared.push(Record {
                    kind,
                    sent,
                    took: t.elapsed(),
                    site: None,
                    outcome: Outcome::Failed(format!("(re)connect: {e}")),
                });
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let site = shared.site(conn.site());
        let open = shared.open_slot(kind);
        open.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        // Bounded: the stop flag, the lifetime, and at most 10 million pings per connection.
        for _ in 0..10_000_000u64 {
            if shared.stopped() || opened.elapsed() >= lifetime {
                break;
            }
            id += 1;
            let sent = shared.started.elapsed();
            let t = Instant::now();
            let result = conn.ping(id).await;
            let (outcome, done) = match result {
                Ok(()) => (Outcome::Ok, false),
                Err(LongLivedError::Lost(e)) => (Outcome::Lost(e), true),
                Err(LongLivedError::Wrong(e)) => (Outcome::Failed(e), true),
            };
            shared.push(Record {
                kind,
                sent,
                took: t.elapsed(),
                site,
                outcome,
            });
            if done {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        drop(conn);
        open.fetch_sub(1, Ordering::Relaxed);
    }
}
