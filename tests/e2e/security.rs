//! The front door's own defences, each against a real process with the concrete input of
//! the finding it closes: secrets re-read on reload (a revoked admin token stops writing, a
//! rotated session key keeps sessions), and the checks SECURITY.md lists under "data plane"
//! and "admin listener".

use std::net::SocketAddr;

use hyper::Method;
use serde_json::{json, Value};

use crate::harness::free_port;
use crate::harness::{mcp, request, site_tables, DemoSite, FakeSite, Scratch, Sitesteer};

/// `POST path` on the admin listener with a JSON body and, when given, a bearer token.
async fn admin_post(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let r = request(admin, Method::POST, path, &headers, Some(body.to_string()))
        .await
        .expect("admin API answers");
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

/// A Streamable HTTP session through the proxy: its `Mcp-Session-Id`.
async fn new_session(http: SocketAddr) -> String {
    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {},
                      "clientInfo": {"name": "e2e", "version": "0"}});
    let r = mcp(http, "initialize", init, None)
        .await
        .expect("initialize");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let session = r.header("mcp-session-id").to_string();
    assert!(session.starts_with("ss1."), "{session:?}");
    session
}

/// The status of `tools/list` in `session`.
async fn list_in(http: SocketAddr, session: &str) -> u16 {
    mcp(http, "tools/list", json!({}), Some(session))
        .await
        .expect("tools/list")
        .status
}

#[tokio::test]
async fn a_reload_rereads_the_admin_token_and_rotates_session_keys_without_dropping_sessions() {
    let port = free_port();
    let _a = DemoSite::start("a", port).await;
    let secrets = Scratch::new("secrets");
    let token_file = secrets.0.join("admin.token");
    let key_file = secrets.0.join("session.key");
    let (old_key, new_key) = (
        "old-session-key-0123456789abcdef0123",
        "new-session-key-0123456789abcdef0123",
    );
    std::fs::write(&token_file, "old-token\n").expect("token file");
    std::fs::write(&key_file, format!("{old_key}\n")).expect("key file");
    let proxy = Sitesteer::start(&format!(
        "[admin]\ntoken_file = {token_file:?}\n\n[proxy]\nsession_key_file = {key_file:?}\n\n{}",
        site_tables(&[("a", 0, SocketAddr::from(([127, 0, 0, 1], port)))])
    ))
    .await;
    let weight = "/api/v1/sites/a/weight";
    let put = |token: &'static str| async move {
        let bearer = format!("Bearer {token}");
        request(
            proxy.admin,
            Method::PUT,
            weight,
            &[
                ("content-type", "application/json"),
                ("authorization", &bearer),
            ],
            Some(r#"{"weight":3}"#.to_string()),
        )
        .await
        .expect("admin API answers")
        .status
    };
    assert_eq!(put("old-token").await, 200);
    let old_session = new_session(proxy.http).await;

    // The token is revoked and replaced; the reload answers 200 and names what it re-read.
    std::fs::write(&token_file, "new-token\n").expect("token file");
    let (status, report) = admin_post(proxy.admin, "/api/v1/reload", Some("old-token"), "{}").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["reload"]["secrets_reread"],
        json!(["admin.token_file", "proxy.session_key_file"]),
        "{report}"
    );
    assert_eq!(
        put("old-token").await,
        401,
        "the revoked token writes no more"
    );
    assert_eq!(put("new-token").await, 200, "the new token writes");

    // Rotation, step 1: the new key is added second on every instance; sessions go on.
    std::fs::write(&key_file, format!("{old_key}\n{new_key}\n")).expect("key file");
    let (status, report) = admin_post(proxy.admin, "/api/v1/reload", Some("new-token"), "{}").await;
    assert_eq!(
        (status, report["reload"]["session_keys"].as_u64()),
        (200, Some(2)),
        "{report}"
    );
    assert_eq!(list_in(proxy.http, &old_session).await, 200);
    // Step 2: the new key signs; sessions of the old one still verify.
    std::fs::write(&key_file, format!("{new_key}\n{old_key}\n")).expect("key file");
    let (status, _) = admin_post(proxy.admin, "/api/v1/reload", Some("new-token"), "{}").await;
    assert_eq!(status, 200);
    let new_session = new_session(proxy.http).await;
    assert_ne!(
        new_session.rsplit('.').next(),
        old_session.rsplit('.').next()
    );
    assert_eq!(
        list_in(proxy.http, &old_session).await,
        200,
        "no session dropped"
    );
    assert_eq!(list_in(proxy.http, &new_session).await, 200);
    // Step 3: the old key goes, and with it the tokens only it signed.
    std::fs::write(&key_file, format!("{new_key}\n")).expect("key file");
    let (status, _) = admin_post(proxy.admin, "/api/v1/reload", Some("new-token"), "{}").await;
    assert_eq!(status, 200);
    assert_eq!(list_in(proxy.http, &old_session).await, 404);
    assert_eq!(list_in(proxy.http, &new_session).await, 200);

    // A bad secret file refuses the reload and changes nothing.
    std::fs::write(&token_file, "   \n").expect("token file");
    std::fs::write(&key_file, "short\n").expect("key file");
    let (status, report) = admin_post(proxy.admin, "/api/v1/reload", Some("new-token"), "{}").await;
    assert_eq!(status, 422, "{report}");
    let paths: Vec<&str> = report["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        paths,
        ["admin.token_file", "proxy.session_key_file"],
        "{report}"
    );
    assert_eq!(put("new-token").await, 200, "the running token stays");
    assert_eq!(
        list_in(proxy.http, &new_session).await,
        200,
        "the running keys stay"
    );
}

const PROBES: &str =
    "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n";

/// The demo site's count of Streamable HTTP messages.
async fn messages_at(site: &DemoSite) -> u64 {
    let r = request(site.addr, Method::GET, "/control", &[], None)
        .await
        .expect("control");
    let control: Value = serde_json::from_slice(&r.body).expect("control JSON");
    control["messages"]["http"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn mcp_headers_that_contradict_the_body_are_refused_and_never_decide_a_retry() {
    let failing = FakeSite::start(|_| (500, json!({"error": "injected"}))).await;
    let port = free_port();
    let b = DemoSite::start("b", port).await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}[proxy]\nretries = 2\n\n{}",
        site_tables(&[
            ("a", 0, failing.addr),
            ("b", 1, SocketAddr::from(([127, 0, 0, 1], port))),
        ])
    ))
    .await;
    let increment = json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call",
                           "params": {"name": "increment", "arguments": {}}})
    .to_string();
    let post = |headers: Vec<(&'static str, &'static str)>, body: String| async move {
        let mut all = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        all.extend(headers);
        request(proxy.http, Method::POST, "/mcp", &all, Some(body))
            .await
            .expect("the proxy answers")
    };
    let before = (failing.seen(), messages_at(&b).await);
    // A side-effecting call dressed as `ping`, then with another tool's name.
    for headers in [
        vec![("mcp-method", "ping")],
        vec![("mcp-method", "tools/call"), ("mcp-name", "echo")],
        vec![("mcp-name", "=?base64?not base64?=")],
    ] {
        let r = post(headers.clone(), increment.clone()).await;
        assert_eq!(
            r.status,
            400,
            "{headers:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let answer = r.json();
        assert_eq!(answer["error"]["code"], -32020, "{answer}");
        assert_eq!(answer["id"], 41, "{answer}");
    }
    assert_eq!(
        (failing.seen(), messages_at(&b).await),
        before,
        "no site saw a refused request"
    );
    // Headers that agree with the body: the body is read first, then sent on whole, by
    // pingora's path (a side effect: `a`'s 500 is passed on, not repeated on `b`)...
    let r = post(
        vec![("mcp-method", "tools/call"), ("mcp-name", "increment")],
        increment.clone(),
    )
    .await;
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        failing.last_body(),
        increment,
        "the body reached the site whole"
    );
    assert_eq!(messages_at(&b).await, before.1, "not repeated on b");
    // ... and by the checked path (safe to repeat: `b` answers after `a`'s 500).
    let list = json!({"jsonrpc": "2.0", "id": 43, "method": "tools/list", "params": {}});
    let r = post(vec![("mcp-method", "tools/list")], list.to_string()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-sitesteer-site"), "b");
    assert_eq!(failing.last_body(), list.to_string());
    assert_eq!(r.json()["id"], 43);

    // A chunked body cannot be held to be checked first: the header is simply not believed.
    // Site `a` answers 500; the `tools/call increment` that calls itself `ping` must not be
    // repeated on `b`.
    let seen_a = failing.seen();
    let b_before = messages_at(&b).await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-method: ping\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{increment}\r\n0\r\n\r\n",
        proxy.http,
        increment.len()
    );
    let answer = raw_exchange(proxy.http, head.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 500"),
        "the site's answer passed on: {answer}"
    );
    assert_eq!(failing.seen(), seen_a + 1);
    assert_eq!(messages_at(&b).await, b_before, "not repeated on b");
}

/// Writes `bytes` to a new connection and reads the answer until the proxy closes it (5 s
/// at most).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_site_that_normalises_json_rpc_ids_is_not_judged_wrong() {
    // Answers with the id as an integer, as sites that parse ids into numbers do: `1.0`
    // comes back as `1`, which JSON-RPC means as the same id.
    let normalising = FakeSite::start(|request| {
        let id = request["id"]
            .as_f64()
            .map_or(Value::Null, |f| json!(f as i64));
        (
            200,
            json!({"jsonrpc": "2.0", "id": id, "result": {"tools": []}}),
        )
    })
    .await;
    let port = free_port();
    let b = DemoSite::start("b", port).await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        site_tables(&[
            ("norm", 0, normalising.addr),
            ("b", 1, SocketAddr::from(([127, 0, 0, 1], port))),
        ])
    ))
    .await;
    let b_before = messages_at(&b).await;
    for id in ["1.0", "2.00", "3e0", "7"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list","params":{{}}}}"#);
        let r = request(
            proxy.http,
            Method::POST,
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
            Some(body),
        )
        .await
        .expect("the proxy answers");
        assert_eq!(r.status, 200, "id {id}");
        assert_eq!(
            r.header("x-sitesteer-site"),
            "norm",
            "id {id}: answered by its own site"
        );
    }
    assert_eq!(normalising.seen(), 4);
    assert_eq!(messages_at(&b).await, b_before, "nothing retried elsewhere");
    assert_eq!(proxy.state_of("norm").await, "up");
}

#[tokio::test]
async fn a_site_cannot_grow_the_learned_tool_table_without_bound() {
    // Every `tools/list` answer names 3,000 tools never seen before.
    static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let hostile = FakeSite::start(|request| {
        let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tools: Vec<Value> = (0..3000)
            .map(
                |i| json!({"name": format!("t{round}-{i}"), "annotations": {"readOnlyHint": true}}),
            )
            .collect();
        (
            200,
            json!({"jsonrpc": "2.0", "id": request["id"], "result": {"tools": tools}}),
        )
    })
    .await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        site_tables(&[("hostile", 0, hostile.addr)])
    ))
    .await;
    for _ in 0..4 {
        let r = mcp(proxy.http, "tools/list", json!({}), None)
            .await
            .expect("tools/list");
        assert_eq!(r.status, 200);
    }
    assert_eq!(hostile.seen(), 4);
    let known = proxy
        .metric("sitesteer_learned_tools{site=\"hostile\"}")
        .await;
    assert_eq!(known, 4096.0, "12,000 tools offered, 4,096 kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_starting_at_once_create_one_key_and_honour_each_others_sessions() {
    let port = free_port();
    let _a = DemoSite::start("a", port).await;
    let shared = Scratch::new("shared-key");
    let key_file = shared.0.join("fleet/session.key");
    let body = format!(
        "[proxy]\nsession_key_file = {key_file:?}\n\n{}",
        site_tables(&[("a", 0, SocketAddr::from(([127, 0, 0, 1], port)))])
    );
    let (one, two) = tokio::join!(Sitesteer::start(&body), Sitesteer::start(&body));
    let key = std::fs::read_to_string(&key_file).expect("the key file was created");
    assert_eq!(key.lines().count(), 1, "one key: {key:?}");
    assert_eq!(key.trim().len(), 43, "32 random bytes in base64url");
    // A session begun through one instance goes on through the other.
    let session = new_session(one.http).await;
    assert_eq!(list_in(two.http, &session).await, 200);
    let session = new_session(two.http).await;
    assert_eq!(list_in(one.http, &session).await, 200);
}
