//! The processes of a chaos run: demo sites (HTTP, WebSocket, SSE and raw TCP, optionally
//! inside a network namespace), and the proxy under test, either sitesteer or HAProxy, with
//! what the figures need from them: file descriptors and RSS from `/proc`, site states, open
//! connection gauges and state-change events. Every process is killed when its handle drops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::Value;
use tokio::net::TcpStream;

use super::client::{fetch, get};
use crate::{free_port, sitesteer_bin, wait_until};

/// Milliseconds since the Unix epoch.
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A child process: continued, killed and reaped on drop.
pub struct Child(std::process::Child);

impl Child {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends a signal (`-9`, `-STOP`, `-CONT`, ...).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Open file descriptors of `pid` (`/proc/PID/fd`).
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Where one demo site listens, and in which network namespace (None: the root one).
#[derive(Clone, Debug)]
pub struct SiteSpec {
    /// Its name (`x-demo-site`).
    pub name: String,
    /// HTTP listener: Streamable HTTP, WebSocket, SSE.
    pub http: SocketAddr,
    /// Raw TCP listener.
    pub tcp: SocketAddr,
    /// The network namespace it runs in.
    pub netns: Option<String>,
}

impl SiteSpec {
    /// A site on two free loopback ports.
    pub fn loopback(name: &str) -> Self {
        Self {
            name: name.to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            tcp: SocketAddr::from(([127, 0, 0, 1], free_port())),
            netns: None,
        }
    }
}

/// One demo site process, which can be killed, frozen and restarted on the same ports.
pub struct Site {
    /// Where it listens.
    pub spec: SiteSpec,
    proc: Option<Child>,
    log: PathBuf,
}

impl Site {
    /// Starts the site and waits (at most 10 s) until it answers on both listeners.
    pub async fn start(spec: SiteSpec, dir: &Path) -> Result<Site, String> {
        let log = dir.join(format!("site-{}.log", spec.name));
        let mut site = Site {
            spec,
            proc: None,
            log,
        };
        site.spawn()?;
        if !site.wait_ready(Duration::from_secs(10)).await {
            return Err(format!(
                "demo site {} did not start: {}",
                site.spec.name,
                std::fs::read_to_string(&site.log).unwrap_or_default()
            ));
        }
        Ok(site)
    }

    /// Spawns the process without waiting for it to listen.
    pub fn spawn(&mut self) -> Result<(), String> {
        let bin = sitesteer_bin();
        let mut cmd = match &self.spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("site log: {e}"))?;
        let child = cmd
            .args(["demo-site", "--name", &self.spec.name])
            .args(["--http", &self.spec.http.to_string()])
            .args(["--tcp", &self.spec.tcp.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn demo site {}: {e}", self.spec.name))?;
        self.proc = Some(Child(child));
        Ok(())
    }

    /// Waits until `/health` answers 200 and the TCP listener accepts.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let (http, tcp) = (self.spec.http, self.spec.tcp);
        wait_until(limit, || async move {
            get(http, "/health").await.is_ok_and(|a| a.status == 200)
                && TcpStream::connect(tcp).await.is_ok()
        })
        .await
        .is_some()
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.take() {
            p.signal("-9");
            drop(p);
        }
    }

    /// Sends a signal to the running process.
    pub fn signal(&self, sig: &str) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// Its pid, when running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Child::pid)
    }

    /// Kills (if running) and starts again on the same ports; waits until it serves.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill9();
        self.spawn()?;
        if self.wait_ready(Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(format!("demo site {} did not come back", self.spec.name))
        }
    }

    /// Sets its misbehaviour mode (`ok`, `slow`, `error`, `hang`, `badrpc`, `drop`).
    pub async fn set_mode(&self, mode: &str, delay_ms: u64) -> Result<(), String> {
        let body = format!("{{\"mode\":\"{mode}\",\"delay_ms\":{delay_ms}}}");
        let r = fetch(
            self.spec.http,
            Method::POST,
            "/control",
            Some(body),
            Duration::from_secs(2),
        )
        .await?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("control answered {}", r.status))
        }
    }

    /// Its open WebSocket, SSE and TCP connections (`GET /control`), None when it does not
    /// answer.
    pub async fn open_connections(&self) -> Option<i64> {
        let r = get(self.spec.http, "/control").await.ok()?;
        let c = r.json()["connections"].clone();
        Some(
            ["ws", "sse", "tcp"]
                .iter()
                .map(|k| c[*k].as_i64().unwrap_or(0))
                .sum(),
        )
    }
}

/// Which proxy is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// sitesteer.
    Sitesteer,
    /// HAProxy.
    Haproxy,
}

impl Flavor {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Sitesteer => "sitesteer",
            Flavor::Haproxy => "haproxy",
        }
    }
}

/// The health-check settings both proxies get, so that they are compared at equal checks.
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// Probe interval (HAProxy `inter`).
    pub interval_ms: u64,
    /// Probe timeout (HAProxy `timeout check`).
    pub timeout_ms: u64,
    /// Consecutive successes to come back (`rise`).
    pub rise: u32,
    /// Consecutive failures to go down (`fall`).
    pub fall: u32,
    /// Whether sitesteer also runs an `mcp` probe (HAProxy's check is always the JSON-RPC
    /// ping).
    pub mcp: bool,
}

impl Checks {
    /// HAProxy's fastest practical checks, as the issue asks: `inter 100ms fall 2 rise 2`.
    pub const FAST: Checks = Checks {
        interval_ms: 100,
        timeout_ms: 90,
        rise: 2,
        fall: 2,
        mcp: true,
    };

    /// The least time a site can stay down once down: `rise` passing probes, the first one
    /// interval after the failing one (whose result may have come as late as its timeout),
    /// the others a quarter interval apart (sitesteer probes four times as often while an
    /// outcome is changing; HAProxy without `fastinter` waits longer, so this bounds both).
    pub fn min_down_dwell(&self) -> Duration {
        let fast = (self.interval_ms / 4).max(5);
        let dwell = self.interval_ms + u64::from(self.rise.saturating_sub(1)) * fast;
        Duration::from_millis(dwell.saturating_sub(self.timeout_ms))
    }
}

/// Extra sitesteer config: keys added to `[health]`, and tables appended.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// Lines added to `[health]` (after `rise` and `fall`).
    pub health: String,
    /// Tables appended before the sites.
    pub tables: String,
}

/// The sitesteer config of a chaos run.
pub fn sitesteer_config(
    http: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    sites: &[SiteSpec],
    checks: Checks,
    extra: &Extra,
) -> String {
    let Checks {
        interval_ms,
        timeout_ms,
        rise,
        fall,
        mcp,
    } = checks;
    let mcp_probe = if mcp {
        format!(
            "[[probe]]\nkind = \"mcp\"\ninterval = \"{interval_ms}ms\"\ntimeout = \"{timeout_ms}ms\"\n\
             mcp_protocol = \"2025-11-25\"\n\n"
        )
    } else {
        String::new()
    };
    let mut text = format!(
        "[listen]\nhttp = \"{http}\"\ntcp = \"{tcp}\"\nadmin = \"{admin}\"\n\n\
         [health]\nrise = {rise}\nfall = {fall}\n{}\n\
         [proxy]\nread_timeout = \"1s\"\n\n\
         [[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"{interval_ms}ms\"\n\
         timeout = \"{timeout_ms}ms\"\n\n{mcp_probe}{}\n",
        extra.health, extra.tables
    );
    for s in sites {
        text.push_str(&format!(
            "[[site]]\nname = \"{}\"\n[site.endpoints]\nhttp = \"{}\"\nws = \"{}\"\nsse = \"{}\"\n\
             tcp = \"{}\"\n\n",
            s.name, s.http, s.http, s.http, s.tcp
        ));
    }
    text
}

/// The HAProxy config of a chaos run: the checks (`inter 100ms fall 2 rise 2`),
/// `option redispatch`, `retries 3`, `retry-on all-retryable-errors`, `observe layer4`;
/// an HTTP check that is HAProxy's closest match of sitesteer's `mcp` probe (a JSON-RPC
/// `ping` whose answer must carry `"result":{}`); a server cookie so that SSE POSTs follow
/// their stream; the TCP backend tracking the HTTP one's health.
pub fn haproxy_config(
    http: SocketAddr,
    tcp: SocketAddr,
    stats: SocketAddr,
    sites: &[SiteSpec],
    checks: Checks,
) -> String {
    let Checks {
        interval_ms,
        timeout_ms,
        rise,
        fall,
        ..
    } = checks;
    let mut text = format!(
        "global\n    nbthread 2\n    maxconn 4096\n    log stderr format short local0 notice\n\n\
         defaults\n    mode http\n    log global\n    timeout connect 1s\n    timeout client 30s\n\
         \x20   timeout server 1s\n    timeout tunnel 1h\n    timeout check {timeout_ms}ms\n\
         \x20   option http-keep-alive\n    option redispatch\n    retries 3\n\
         \x20   retry-on all-retryable-errors\n\n\
         frontend fe_http\n    bind {http}\n    default_backend be_http\n\n\
         frontend fe_tcp\n    mode tcp\n    bind {tcp}\n    default_backend be_tcp\n\n\
         frontend fe_stats\n    bind {stats}\n    stats enable\n    stats uri /stats\n\n\
         backend be_http\n    balance roundrobin\n    cookie SRV insert indirect nocache\n\
         \x20   option httpchk\n\
         \x20   http-check send meth POST uri /mcp ver HTTP/1.1 hdr host localhost \
         hdr content-type application/json body \"{{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"id\\\":1,\\\"method\\\":\\\"ping\\\"}}\"\n\
         \x20   http-check expect string \"\\\"result\\\":{{}}\"\n\
         \x20   default-server inter {interval_ms}ms fall {fall} rise {rise} observe layer4\n"
    );
    for s in sites {
        text.push_str(&format!(
            "    server {} {} check cookie {}\n",
            s.name, s.http, s.name
        ));
    }
    text.push_str("\nbackend be_tcp\n    mode tcp\n    balance roundrobin\n");
    for s in sites {
        text.push_str(&format!(
            "    server {} {} track be_http/{}\n",
            s.name, s.tcp, s.name
        ));
    }
    text
}

/// The proxy under test.
pub struct Proxy {
    /// sitesteer or HAProxy.
    pub flavor: Flavor,
    /// HTTP listener (Streamable HTTP, WebSocket, SSE).
    pub http: SocketAddr,
    /// Raw TCP listener.
    pub tcp: SocketAddr,
    /// sitesteer's admin listener, or HAProxy's stats page.
    pub admin: SocketAddr,
    /// The config it runs.
    pub config: String,
    proc: Child,
    log: PathBuf,
}

impl Proxy {
    /// Starts `flavor` in front of `sites` and waits (at most 20 s) until every site is up.
    pub async fn start(
        flavor: Flavor,
        sites: &[SiteSpec],
        checks: Checks,
        extra: &Extra,
        dir: &Path,
    ) -> Result<Proxy, String> {
        let port = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (http, tcp, admin) = (port(), port(), port());
        let log = dir.join(format!("{}.log", flavor.name()));
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let (config, child) = match flavor {
            Flavor::Sitesteer => {
                let config = sitesteer_config(http, tcp, admin, sites, checks, extra);
                let path = dir.join("sitesteer.toml");
                std::fs::write(&path, &config).map_err(|e| e.to_string())?;
                let child = Command::new(sitesteer_bin())
                    .args(["run", "-c"])
                    .arg(&path)
                    .env("RUST_LOG", "info,pingora_proxy=error,pingora_core=error")
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("spawn sitesteer: {e}"))?;
                (config, child)
            }
            Flavor::Haproxy => {
                let config = haproxy_config(http, tcp, admin, sites, checks);
                let path = dir.join("haproxy.cfg");
                std::fs::write(&path, &config).map_err(|e| e.to_string())?;
                let child = Command::new("haproxy")
                    .args(["-db", "-f"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .map_err(|e| format!("spawn haproxy (is it installed?): {e}"))?;
                (config, child)
            }
        };
        let mut proxy = Proxy {
            flavor,
            http,
            tcp,
            admin,
            config,
            proc: Child(child),
            log,
        };
        let names: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();
        let up = wait_until(Duration::from_secs(20), || {
            let names = &names;
            let proxy = &proxy;
            async move {
                let states = proxy.states().await;
                names
                    .iter()
                    .all(|n| states.get(n).map(String::as_str) == Some("up"))
                    && TcpStream::connect(proxy.http).await.is_ok()
                    && TcpStream::connect(proxy.tcp).await.is_ok()
            }
        })
        .await;
        if up.is_none() || !proxy.proc.running() {
            return Err(format!(
                "{} did not bring every site up; states {:?}; log:\n{}",
                flavor.name(),
                proxy.states().await,
                proxy.log_tail(40)
            ));
        }
        Ok(proxy)
    }

    /// The proxy's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every site's state, as `up`, `degraded`, `down` (or the proxy's own word).
    pub async fn states(&self) -> BTreeMap<String, String> {
        states_of(self.flavor, self.admin).await
    }

    /// The state of one site ("missing" when unknown).
    pub async fn state_of(&self, site: &str) -> String {
        self.states()
            .await
            .remove(site)
            .unwrap_or_else(|| "missing".to_string())
    }

    /// sitesteer's `sitesteer_open_connections`, summed over sites and transports (None for
    /// HAProxy, which has no such gauge).
    pub async fn open_connections(&self) -> Option<i64> {
        if self.flavor != Flavor::Sitesteer {
            return None;
        }
        let r = get(self.admin, "/metrics").await.ok()?;
        Some(
            String::from_utf8_lossy(&r.body)
                .lines()
                .filter(|l| l.starts_with("sitesteer_open_connections{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as i64)
                .sum(),
        )
    }

    /// State changes of `site` at or after `since_ms` (epoch ms), oldest first, as
    /// (at_ms, from, to, reason): sitesteer's event log (`GET /api/v1/events`).
    pub async fn state_events(
        &self,
        site: &str,
        since_ms: u64,
    ) -> Vec<(u64, String, String, String)> {
        let Ok(r) = get(self.admin, "/api/v1/events?limit=1000").await else {
            return Vec::new();
        };
        // Newest first from the API; oldest first here (ids break ties of the same ms).
        let mut out: Vec<(u64, u64, String, String, String)> = r.json()["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["kind"] == "state" && e["site"] == site)
                    .filter_map(|e| {
                        Some((
                            e["id"].as_u64()?,
                            e["at_ms"].as_u64()?,
                            e["from"].as_str()?.to_string(),
                            e["to"].as_str()?.to_string(),
                            e["reason"].as_str().unwrap_or("").to_string(),
                        ))
                    })
                    .filter(|e| e.1 >= since_ms)
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|e| e.0);
        out.into_iter()
            .map(|(_, at, from, to, why)| (at, from, to, why))
            .collect()
    }

    /// sitesteer's state changes of every site since `since_ms` (epoch ms), as "site: from
    /// → to (reason)", oldest first.
    pub async fn all_state_changes(&self, since_ms: u64) -> Vec<String> {
        let Ok(r) = get(self.admin, "/api/v1/events?limit=1000").await else {
            return Vec::new();
        };
        let mut out: Vec<(u64, String)> = r.json()["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["kind"] == "state")
                    .filter(|e| e["at_ms"].as_u64().is_some_and(|at| at >= since_ms))
                    .map(|e| {
                        (
                            e["id"].as_u64().unwrap_or(0),
                            format!(
                                "{}: {} → {} ({})",
                                e["site"].as_str().unwrap_or("?"),
                                e["from"].as_str().unwrap_or("?"),
                                e["to"].as_str().unwrap_or("?"),
                                e["reason"].as_str().unwrap_or("")
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|e| e.0);
        out.into_iter().map(|e| e.1).collect()
    }

    /// HAProxy's `chkdown` (UP to DOWN transitions) of server `site` in `be_http`.
    pub async fn haproxy_chkdown(&self, site: &str) -> Option<u64> {
        haproxy_stats(self.admin)
            .await
            .into_iter()
            .find(|r| {
                r.get("pxname").map(String::as_str) == Some("be_http")
                    && r.get("svname").map(String::as_str) == Some(site)
            })
            .and_then(|r| r.get("chkdown")?.parse().ok())
    }

    /// The metrics text (sitesteer only).
    pub async fn metrics(&self) -> String {
        match get(self.admin, "/metrics").await {
            Ok(r) => String::from_utf8_lossy(&r.body).to_string(),
            Err(_) => String::new(),
        }
    }
}

/// Records every change of `site`'s state as the proxy reports it, polling every 20 ms
/// (for HAProxy, which keeps no event log), until stopped; bounded to 10 000 changes.
pub struct StatePoller {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(u64, String)>>,
}

impl StatePoller {
    /// Starts polling `admin` of a proxy of `flavor` for `site`.
    pub fn start(flavor: Flavor, admin: SocketAddr, site: &str) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let site = site.to_string();
        let task = tokio::spawn(async move {
            let mut seen: Vec<(u64, String)> = Vec::new();
            while !*stopped.borrow() && seen.len() < 10_000 {
                let state = states_of(flavor, admin)
                    .await
                    .remove(&site)
                    .unwrap_or_else(|| "missing".to_string());
                if seen.last().map(|s| &s.1) != Some(&state) {
                    seen.push((epoch_ms(), state));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => {}
                }
            }
            seen
        });
        Self { stop, task }
    }

    /// Stops and returns the changes, oldest first, as (at_ms, state).
    pub async fn stop(self) -> Vec<(u64, String)> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The JSON of `GET /api/v1/sites` (sitesteer), for share and score checks.
pub async fn sites_json(admin: SocketAddr) -> Value {
    match get(admin, "/api/v1/sites").await {
        Ok(r) => r.json(),
        Err(_) => Value::Null,
    }
}

/// Every site's state as the proxy at `admin` reports it: `up`, `degraded`, `down` (or the
/// proxy's own word). HAProxy's `UP 1/2` counts as up and `DOWN 1/2` as down.
pub async fn states_of(flavor: Flavor, admin: SocketAddr) -> BTreeMap<String, String> {
    match flavor {
        Flavor::Sitesteer => {
            let Ok(r) = get(admin, "/api/v1/sites").await else {
                return BTreeMap::new();
            };
            r.json()["sites"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            Some((
                                s["name"].as_str()?.to_string(),
                                s["state"].as_str()?.to_string(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        Flavor::Haproxy => haproxy_stats(admin)
            .await
            .into_iter()
            .filter(|row| row.get("pxname").map(String::as_str) == Some("be_http"))
            .filter_map(|row| {
                let name = row.get("svname")?.clone();
                if name == "BACKEND" {
                    return None;
                }
                let status = row.get("status")?;
                let state = if status.starts_with("UP") {
                    "up"
                } else if status.starts_with("DOWN") {
                    "down"
                } else {
                    status.as_str()
                };
                Some((name, state.to_string()))
            })
            .collect(),
    }
}

/// HAProxy's stats CSV (`GET /stats;csv` on `admin`) as rows keyed by column name.
pub async fn haproxy_stats(admin: SocketAddr) -> Vec<BTreeMap<String, String>> {
    let Ok(r) = get(admin, "/stats;csv").await else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&r.body).to_string();
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<String> = header
        .trim_start_matches("# ")
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            columns
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect()
}
