//! Real clients nobody here wrote, through sitesteer: the official MCP Python SDK over
//! Streamable HTTP and HTTP+SSE, `websockets` over WebSocket, and a raw TCP client, against
//! demo sites and against MCP servers built with the Python SDK; then a site killed with
//! all four kinds of client on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{binary, free_port, get, mcp, wait_until, DemoSite, Sitesteer};
use crate::pyenv::PyProc;

/// The health probe of the demo sites: quick, yet lenient enough that a site on a busy
/// 2-core test machine is not taken down by mistake. The clients' recovery does not wait
/// for it: a refused connect or a reset is retried on another site at once.
const PROBE: &str =
    "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"180ms\"\n\n";
/// How long a Python script may take to start and answer (imports are slow on a busy box).
const PY_START: Duration = Duration::from_secs(20);

/// These tests start many Python processes; they run one at a time so as not to starve each
/// other's timing on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `[[site]]` in `tier` serving every transport of a demo site.
fn demo_site_table(name: &str, tier: u8, http: u16, tcp: u16) -> String {
    format!(
        "[[site]]\nname = \"{name}\"\ntier = {tier}\n[site.endpoints]\nhttp = \"127.0.0.1:{http}\"\n\
         ws = \"127.0.0.1:{http}\"\nsse = \"127.0.0.1:{http}\"\ntcp = \"127.0.0.1:{tcp}\"\n\n"
    )
}

/// sitesteer with its raw TCP listener on `tcp` and `rest` as the rest of its config.
async fn proxy_with_tcp(tcp: SocketAddr, rest: &str) -> Sitesteer {
    // The harness writes `[listen]` right before the body, so a leading key belongs to it.
    Sitesteer::start(&format!("tcp = \"{tcp}\"\n\n{rest}")).await
}

fn echo_call(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text}}})
}

/// One newline-delimited JSON-RPC exchange over raw TCP, bounded to 2 s.
async fn tcp_call(conn: &mut BufReader<TcpStream>, message: &Value) -> Result<Value, String> {
    let exchange = async {
        let mut line = message.to_string();
        line.push('\n');
        conn.get_mut()
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        let n = conn
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".to_string());
        }
        serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// Connects to the proxy's TCP listener and calls echo; returns the connection and the site
/// that answered.
async fn tcp_connect(addr: SocketAddr) -> Result<(BufReader<TcpStream>, String), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut conn = BufReader::new(stream);
    let answer = tcp_call(&mut conn, &echo_call(1, "tcp")).await?;
    let site = answer
        .pointer("/result/structuredContent/site")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("echo over tcp: {answer}"))?
        .to_string();
    Ok((conn, site))
}

/// Pings over `conn` every 20ms until it fails, then reconnects (bounded) and returns when
/// the new connection answers an echo and a ping: the instant and the site.
async fn tcp_hold_then_reconnect(
    addr: SocketAddr,
    mut conn: BufReader<TcpStream>,
) -> Result<(Instant, String), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    while Instant::now() < deadline {
        match tcp_call(&mut conn, &ping).await {
            Ok(answer) if answer["result"] == json!({}) => {}
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut last = String::from("never lost");
    for _ in 0..200 {
        if Instant::now() > deadline {
            break;
        }
        match tcp_connect(addr).await {
            Ok((mut conn, site)) => match tcp_call(&mut conn, &ping).await {
                Ok(answer) if answer["result"] == json!({}) => return Ok((Instant::now(), site)),
                Ok(answer) => last = format!("ping answered {answer}"),
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("tcp did not recover: {last}"))
}

/// The sum of `sitesteer_open_connections` of `site` over every transport.
async fn open_connections(proxy: &Sitesteer, site: &str) -> i64 {
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let label = format!("site=\"{site}\"");
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter(|l| l.starts_with("sitesteer_open_connections{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
        .sum()
}

/// What the proxy logged about sites changing state, for failure messages.
fn state_changes(proxy: &Sitesteer) -> String {
    proxy
        .log()
        .lines()
        .filter(|l| l.contains("state changed") || l.contains("closing") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seconds since the epoch, as the Python scripts print them.
fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Time from `killed` to the wall-clock `at` of a Python event.
fn since(killed: SystemTime, event: &Value) -> Duration {
    let at = event["at"].as_f64().expect("event time");
    Duration::from_secs_f64((at - epoch_secs(killed)).max(0.0))
}

/// One `tools/call echo` of the steady loop.
#[derive(Clone, Debug)]
struct EchoOutcome {
    sent: Instant,
    answered: Instant,
    site: String,
    result: Result<(), String>,
}

/// Steady `tools/call echo` requests (idempotent) through the proxy, no session.
struct EchoLoop {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<EchoOutcome>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl EchoLoop {
    /// Lists the tools once (so sitesteer learns that echo is idempotent), then starts
    /// `workers` loops pausing `pause` between calls.
    async fn start(proxy: SocketAddr, workers: usize, pause: Duration) -> Self {
        let list = mcp(proxy, "tools/list", json!({}), None)
            .await
            .expect("tools/list");
        assert_eq!(list.status, 200, "tools/list: {list:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|w| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                tokio::spawn(async move {
                    // Bounded: the caller's stop, and at most 20k calls per worker.
                    for i in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let sent = Instant::now();
                        let text = format!("{w}-{i}");
                        let args = json!({"name": "echo", "arguments": {"text": text}});
                        let outcome = match mcp(proxy, "tools/call", args, None).await {
                            Ok(a) => {
                                let body = a.json();
                                let site = a.header("x-sitesteer-site").to_string();
                                let ok = a.status == 200
                                    && body.pointer("/result/isError") == Some(&json!(false))
                                    && body.pointer("/result/structuredContent/text")
                                        == Some(&json!(text))
                                    && body.pointer("/result/structuredContent/site")
                                        == Some(&json!(site));
                                EchoOutcome {
                                    sent,
                                    answered: Instant::now(),
                                    result: if ok {
                                        Ok(())
                                    } else {
                                        Err(format!("HTTP {} {body} from {site:?}", a.status))
                                    },
                                    site,
                                }
                            }
                            Err(e) => EchoOutcome {
                                sent,
                                answered: Instant::now(),
                                site: String::new(),
                                result: Err(e),
                            },
                        };
                        outcomes.lock().expect("outcomes").push(outcome);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            outcomes,
            workers,
        }
    }

    async fn stop(self) -> Vec<EchoOutcome> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let out = self.outcomes.lock().expect("outcomes").clone();
        out
    }
}

/// Checks the `done` lines of `sdk_check.py`: one Streamable HTTP and one SSE session, each
/// answered wholly by one real site whose server calls itself `server(site)`.
async fn check_sdk_sessions(sdk: &mut PyProc, server: impl Fn(&str) -> String, tools: Value) {
    for transport in ["http", "sse"] {
        let done = sdk.expect("done", PY_START).await;
        assert_eq!(done["transport"], transport, "{done}");
        let site = done["site"].as_str().unwrap_or_default().to_string();
        assert!(site == "a" || site == "b", "{transport}: {done}");
        assert_eq!(done["server"], server(&site), "{done}");
        assert_eq!(done["protocol"], "2025-11-25", "{done}");
        assert_eq!(done["tools"], tools, "{done}");
        assert_eq!(done["text"], "hello", "{done}");
        assert_eq!(done["is_error"], false, "{done}");
        // Every answer of the session (initialize, list, call; for SSE also the stream and
        // its POSTs) came from that site, as `x-sitesteer-site` says.
        assert_eq!(done["headers"], json!([site]), "{transport}: {done}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_reach_demo_sites_over_every_transport() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let _a = DemoSite::start_with_tcp("a", ports[0], ports[1]).await;
    let _b = DemoSite::start_with_tcp("b", ports[2], ports[3]).await;
    let tcp = loopback(free_port());
    let proxy = proxy_with_tcp(
        tcp,
        &format!(
            "{PROBE}{}{}",
            demo_site_table("a", 0, ports[0], ports[1]),
            demo_site_table("b", 0, ports[2], ports[3])
        ),
    )
    .await;
    proxy.wait_all_up(&["a", "b"], Duration::from_secs(3)).await;
    let base = proxy.http;
    let mut sdk = PyProc::spawn(
        "sdk_check.py",
        &[
            "http",
            &format!("http://{base}/mcp"),
            "sse",
            &format!("http://{base}/mcp/sse"),
        ],
    );
    let mut ws = PyProc::spawn("ws_check.py", &[&format!("ws://{base}/mcp/ws")]);

    // Raw TCP, newline-delimited JSON-RPC, from a plain tokio socket.
    let stream = TcpStream::connect(tcp).await.expect("proxy tcp listener");
    let mut conn = BufReader::new(stream);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let pong = tcp_call(&mut conn, &ping).await.expect("tcp ping");
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
    let echo = tcp_call(&mut conn, &echo_call(2, "over tcp"))
        .await
        .expect("tcp echo");
    assert_eq!(echo["result"]["structuredContent"]["text"], "over tcp");
    let tcp_site = echo["result"]["structuredContent"]["site"].clone();
    assert!(tcp_site == "a" || tcp_site == "b", "tcp echo: {echo}");

    check_sdk_sessions(
        &mut sdk,
        |site| format!("sitesteer-demo-{site}"),
        json!(["echo", "increment"]),
    )
    .await;
    let done = ws.expect("done", PY_START).await;
    let site = done["header"].as_str().unwrap_or_default();
    assert!(site == "a" || site == "b", "ws: {done}");
    assert_eq!(
        done["ping"],
        json!({"jsonrpc": "2.0", "id": 1, "result": {}})
    );
    assert_eq!(done["echo"]["result"]["structuredContent"]["site"], site);
    assert_eq!(done["echo"]["result"]["content"][0]["text"], "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_clients_reach_python_sdk_servers_through_sitesteer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // One FastMCP process per site, serving Streamable HTTP at /mcp and HTTP+SSE at /sse.
    let ports = [free_port(), free_port()];
    let servers: Vec<PyProc> = [("a", ports[0]), ("b", ports[1])]
        .iter()
        .map(|(name, port)| PyProc::spawn("server.py", &[name, &port.to_string()]))
        .collect();
    for (server, port) in servers.iter().zip(ports) {
        let up = wait_until(PY_START, || async {
            TcpStream::connect(loopback(port)).await.is_ok()
        })
        .await;
        assert!(
            up.is_some(),
            "{} did not listen; stderr:\n{}",
            server.label,
            server.stderr()
        );
    }
    // The SDK's own probe-worthy handshake works: initialize, initialized, ping, DELETE
    // (probe kind mcp, 2025-11-25), and its SSE stream opens with an event (probe kind sse).
    // The SDK's DNS-rebinding check allows Host 127.0.0.1:*, which is what the client sends
    // through sitesteer, so no `host` override is needed.
    let site = |name: &str, port: u16| {
        format!(
            "[[site]]\nname = \"{name}\"\n[site.endpoints]\nhttp = \"127.0.0.1:{port}\"\n\
             sse = \"127.0.0.1:{port}\"\n\n"
        )
    };
    let config = format!(
        "[[probe]]\nkind = \"mcp\"\npath = \"/mcp\"\ninterval = \"500ms\"\ntimeout = \"450ms\"\n\
         mcp_protocol = \"2025-11-25\"\n\n\
         [[probe]]\nkind = \"sse\"\npath = \"/sse\"\ninterval = \"500ms\"\ntimeout = \"450ms\"\n\n\
         [[route]]\nprefix = \"/sse\"\nendpoint = \"sse\"\n\n\
         [[route]]\nprefix = \"/messages\"\nendpoint = \"sse\"\n\n\
         [[route]]\nprefix = \"/\"\nendpoint = \"http\"\n\n{}{}",
        site("a", ports[0]),
        site("b", ports[1])
    );
    let proxy = Sitesteer::start(&config).await;
    for name in ["a", "b"] {
        assert!(
            proxy
                .wait_state(name, "up", Duration::from_secs(10))
                .await
                .is_some(),
            "{name} must pass the mcp and sse probes: {}\nlog:\n{}",
            proxy.sites().await,
            proxy.log()
        );
    }
    let base = proxy.http;
    let mut sdk = PyProc::spawn(
        "sdk_check.py",
        &[
            "http",
            &format!("http://{base}/mcp"),
            "sse",
            &format!("http://{base}/sse"),
        ],
    );
    // FastMCP names itself after its site.
    check_sdk_sessions(&mut sdk, str::to_string, json!(["echo"])).await;
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_loses_no_client_on_any_transport() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let ports = [free_port(), free_port(), free_port(), free_port()];
    // a is in tier 0 and b in tier 1, so every client lands on a while a lives, and b is up
    // and idle, ready to take over.
    let mut a = DemoSite::start_with_tcp("a", ports[0], ports[1]).await;
    let _b = DemoSite::start_with_tcp("b", ports[2], ports[3]).await;
    let tcp = loopback(free_port());
    let proxy = proxy_with_tcp(
        tcp,
        &format!(
            "[health]\nrise = 2\nfall = 2\n\n[proxy]\nclose_grace = \"100ms\"\n\n{PROBE}{}{}",
            demo_site_table("a", 0, ports[0], ports[1]),
            demo_site_table("b", 1, ports[2], ports[3])
        ),
    )
    .await;
    for site in ["a", "b"] {
        assert!(
            proxy
                .wait_state(site, "up", Duration::from_secs(3))
                .await
                .is_some(),
            "{site} up: {}",
            proxy.sites().await
        );
    }

    // Idempotent calls run from here to the end; none may fail.
    let echoes = EchoLoop::start(proxy.http, 2, Duration::from_millis(10)).await;

    // A Streamable HTTP session as a plain HTTP client sees it, to replay after the kill.
    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {},
                      "clientInfo": {"name": "e2e", "version": "0"}});
    let init = mcp(proxy.http, "initialize", init, None)
        .await
        .expect("initialize");
    assert_eq!(init.status, 200);
    assert_eq!(init.header("x-sitesteer-site"), "a");
    let old_session = init.header("mcp-session-id").to_string();
    assert!(old_session.starts_with("ss1."), "{old_session:?}");

    let http = proxy.http;
    let mut ws = PyProc::spawn("ws_failover.py", &[&format!("ws://{http}/mcp/ws")]);
    let mut sse = PyProc::spawn("sse_failover.py", &[&format!("http://{http}/mcp/sse")]);
    let bin = binary();
    let mut session = PyProc::spawn(
        "session_failover.py",
        &[
            bin.to_str().expect("utf-8 path"),
            &format!("http://{http}/mcp"),
        ],
    );
    let (conn, tcp_site) = tcp_connect(tcp).await.expect("tcp client");
    assert_eq!(tcp_site, "a");
    for proc in [&mut ws, &mut sse, &mut session] {
        let ready = match proc.try_expect("ready", PY_START).await {
            Ok(ready) => ready,
            Err(e) => panic!("{e}\nsite changes:\n{}", state_changes(&proxy)),
        };
        assert_eq!(ready["site"], "a", "{}: {ready}", proc.label);
    }
    let control = get(a.addr, "/control").await.expect("control").json();
    assert_eq!(
        control["connections"],
        json!({"ws": 1, "sse": 1, "tcp": 1}),
        "a holds the WebSocket, the SSE stream and the TCP connection: {control}"
    );
    assert_eq!(open_connections(&proxy, "a").await, 3);

    let tcp_task = tokio::spawn(tcp_hold_then_reconnect(tcp, conn));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed = Instant::now();
    let killed_wall = SystemTime::now();
    a.proc.kill9();
    let dead = Instant::now(); // kill9 reaps: from here on a answers nothing

    let closed = wait_until(Duration::from_secs(3), || async {
        open_connections(&proxy, "a").await == 0
    })
    .await;
    let gone = mcp(proxy.http, "ping", json!({}), Some(&old_session))
        .await
        .expect("ping with the old session");
    assert_eq!(
        gone.status, 404,
        "a session of a dead site is gone: {gone:?}"
    );
    let ws_back = match ws.try_expect("recovered", Duration::from_secs(5)).await {
        Ok(back) => back,
        Err(e) => panic!("{e}\nsite changes:\n{}", state_changes(&proxy)),
    };
    let sse_back = match sse.try_expect("recovered", Duration::from_secs(5)).await {
        Ok(back) => back,
        Err(e) => panic!("{e}\nsite changes:\n{}", state_changes(&proxy)),
    };
    let session_back = match session
        .try_expect("recovered", Duration::from_secs(5))
        .await
    {
        Ok(back) => back,
        Err(e) => panic!("{e}\nsite changes:\n{}", state_changes(&proxy)),
    };
    let (tcp_at, tcp_site) = tokio::time::timeout(Duration::from_secs(5), tcp_task)
        .await
        .expect("tcp recovers in time")
        .expect("tcp task")
        .expect("tcp recovers");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcomes = echoes.stop().await;

    let times = [
        (
            "websocket",
            since(killed_wall, &ws_back),
            ws_back["site"].clone(),
        ),
        (
            "sse",
            since(killed_wall, &sse_back),
            sse_back["site"].clone(),
        ),
        (
            "mcp session",
            since(killed_wall, &session_back),
            session_back["site"].clone(),
        ),
        ("tcp", tcp_at - killed, json!(tcp_site)),
    ];
    println!(
        "after kill -9 of a: {}; open connections of a at 0 after {closed:?}; {} echo calls",
        times
            .iter()
            .map(|(t, d, site)| format!("{t} back on {site} after {d:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        outcomes.len()
    );
    for proc in [&ws, &sse, &session] {
        let lost: Vec<String> = proc
            .seen
            .iter()
            .filter(|e| e["event"] == "lost" || e["event"] == "retry")
            .map(|e| {
                format!(
                    "{} after {:?}: {}",
                    e["event"],
                    since(killed_wall, e),
                    e["error"]
                )
            })
            .collect();
        println!("{}: {lost:?}", proc.label);
    }
    for (transport, took, site) in &times {
        assert_eq!(site, "b", "{transport} is back on the healthy site");
        assert!(
            *took < Duration::from_secs(1),
            "{transport} took {took:?} to recover; log:\n{}",
            proxy.log()
        );
    }
    let closed = closed.expect("a's connections are closed");
    assert!(closed < Duration::from_secs(1), "closed after {closed:?}");
    assert!(
        session.seen_named("failed").is_empty(),
        "the stdio session client saw no failure: {:?}",
        session.seen
    );
    assert_eq!(ws_back["ping"], json!({}), "{ws_back}");

    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| {
            let sent = o.sent.saturating_duration_since(killed);
            let early = killed.saturating_duration_since(o.sent);
            o.result
                .as_ref()
                .err()
                .map(|e| format!("sent {sent:?} after (or {early:?} before) the kill: {e}"))
        })
        .collect();
    let log = proxy.log();
    assert!(
        failed.is_empty(),
        "{} of {} echo calls failed: {:#?}\nproxy errors:\n{}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)],
        log.lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let served = |site: &str, after: bool| {
        outcomes
            .iter()
            .filter(|o| o.site == site && (o.sent > dead) == after)
            .count()
    };
    assert!(
        served("a", false) > 10,
        "a took the echo calls while it lived"
    );
    // A call in flight at the kill may be retried on b; none answered before it was.
    let early_on_b: Vec<_> = outcomes
        .iter()
        .filter(|o| o.site == "b" && o.answered < killed)
        .map(|o| killed - o.answered)
        .collect();
    assert!(
        early_on_b.is_empty(),
        "tier 1 stays idle while a lives; b answered calls this long before the kill: \
         {early_on_b:?}"
    );
    assert!(served("b", true) >= 3, "b took the echo calls");
    assert_eq!(
        served("a", true),
        0,
        "a dead site answers nothing after the kill"
    );
}
