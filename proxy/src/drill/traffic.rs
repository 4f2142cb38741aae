//! The drill's synthetic MCP traffic: paced requests (`ping`, `tools/list`, `tools/call` of
//! the read-only `echo` tool) through the proxy, each recorded with its send time and the
//! site that served it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most requests in flight at once.
const MAX_IN_FLIGHT: usize = 256;
/// A request that takes longer has failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One request's outcome.
#[derive(Clone, Debug)]
pub(super) struct Sample {
    /// When it was sent, since the drill started.
    pub sent: Duration,
    /// The site that served it (`x-sitesteer-site`), `None` when it failed.
    pub site: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long its answer (or failure) took.
    pub took: Duration,
}

const BODIES: [&str; 3] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"drill"}}}"#,
];

async fn one(proxy: SocketAddr, body: &'static str) -> Result<String, String> {
    let stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::post("/mcp")
        .header("host", proxy.to_string())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let site = resp
        .headers()
        .get("x-sitesteer-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let ok_rpc =
        serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.get("result").is_some());
    match (status.is_success() && ok_rpc, site) {
        (true, Some(site)) => Ok(site),
        _ => Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )),
    }
}

/// Paced load running in the background.
pub(super) struct Load {
    started: Instant,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Load {
    /// Starts `rate` requests per second to `proxy`.
    pub(super) fn start(proxy: SocketAddr, rate: u32) -> Self {
        let started = Instant::now();
        let (stop, mut stopped) = watch::channel(false);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = JoinSet::new();
            let mut n = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                while inflight.len() >= MAX_IN_FLIGHT {
                    let _ = inflight.join_next().await;
                }
                let sent = started.elapsed();
                let body = BODIES[n % BODIES.len()];
                n += 1;
                let sink = sink.clone();
                inflight.spawn(async move {
                    let asked = Instant::now();
                    let result = tokio::time::timeout(REQUEST_TIMEOUT, one(proxy, body))
                        .await
                        .unwrap_or_else(|_| Err("timeout".into()));
                    let sample = match result {
                        Ok(site) => Sample {
                            sent,
                            site: Some(site),
                            error: None,
                            took: asked.elapsed(),
                        },
                        Err(e) => Sample {
                            sent,
                            site: None,
                            error: Some(e),
                            took: asked.elapsed(),
                        },
                    };
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                });
            }
            while inflight.join_next().await.is_some() {}
        });
        Self {
            started,
            stop,
            task,
            samples,
        }
    }

    /// Time since the load started.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops, waits for requests in flight, and returns every sample in send order.
    pub(super) async fn stop(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let mut out = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        out.sort_by_key(|s| s.sent);
        out
    }
}
