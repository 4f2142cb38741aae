//! Operators in control: every admin endpoint and `ctl` subcommand against a real process,
//! overrides that survive `kill -9`, reloads that refuse broken configs without stopping
//! traffic, drains that let a WebSocket finish, and the token on writes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{binary, free_port, get, request, wait_until, DemoSite, Proc, Sitesteer};
use crate::traffic::{assert_none_failed, Traffic};

const PROBES: &str =
    "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n";

fn sites(list: &[(&str, u8, SocketAddr)]) -> String {
    list.iter()
        .map(|(name, tier, addr)| {
            format!("[[site]]\nname = \"{name}\"\ntier = {tier}\n[site.endpoints]\nhttp = \"{addr}\"\nws = \"{addr}\"\n\n")
        })
        .collect()
}

/// Runs `sitesteer ctl --admin http://ADMIN ARGS...`.
fn ctl(admin: SocketAddr, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("ctl").arg("--admin").arg(format!("http://{admin}"));
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    let out = cmd
        .args(args)
        .env_remove("SITESTEER_TOKEN")
        .output()
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl_json(admin: SocketAddr, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(admin, None, &all);
    assert_eq!(code, 0, "ctl {args:?}: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ctl --json {args:?} printed no JSON ({e}): {out}"))
}

fn site<'a>(sites: &'a Value, name: &str) -> &'a Value {
    sites["sites"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn served(proxy: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = get(proxy, "/").await.expect("proxied");
        out.push(r.header("x-sitesteer-site").to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_ctl_subcommand() {
    let ports = [free_port(), free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let _c = DemoSite::start("c", ports[2]).await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        sites(&[("a", 0, addr(0)), ("b", 0, addr(1)), ("c", 1, addr(2))])
    ))
    .await;
    let admin = proxy.admin;

    // sites / status, as tables and JSON.
    let (code, table, _) = ctl(admin, None, &["sites"]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("SITE") && table.contains("a ") && table.contains("up"),
        "{table}"
    );
    let (code, status, _) = ctl(admin, None, &["status"]);
    assert_eq!(code, 0);
    assert!(status.contains("recent events"), "{status}");
    let json = ctl_json(admin, &["sites"]);
    for key in [
        "name",
        "region",
        "tier",
        "configured_weight",
        "effective_weight",
        "state",
        "score",
        "availability",
        "latency_ewma_ms",
        "latency_p99_ms",
        "error_rate",
        "open_connections",
        "last_change_ms",
        "why",
    ] {
        assert!(
            site(&json, "a").get(key).is_some(),
            "sites API lacks {key}: {json}"
        );
    }

    // A weight of 0 moves all new traffic away as soon as the API answers.
    let (code, out, err) = ctl(admin, None, &["weight", "a", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("weight 0/100"), "{out}");
    assert!(
        served(proxy.http, 40).await.iter().all(|s| s == "b"),
        "weight 0 takes a out at once"
    );
    assert_eq!(ctl(admin, None, &["weight", "a", "100"]).0, 0);

    // drain / undrain.
    assert_eq!(ctl(admin, None, &["drain", "b"]).0, 0);
    assert_eq!(site(&ctl_json(admin, &["sites"]), "b")["state"], "drained");
    assert!(served(proxy.http, 30).await.iter().all(|s| s == "a"));
    assert_eq!(ctl(admin, None, &["undrain", "b"]).0, 0);
    assert_eq!(site(&ctl_json(admin, &["sites"]), "b")["state"], "up");

    // maintenance on/off.
    assert_eq!(ctl(admin, None, &["maint", "a", "on"]).0, 0);
    assert_eq!(
        site(&ctl_json(admin, &["sites"]), "a")["state"],
        "maintenance"
    );
    assert_eq!(ctl(admin, None, &["maint", "a", "off"]).0, 0);

    // Manual failover to the tier-1 site, and back.
    assert_eq!(
        ctl(admin, None, &["failover", "--from", "a", "--to", "c"]).0,
        0
    );
    let after = served(proxy.http, 30).await;
    assert!(
        after.iter().all(|s| s == "c"),
        "the failover target is preferred over tier 0: {after:?} {}",
        ctl(admin, None, &["sites"]).1
    );
    assert_eq!(ctl(admin, None, &["undrain", "a"]).0, 0);
    assert!(
        served(proxy.http, 30)
            .await
            .iter()
            .all(|s| s == "a" || s == "b"),
        "undrain ends the failover"
    );

    // events, newest first, as a table and JSON.
    let (code, events, _) = ctl(admin, None, &["events", "--limit", "50"]);
    assert_eq!(code, 0);
    assert!(
        events.contains("weight set to 0") && events.contains("manual failover from a to c"),
        "{events}"
    );
    let json = ctl_json(admin, &["events"]);
    let list = json["events"].as_array().expect("events");
    assert!(list[0]["id"].as_u64() > list[1]["id"].as_u64());

    // incidents answers (possibly empty), reload without changes works.
    assert_eq!(ctl(admin, None, &["incidents"]).0, 0);
    let (code, out, err) = ctl(admin, None, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("reloaded"), "{out}");

    // Clear errors: unknown site, bad weight, bad JSON, unknown endpoint, unreachable API.
    let (code, _, err) = ctl(admin, None, &["weight", "nosuch", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown site \"nosuch\""), "{err}");
    let (code, _, err) = ctl(admin, None, &["weight", "a", "-3"]);
    assert_eq!(code, 1);
    assert!(err.contains("weight must be between"), "{err}");
    let r = request(
        admin,
        Method::PUT,
        "/api/v1/sites/a/weight",
        &[],
        Some("{\"weight\": ".into()),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("bad JSON"),
        "{:?}",
        r.json()
    );
    let r = request(
        admin,
        Method::PUT,
        "/api/v1/sites/a/weight",
        &[],
        Some("{\"weight\": 1, \"extra\": 2}".into()),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 400);
    let r = request(
        admin,
        Method::POST,
        "/api/v1/failover",
        &[],
        Some("{\"from\": \"a\", \"to\": \"a\"}".into()),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 400);
    assert_eq!(
        get(admin, "/api/v1/nothing").await.expect("answer").status,
        404
    );
    let (code, _, err) = ctl(
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        None,
        &["sites"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach the admin API"), "{err}");

    // The rest of the read side.
    assert_eq!(get(admin, "/healthz").await.expect("healthz").status, 200);
    assert_eq!(get(admin, "/readyz").await.expect("readyz").status, 200);
    assert_eq!(
        get(admin, "/api/v1/sites/b")
            .await
            .expect("one site")
            .json()["name"],
        "b"
    );
    let page = get(admin, "/").await.expect("page");
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<title>sitesteer status</title>"));
    let metrics =
        String::from_utf8_lossy(&get(admin, "/metrics").await.expect("metrics").body).into_owned();
    for name in [
        "sitesteer_site_state{site=\"a\",state=\"up\"} 1",
        "sitesteer_site_score{site=\"a\"}",
        "sitesteer_site_weight{kind=\"effective\",site=\"a\"}",
        "sitesteer_probe_latency_seconds_bucket",
        "sitesteer_requests_total{code=\"200\",site=\"a\",transport=\"http\"}",
        "sitesteer_failovers_total{kind=\"manual\",site=\"a\"} 1",
        "sitesteer_reloads_total{result=\"ok\"} 1",
        "sitesteer_panic_mode 0",
        "sitesteer_site_availability_ratio{site=\"a\",window=\"5m\"}",
        "sitesteer_site_availability_ratio{site=\"a\",window=\"1d\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_delivers_operator_actions_live() {
    let port = free_port();
    let _a = DemoSite::start("a", port).await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        sites(&[("a", 0, SocketAddr::from(([127, 0, 0, 1], port)))])
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.admin)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("/api/v1/events/stream")
        .header("host", proxy.admin.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("stream opens");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    assert_eq!(ctl(proxy.admin, None, &["weight", "a", "42"]).0, 0);
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut text = String::new();
        while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
                if text.contains("weight set to 42") {
                    return text;
                }
            }
        }
        text
    })
    .await
    .expect("an event within 5s");
    assert!(
        got.contains("event: event") && got.contains("\"kind\":\"operator\""),
        "{got}"
    );
}

fn start_process(config: &Path, log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log");
    let child = Command::new(binary())
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sitesteer");
    Proc { child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keep_every_override() {
    let ports = [free_port(), free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let _c = DemoSite::start("c", ports[2]).await;
    let mut proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        sites(&[("a", 0, addr(0)), ("b", 0, addr(1)), ("c", 1, addr(2))])
    ))
    .await;
    assert_eq!(ctl(proxy.admin, None, &["weight", "a", "7"]).0, 0);
    assert_eq!(ctl(proxy.admin, None, &["drain", "b"]).0, 0);
    assert_eq!(ctl(proxy.admin, None, &["maint", "c", "on"]).0, 0);
    // The state file holds them before the API answered.
    let state: Value = serde_json::from_slice(
        &std::fs::read(proxy.dir.0.join("sitesteer.state.json")).expect("state file"),
    )
    .expect("state JSON");
    assert_eq!(state["overrides"]["sites"]["a"]["weight"], 7);

    proxy.proc.kill9();
    let config = proxy.dir.0.join("sitesteer.toml");
    proxy.proc = start_process(&config, &proxy.dir.0.join("restart.log"));
    let admin = proxy.admin;
    let up = wait_until(Duration::from_secs(15), || async {
        get(admin, "/healthz").await.is_ok()
    })
    .await;
    assert!(up.is_some(), "restarted");
    let json = ctl_json(admin, &["sites"]);
    assert_eq!(site(&json, "a")["effective_weight"], 7);
    assert_eq!(site(&json, "b")["state"], "drained");
    assert_eq!(site(&json, "c")["state"], "maintenance");
    let (_, events, _) = ctl(admin, None, &["events"]);
    assert!(
        events.contains("restored operator overrides of 3 site(s)"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_is_refused_and_traffic_never_stops() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let body = format!("{PROBES}{}", sites(&[("a", 0, addr(0)), ("b", 0, addr(1))]));
    let proxy = Sitesteer::start(&body).await;
    let config = proxy.dir.0.join("sitesteer.toml");
    let good = std::fs::read_to_string(&config).expect("config");
    let traffic = Traffic::start(proxy.http, 3, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(
        &config,
        good.replace(
            "tier = 0\n[site.endpoints]\nhttp",
            "tier = 0\ncolour = \"red\"\n[site.endpoints]\nhttp",
        ),
    )
    .expect("break config");
    let (code, _, err) = ctl(proxy.admin, None, &["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("site[0].colour (line"), "{err}");
    let r = request(proxy.admin, Method::POST, "/api/v1/reload", &[], None)
        .await
        .expect("answer");
    assert_eq!(r.status, 422);
    assert!(
        r.json()["errors"].as_array().is_some_and(|e| e.len() == 2),
        "{:?}",
        r.json()
    );
    proxy.proc.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(proxy.admin, "/healthz")
            .await
            .expect("still running")
            .status,
        200
    );

    // A good reload changes a weight, keeps the site's history and drops nothing.
    let changed_at = site(&ctl_json(proxy.admin, &["sites"]), "a")["last_change_ms"].clone();
    std::fs::write(
        &config,
        good.replace(
            "name = \"b\"\ntier = 0\n",
            "name = \"b\"\ntier = 0\nweight = 300\n",
        ),
    )
    .expect("good config");
    proxy.proc.signal("-HUP");
    let reloaded = wait_until(Duration::from_secs(3), || async {
        site(&ctl_json(proxy.admin, &["sites"]), "b")["configured_weight"] == 300
    })
    .await;
    assert!(reloaded.is_some(), "SIGHUP reloads");
    assert_eq!(
        site(&ctl_json(proxy.admin, &["sites"]), "a")["last_change_ms"],
        changed_at,
        "unchanged sites keep their history"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcomes = traffic.stop().await;
    assert_none_failed(&outcomes, "during reloads");
    assert!(outcomes.len() > 100);
    let (_, events, _) = ctl(proxy.admin, None, &["events", "--limit", "50"]);
    assert!(
        events.contains("reload refused") && events.contains("config reloaded"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_an_open_websocket_finish_while_new_traffic_moves() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let body = format!(
        "[proxy]\ndrain_timeout = \"1500ms\"\nclose_grace = \"50ms\"\n\n{PROBES}{}",
        sites(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    );
    let proxy = Sitesteer::start(&body).await;
    // Pin the WebSocket to a: b out of rotation while it opens.
    assert_eq!(ctl(proxy.admin, None, &["weight", "b", "0"]).0, 0);
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/mcp/ws", proxy.http))
        .await
        .expect("websocket through the proxy");
    assert_eq!(resp.headers()["x-sitesteer-site"], "a");
    assert_eq!(ctl(proxy.admin, None, &["weight", "b", "100"]).0, 0);
    assert_eq!(ctl(proxy.admin, None, &["drain", "a"]).0, 0);
    let drained_at = std::time::Instant::now();

    assert!(
        served(proxy.http, 20).await.iter().all(|s| s == "b"),
        "new traffic leaves a drained site"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.send(Message::text(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
        .await
        .expect("the open WebSocket still works");
    let answer = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("answer in time");
    assert!(matches!(answer, Some(Ok(Message::Text(_)))), "{answer:?}");
    let control = get(a.addr, "/control").await.expect("control").json();
    assert_eq!(control["connections"]["ws"], 1, "{control}");

    // Past the drain timeout it is closed.
    let closed = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return drained_at.elapsed(),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed after the drain timeout");
    assert!(
        closed >= Duration::from_millis(1400),
        "closed only after the drain timeout, not at {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_when_one_is_configured() {
    let port = free_port();
    let _a = DemoSite::start("a", port).await;
    let dir = crate::harness::Scratch::new("token");
    let token_file = dir.0.join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token");
    let body = format!(
        "[admin]\ntoken_file = \"{}\"\n\n{PROBES}{}",
        token_file.display(),
        sites(&[("a", 0, SocketAddr::from(([127, 0, 0, 1], port)))])
    );
    let proxy = Sitesteer::start(&body).await;
    let put = |auth: Option<&'static str>| {
        let admin = proxy.admin;
        async move {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
            request(
                admin,
                Method::PUT,
                "/api/v1/sites/a/weight",
                &headers,
                Some("{\"weight\": 5}".into()),
            )
            .await
            .expect("answer")
            .status
        }
    };
    assert_eq!(put(None).await, 401);
    assert_eq!(put(Some("Bearer wrong")).await, 401);
    assert_eq!(put(Some("Bearer s3cret-token")).await, 200);
    assert_eq!(
        request(proxy.admin, Method::POST, "/api/v1/reload", &[], None)
            .await
            .expect("answer")
            .status,
        401
    );
    assert_eq!(
        get(proxy.admin, "/api/v1/sites")
            .await
            .expect("reads are open")
            .status,
        200
    );
    let (code, _, err) = ctl(proxy.admin, None, &["drain", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("Authorization: Bearer"), "{err}");
    assert_eq!(ctl(proxy.admin, Some("s3cret-token"), &["drain", "a"]).0, 0);
}

#[test]
fn a_public_admin_listener_without_a_token_is_refused() {
    let dir = crate::harness::Scratch::new("public");
    let config = dir.0.join("c.toml");
    std::fs::write(&config, "[listen]\nadmin = \"0.0.0.0:9900\"\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n").expect("config");
    let out = Command::new(binary())
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.token_file"));
}

/// What a page the operator merely visits can send: a form POST (`text/plain`, no preflight)
/// or a `fetch` in `no-cors` mode, both with the page's own `Origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused_and_the_admin_api_cannot_be_framed() {
    let port = free_port();
    let _a = DemoSite::start("a", port).await;
    let _b = DemoSite::start("b", free_port()).await;
    let proxy = Sitesteer::start(&sites(&[(
        "a",
        0,
        SocketAddr::from(([127, 0, 0, 1], port)),
    )]))
    .await;
    let own = format!("http://{}", proxy.admin);
    let maintenance = "/api/v1/sites/a/maintenance";
    let body = || Some(r#"{"on":true}"#.to_string());
    let cross_site: [&[(&str, &str)]; 4] = [
        // A form: foreign Origin, text/plain.
        &[
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
        ],
        // fetch(..., {mode: "no-cors"}) with JSON in a text/plain body.
        &[
            ("origin", "http://evil.example"),
            ("content-type", "text/plain;charset=UTF-8"),
        ],
        // A foreign Origin, even with JSON.
        &[
            ("origin", "http://evil.example"),
            ("content-type", "application/json"),
        ],
        // A form from a page the listener itself served is still a form.
        &[
            ("origin", own.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
    ];
    for headers in cross_site {
        let r = request(proxy.admin, Method::POST, maintenance, headers, body())
            .await
            .expect("admin API answers");
        assert_eq!(
            r.status,
            403,
            "{headers:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].as_str().is_some(), "a JSON error");
    }
    // A bodiless write from a foreign page (reload) too.
    let r = request(
        proxy.admin,
        Method::POST,
        "/api/v1/reload",
        &[("origin", "http://evil.example")],
        None,
    )
    .await
    .expect("admin API answers");
    assert_eq!(r.status, 403);
    // Nothing changed.
    assert_eq!(proxy.state_of("a").await, "up");
    // The status page's own write (its Origin, JSON) and a script's (no Origin) still work.
    let r = request(
        proxy.admin,
        Method::POST,
        maintenance,
        &[
            ("origin", own.as_str()),
            ("content-type", "application/json"),
        ],
        body(),
    )
    .await
    .expect("admin API answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(proxy.state_of("a").await, "maintenance");
    let r = request(
        proxy.admin,
        Method::POST,
        maintenance,
        &[("content-type", "application/json")],
        Some(r#"{"on":false}"#.to_string()),
    )
    .await
    .expect("admin API answers");
    assert_eq!(r.status, 200);
    // Every answer forbids framing, the status page first.
    for path in ["/", "/api/v1/sites", "/no-such-endpoint"] {
        let r = get(proxy.admin, path).await.expect("admin API answers");
        assert_eq!(r.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(
            r.header("content-security-policy"),
            "frame-ancestors 'none'",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_every_admin_request_against_dns_rebinding() {
    let port = free_port();
    let _a = DemoSite::start("a", port).await;
    let proxy = Sitesteer::start(&format!(
        "[admin]\nallowed_hosts = [\"admin.example.com\"]\n\n{}",
        sites(&[("a", 0, SocketAddr::from(([127, 0, 0, 1], port)))])
    ))
    .await;
    let admin_port = proxy.admin.port();
    let evil = format!("evil.example:{admin_port}");
    let json = ("content-type", "application/json");
    // A page of evil.example whose name now resolves to 127.0.0.1: its reads and writes
    // name its own host.
    for (method, path, body) in [
        (Method::GET, "/api/v1/sites", None),
        (Method::GET, "/", None),
        (Method::GET, "/metrics", None),
        (
            Method::POST,
            "/api/v1/sites/a/maintenance",
            Some(r#"{"on":true}"#.to_string()),
        ),
    ] {
        let r = request(
            proxy.admin,
            method.clone(),
            path,
            &[("host", &evil), json],
            body,
        )
        .await
        .expect("admin API answers");
        assert_eq!(
            r.status,
            403,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("allowed_hosts")));
        assert_eq!(r.header("x-frame-options"), "DENY");
    }
    assert_eq!(proxy.state_of("a").await, "up", "nothing changed");
    // The listener's address, localhost and the allowed name are answered.
    for host in [
        proxy.admin.to_string(),
        format!("localhost:{admin_port}"),
        format!("Admin.Example.com:{admin_port}"),
    ] {
        let r = request(
            proxy.admin,
            Method::GET,
            "/api/v1/sites",
            &[("host", &host)],
            None,
        )
        .await
        .expect("admin API answers");
        assert_eq!(r.status, 200, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_a_newer_version_is_read_and_its_fields_are_kept_after_a_rollback() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let mut proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        sites(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    ))
    .await;
    // A newer sitesteer wrote this before being rolled back to this one.
    proxy.proc.kill9();
    let path = proxy.dir.0.join("sitesteer.state.json");
    let newer = serde_json::json!({
        "version": 2,
        "overrides": {"sites": {"a": {"weight": 7, "paused_until_ms": 1893456000000u64}},
                      "quorum": {"min": 2}},
        "incidents": [],
        "journal": [{"at_ms": 1, "actor": "admin-api"}]
    });
    std::fs::write(&path, newer.to_string()).expect("state file");
    let log = proxy.dir.0.join("rollback.log");
    proxy.proc = start_process(&proxy.dir.0.join("sitesteer.toml"), &log);
    let admin = proxy.admin;
    let up = wait_until(Duration::from_secs(15), || async {
        get(admin, "/healthz").await.is_ok()
    })
    .await;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        up.is_some(),
        "an older binary starts on a newer file: {}",
        text()
    );
    assert_eq!(
        site(&ctl_json(admin, &["sites"]), "a")["effective_weight"],
        7
    );
    let warned = text();
    assert!(
        warned.contains("format version 2") && warned.contains("overrides.sites.a.paused_until_ms"),
        "a warning names what is not understood: {warned}"
    );
    // A write keeps what this version does not know.
    assert_eq!(ctl(admin, None, &["drain", "b"]).0, 0);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("state file")).expect("JSON");
    assert_eq!(saved["overrides"]["sites"]["b"]["drained"], true);
    assert_eq!(
        saved["overrides"]["sites"]["a"]["paused_until_ms"],
        1893456000000u64
    );
    assert_eq!(saved["overrides"]["quorum"], newer["overrides"]["quorum"]);
    assert_eq!(saved["journal"], newer["journal"]);
}
