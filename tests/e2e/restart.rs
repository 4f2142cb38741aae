//! Graceful restart and shutdown: a new process takes the listening sockets over from the
//! old one (`run --upgrade`, then `SIGQUIT` to the old one) under steady load without
//! losing a request, and `SIGTERM` lets requests in flight finish before exiting 0.
//!
//! Also home of [`Front`], a sitesteer launcher for configs the harness's `Sitesteer`
//! cannot write (a `tcp` listener, several processes on one config, rewritten configs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{binary, free_port, get, site_tables, wait_until, DemoSite, Proc, Scratch};
use crate::traffic::{failures, Traffic};

/// The addresses and config file of a sitesteer started by hand.
pub(crate) struct Front {
    /// `listen.http`.
    pub http: SocketAddr,
    /// `listen.tcp`, when asked for.
    pub tcp: Option<SocketAddr>,
    /// `listen.admin`.
    pub admin: SocketAddr,
    /// The config file.
    pub config: PathBuf,
    /// Its folder (config, logs, state, upgrade socket).
    pub dir: Scratch,
}

impl Front {
    /// Fresh loopback ports and a scratch folder; `tcp` adds a `listen.tcp`.
    pub(crate) fn new(tag: &str, tcp: bool) -> Self {
        let dir = Scratch::new(tag);
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            tcp: tcp.then(|| SocketAddr::from(([127, 0, 0, 1], free_port()))),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            config: dir.0.join("sitesteer.toml"),
            dir,
        }
    }

    /// Writes (or rewrites) the config: `[listen]` with this front's addresses, then `body`.
    pub(crate) fn write(&self, body: &str) {
        let tcp = self
            .tcp
            .map(|t| format!("tcp = \"{t}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "[listen]\nhttp = \"{}\"\nadmin = \"{}\"\n{tcp}\n{body}",
            self.http, self.admin
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Runs `sitesteer run` on the config (with `--upgrade` when asked), logging to `log`.
    pub(crate) fn spawn(&self, upgrade: bool, log: &str) -> Proc {
        let log = std::fs::File::create(self.dir.0.join(log)).expect("log file");
        let mut cmd = Command::new(binary());
        cmd.args(["run", "-c"]).arg(&self.config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let child = cmd
            .env("RUST_LOG", "info,pingora_proxy=error,pingora_core=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sitesteer");
        Proc { child }
    }

    /// Spawns sitesteer and waits until its admin API answers and the proxy accepts.
    pub(crate) async fn start(&self, log: &str) -> Proc {
        let proc = self.spawn(false, log);
        let ready = wait_until(Duration::from_secs(15), || async {
            get(self.admin, "/healthz")
                .await
                .is_ok_and(|r| r.status == 200)
                && tokio::net::TcpStream::connect(self.http).await.is_ok()
        })
        .await;
        assert!(
            ready.is_some(),
            "sitesteer did not start; log:\n{}",
            self.log(log)
        );
        proc
    }

    /// A log file of this front so far.
    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(name)).unwrap_or_default()
    }
}

/// Waits for `proc` to exit, at most `limit`; its exit code, or `None` if it still runs.
pub(crate) async fn wait_exit(proc: &mut Proc, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Some(status.code().unwrap_or(-1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Sum of `sitesteer_requests_total` in a `/metrics` answer.
fn requests_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sitesteer_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_loses_no_request() {
    let a = DemoSite::start("alpha", free_port()).await;
    let b = DemoSite::start("bravo", free_port()).await;
    let front = Front::new("upgrade", false);
    front.write(&format!(
        "[proxy]\ndrain_timeout = \"5s\"\n\n{}",
        site_tables(&[("alpha", 0, a.addr), ("bravo", 0, b.addr)])
    ));
    let mut old = front.start("old.log").await;

    let traffic = Traffic::start(front.http, 4, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut new = front.spawn(true, "new.log");
    let waiting = wait_until(Duration::from_secs(15), || async {
        front
            .log("new.log")
            .contains("waiting for the running sitesteer's listening sockets")
    })
    .await;
    assert!(
        waiting.is_some(),
        "the new process never asked for the sockets:\n{}",
        front.log("new.log")
    );
    old.signal("-QUIT");
    // pingora's hand-over pause (5 s), then the drain.
    let code = wait_exit(&mut old, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcomes = traffic.stop().await;

    assert_eq!(
        code,
        Some(0),
        "the old process did not exit 0 after SIGQUIT; log:\n{}",
        front.log("old.log")
    );
    let failed = failures(&outcomes);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}\nold log:\n{}\nnew log:\n{}",
        failed.len(),
        outcomes.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        front.log("old.log"),
        front.log("new.log")
    );
    assert!(
        outcomes.len() > 200,
        "too little traffic: {}",
        outcomes.len()
    );
    // The new process serves: proxy and admin (the old one's admin socket is gone).
    assert_eq!(
        new.child.try_wait().ok().flatten(),
        None,
        "new process died"
    );
    let answer = get(front.http, "/health").await.expect("proxy answers");
    assert_eq!(answer.status, 200);
    let metrics = get(front.admin, "/metrics").await.expect("metrics");
    let served = requests_total(&String::from_utf8_lossy(&metrics.body));
    assert!(
        served > 10.0,
        "the new process served only {served} requests"
    );
    new.signal("-TERM");
    assert_eq!(wait_exit(&mut new, Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_requests_in_flight_then_exits_0() {
    let site = DemoSite::start("slowpoke", free_port()).await;
    let front = Front::new("drain", false);
    // A tcp probe: the slow mode delays /health too, and the site must stay up.
    front.write(&format!(
        "[proxy]\ndrain_timeout = \"5s\"\n\n[[probe]]\nkind = \"tcp\"\n\n{}",
        site_tables(&[("slowpoke", 0, site.addr)])
    ));
    let mut proc = front.start("sitesteer.log").await;
    site.set_mode("slow").await; // 300 ms per request

    let http = front.http;
    let requests: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                if i % 2 == 0 {
                    get(http, "/health").await
                } else {
                    crate::harness::mcp(http, "ping", serde_json::json!({}), None).await
                }
            })
        })
        .collect();
    // Every request is on its way to the slow site (300 ms) when SIGTERM arrives.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let signalled = Instant::now();
    proc.signal("-TERM");

    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.expect("task").map(|a| a.status));
    }
    let code = wait_exit(&mut proc, Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert!(
        statuses.iter().all(|s| *s == Ok(200)),
        "requests in flight were lost: {statuses:?}\nlog:\n{}",
        front.log("sitesteer.log")
    );
    assert_eq!(code, Some(0), "log:\n{}", front.log("sitesteer.log"));
    assert!(
        took < Duration::from_secs(4),
        "the drain should end when the last request does, took {took:?}"
    );
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
}
