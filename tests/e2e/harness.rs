//! The e2e harness: real `sitesteer` and demo-site processes on 127.0.0.1, a tiny HTTP
//! client, and bounded waits. Every process is killed when its handle drops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::net::TcpStream;

/// What every suite shares: one answer type, one port picker, scratch folders, bounded waits.
pub(crate) use sitesteer_test_support::chaos::client::Answer;
use sitesteer_test_support::chaos::client::KeepAlive;
pub(crate) use sitesteer_test_support::{free_port, wait_until, Scratch};

/// The `sitesteer` binary under test: the one cargo built for this suite
/// (`CARGO_BIN_EXE_sitesteer`), unless `SITESTEER_BIN` names another. Registers it with the
/// support crate, so that the chaos kit starts the same one.
pub(crate) fn binary() -> PathBuf {
    sitesteer_test_support::use_sitesteer_bin(env!("CARGO_BIN_EXE_sitesteer"))
}

/// A child process killed on drop.
pub(crate) struct Proc {
    /// The child.
    pub child: Child,
}

impl Proc {
    /// Sends a signal (`-9`, `-STOP`, `-CONT`, ...).
    pub(crate) fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// Kills with SIGKILL and reaps.
    pub(crate) fn kill9(&mut self) {
        self.signal("-9");
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One demo site process.
pub(crate) struct DemoSite {
    /// Its address.
    pub addr: SocketAddr,
    /// The process.
    pub proc: Proc,
}

impl DemoSite {
    /// Starts a demo site and waits until it answers `/health`.
    pub(crate) async fn start(name: &str, port: u16) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(binary())
            .args(["demo-site", "--name", name, "--http", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo site");
        let site = Self {
            addr,
            proc: Proc { child },
        };
        wait_until(Duration::from_secs(10), || async {
            get(addr, "/health").await.is_ok_and(|r| r.status == 200)
        })
        .await
        .unwrap_or_else(|| panic!("demo site {name} did not start"));
        site
    }

    /// Sets the site's misbehaviour mode through its control endpoint.
    pub(crate) async fn set_mode(&self, mode: &str) {
        let body = format!("{{\"mode\":\"{mode}\",\"delay_ms\":300}}");
        let r = request(self.addr, Method::POST, "/control", &[], Some(body))
            .await
            .expect("control");
        assert_eq!(r.status, 200);
    }
}

/// A running `sitesteer run` process.
pub(crate) struct Sitesteer {
    /// The proxy's HTTP listener.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The process.
    pub proc: Proc,
    /// Where its config lives.
    pub dir: Scratch,
}

impl Sitesteer {
    /// Writes `[listen]` plus `body` to a config file and runs sitesteer on it, waiting until
    /// the admin API and the proxy answer.
    pub(crate) async fn start(body: &str) -> Self {
        Self::start_logging(body, "info,pingora_proxy=error,pingora_core=error").await
    }

    /// [`Sitesteer::start`] with `RUST_LOG` set to `filter`, for a test that reads a debug
    /// line from [`Sitesteer::log`].
    pub(crate) async fn start_logging(body: &str, filter: &str) -> Self {
        let dir = Scratch::new("proxy");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = format!("[listen]\nhttp = \"{http}\"\nadmin = \"{admin}\"\n\n{body}");
        let config = dir.0.join("sitesteer.toml");
        std::fs::write(&config, text).expect("write config");
        let log = std::fs::File::create(dir.0.join("sitesteer.log")).expect("log file");
        let child = Command::new(binary())
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sitesteer");
        let s = Self {
            http,
            admin,
            proc: Proc { child },
            dir,
        };
        let ready = wait_until(Duration::from_secs(15), || async {
            get(admin, "/healthz").await.is_ok_and(|r| r.status == 200)
                && TcpStream::connect(http).await.is_ok()
        })
        .await;
        if ready.is_none() {
            panic!("sitesteer did not start; log:\n{}", s.log());
        }
        s
    }

    /// The process's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("sitesteer.log")).unwrap_or_default()
    }

    /// `GET /api/v1/sites` as JSON.
    pub(crate) async fn sites(&self) -> Value {
        let r = get(self.admin, "/api/v1/sites").await.expect("sites API");
        serde_json::from_slice(&r.body).expect("sites JSON")
    }

    /// The state of site `name` as the admin API shows it.
    pub(crate) async fn state_of(&self, name: &str) -> String {
        let sites = self.sites().await;
        sites["sites"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .and_then(|s| s["state"].as_str())
            .unwrap_or("missing")
            .to_string()
    }

    /// Waits until every site of `names` is `up`, each within `limit`; panics with the log
    /// otherwise.
    pub(crate) async fn wait_all_up(&self, names: &[&str], limit: Duration) {
        for name in names {
            if self.wait_state(name, "up", limit).await.is_none() {
                panic!("site {name} never came up; log:\n{}", self.log());
            }
        }
    }

    /// The sum of the series of metric `series` (a name, or one series with its labels) on
    /// its admin listener ([`metric_sum`]); 0 when absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        metric_sum(self.admin, series).await
    }

    /// Waits until site `name` is in `state`; returns how long it took.
    pub(crate) async fn wait_state(
        &self,
        name: &str,
        state: &str,
        limit: Duration,
    ) -> Option<Duration> {
        wait_until(limit, || async { self.state_of(name).await == state }).await
    }
}

/// One request over a new connection, bounded to 5 s.
pub(crate) async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Result<Answer, String> {
    let mut client = KeepAlive::new(addr);
    let body = Bytes::from(body.unwrap_or_default());
    tokio::time::timeout(
        Duration::from_secs(5),
        client.send(method, path, headers, body),
    )
    .await
    .map_err(|_| "timeout".to_string())?
}

/// `PUT /api/v1/sites/{site}/weight` on the admin listener `admin`.
pub(crate) async fn put_weight(admin: SocketAddr, site: &str, weight: u32) -> Answer {
    let body = format!("{{\"weight\":{weight}}}");
    request(
        admin,
        Method::PUT,
        &format!("/api/v1/sites/{site}/weight"),
        &[("content-type", "application/json")],
        Some(body),
    )
    .await
    .expect("admin API answers")
}

/// `GET path`.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    request(addr, Method::GET, path, &[], None).await
}

/// The sum of every series of metric `name` (or of the one series `name{labels}`) in the
/// Prometheus text of `admin`.
pub(crate) async fn metric_sum(admin: SocketAddr, name: &str) -> f64 {
    let r = get(admin, "/metrics").await.expect("metrics");
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// An MCP JSON-RPC call over Streamable HTTP.
pub(crate) async fn mcp(
    addr: SocketAddr,
    method: &str,
    params: Value,
    session: Option<&str>,
) -> Result<Answer, String> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    if let Some(s) = session {
        headers.push(("mcp-session-id", s));
    }
    request(addr, Method::POST, "/mcp", &headers, Some(body)).await
}

/// The `[[site]]` tables for `sites` (name, tier, address), http endpoints only.
pub(crate) fn site_tables(sites: &[(&str, u8, SocketAddr)]) -> String {
    sites
        .iter()
        .map(|(name, tier, addr)| format!("[[site]]\nname = \"{name}\"\ntier = {tier}\n[site.endpoints]\nhttp = \"{addr}\"\n\n"))
        .collect()
}

impl DemoSite {
    /// Starts a demo site that also serves newline JSON-RPC on `tcp_port`, and waits until
    /// both listeners answer.
    pub(crate) async fn start_with_tcp(name: &str, port: u16, tcp_port: u16) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = SocketAddr::from(([127, 0, 0, 1], tcp_port));
        let log = std::env::temp_dir().join(format!("sitesteer-e2e-demo-{name}-{port}.log"));
        let child = Command::new(binary())
            .args(["demo-site", "--name", name, "--http", &addr.to_string()])
            .args(["--tcp", &tcp.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("demo site log"))
            .spawn()
            .expect("spawn demo site");
        let site = Self {
            addr,
            proc: Proc { child },
        };
        let up = wait_until(Duration::from_secs(10), || async {
            get(addr, "/health").await.is_ok_and(|r| r.status == 200)
                && TcpStream::connect(tcp).await.is_ok()
        })
        .await;
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if up.is_none() {
            panic!("demo site {name} on {addr} and {tcp} did not start:\n{said}");
        }
        site
    }
}

/// A site of the test's own making: `GET /health` answers 200, `POST /mcp` is answered by
/// `answer` from the JSON body; counts the `/mcp` requests it saw. Stops on drop.
pub(crate) struct FakeSite {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    last: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSite {
    /// Starts a site that answers `POST /mcp` with `answer(body)` (status, JSON).
    pub(crate) async fn start(answer: fn(&Value) -> (u16, Value)) -> Self {
        use axum::routing::{get, post};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let last = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = last.clone();
        let app = axum::Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/mcp",
                post(move |body: axum::body::Bytes| {
                    let (counter, keep) = (counter.clone(), keep.clone());
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        *keep.lock().expect("lock") = body.to_vec();
                        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let (status, body) = answer(&request);
                        (
                            axum::http::StatusCode::from_u16(status).expect("status"),
                            [("content-type", "application/json")],
                            body.to_string(),
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            seen,
            last,
            task,
        }
    }

    /// The body of the last `/mcp` request.
    pub(crate) fn last_body(&self) -> String {
        String::from_utf8_lossy(&self.last.lock().expect("lock")).into_owned()
    }

    /// How many `/mcp` requests it saw.
    pub(crate) fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}
