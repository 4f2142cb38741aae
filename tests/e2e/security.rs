//! The front door's own defences, each against a real process with the concrete input of
//! the finding it closes: secrets re-read on reload (a revoked admin token stops writing, a
//! rotated session key keeps sessions), and the checks SECURITY.md lists under "data plane"
//! and "admin listener".

use std::net::SocketAddr;

use hyper::Method;
use serde_json::{json, Value};

use crate::harness::free_port;
use crate::harness::{mcp, request, site_tables, DemoSite, Scratch, Sitesteer};

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
