//! Hostile input against a real sitesteer: malformed and oversized request lines, heads and
//! bodies, slowloris heads and bodies, idle keep-alive connections, a flood of connections
//! on the HTTP and TCP listeners, bad JSON and oversized bodies on the admin API, and the
//! table of broken configs through `sitesteer check`, request heads RFC 9112 forbids
//! (control characters, bare CRs, line folding) and broken PROXY protocol headers. Every case checks the clear error (a
//! status code, a JSON-RPC error line or a fast close) and then that the proxy still serves.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::forwarded::{exchange, proxy_for, EchoSite, LOCAL};
use crate::harness::{
    binary, free_port, get, request, site_tables, wait_until, DemoSite, Scratch, Sitesteer,
};

mod table {
    include!("../../config/tests/common/broken_table.rs");
}

/// What the proxy did with one raw exchange.
#[derive(Debug)]
struct Raw {
    /// The status of the first answer, if any.
    status: Option<u16>,
    /// Everything read until the close (or the time limit).
    text: String,
    /// Whether the proxy closed the connection.
    closed: bool,
    /// From the last byte written to the close (or the time limit).
    took: Duration,
}

/// Reads from `conn` until it closes or `limit` passes.
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Writes `bytes` on a new connection (write errors are the proxy's right) and reads the
/// answer until the close, at most `limit`.
async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Raw {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let _ = conn.write_all(bytes).await;
    let start = Instant::now();
    let (out, closed) = read_to_close(&mut conn, limit).await;
    Raw {
        status: status_of(&out),
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
        took: start.elapsed(),
    }
}

/// The proxy still serves: `/health` through it answers 200 from a site.
async fn still_serves(proxy: &Sitesteer, after: &str) {
    let r = get(proxy.http, "/health").await;
    assert!(
        r.as_ref().is_ok_and(|r| r.status == 200),
        "after {after}: /health through the proxy gave {r:?}; log:\n{}",
        proxy.log()
    );
}

/// A demo site and sitesteer with `limits` (the body of a `[limits]` table).
async fn proxy_with(limits: &str) -> (DemoSite, Sitesteer) {
    let site = DemoSite::start("a", free_port()).await;
    let config = format!(
        "{}[limits]\n{limits}\n",
        site_tables(&[("a", 0, site.addr)])
    );
    let proxy = Sitesteer::start(&config).await;
    let ok = wait_until(Duration::from_secs(10), || async {
        get(proxy.http, "/health")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(
        ok.is_some(),
        "the proxy never served; log:\n{}",
        proxy.log()
    );
    (site, proxy)
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_clear_errors() {
    let (_site, proxy) = proxy_with(
        "max_request_line = 1024\nmax_header_bytes = 8192\nmax_headers = 20\nmax_body_bytes = 4096\n",
    )
    .await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(2000));
    let unterminated = format!("GET /{}", "x".repeat(2000));
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: a\r\n{}\r\n",
        (0..30).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
    );
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    let big_chunked = {
        let chunk = format!("400\r\n{}\r\n", "c".repeat(1024));
        format!(
            "POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            chunk.repeat(8)
        )
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an over-long request line", long_target.into_bytes(), 414),
        (
            "an over-long unterminated request line",
            unterminated.into_bytes(),
            414,
        ),
        ("too many header fields", many_headers.into_bytes(), 431),
        ("an oversized header", big_header.into_bytes(), 431),
        (
            "binary garbage",
            b"\x00\x01\x02\xff NOT HTTP\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a header line without a colon",
            b"GET /health HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a declared body over the limit",
            b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".to_vec(),
            413,
        ),
        (
            "a chunked body over the limit",
            big_chunked.into_bytes(),
            413,
        ),
        (
            "a Content-Length that is not a number",
            b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: lots\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a CONNECT tunnel",
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_vec(),
            405,
        ),
    ];
    for (what, bytes, expected) in cases {
        let r = raw(proxy.http, &bytes, Duration::from_secs(5)).await;
        assert_eq!(
            r.status,
            Some(expected),
            "{what}: {r:?}; log:\n{}",
            proxy.log()
        );
        assert!(r.closed, "{what}: the connection stayed open: {r:?}");
        if ![400, 405].contains(&expected) {
            assert!(
                r.text.contains("limits."),
                "{what}: the answer does not name the limit: {r:?}"
            );
        }
        still_serves(&proxy, what).await;
    }
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    for reason in ["request_line", "headers", "header_bytes", "body_bytes"] {
        assert!(
            text.contains(&format!(
                "sitesteer_refused_total{{listener=\"http\",reason=\"{reason}\"}}"
            )),
            "no refusal counted for {reason}"
        );
    }
}

#[tokio::test]
async fn slowloris_heads_bodies_and_idle_connections_time_out() {
    let (_site, proxy) = proxy_with(
        "header_timeout = \"1s\"\nbody_timeout = \"500ms\"\nkeepalive_timeout = \"1s\"\n",
    )
    .await;

    // A head trickled one byte every 100ms: 408 once header_timeout has passed.
    let mut slow = TcpStream::connect(proxy.http).await.expect("connect");
    let start = Instant::now();
    let trickle =
        b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut answer = Vec::new();
    for byte in trickle {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || status_of(&answer).is_some() {
                break;
            }
        }
    }
    let (rest, closed) = read_to_close(&mut slow, Duration::from_secs(3)).await;
    answer.extend_from_slice(&rest);
    let took = start.elapsed();
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(closed, "the slowloris connection stayed open");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "the head timed out after {took:?}"
    );
    still_serves(&proxy, "a slowloris head").await;

    // Many slowloris connections at once do not stop normal requests meanwhile.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(proxy.http).await.expect("connect");
        c.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        held.push(c);
    }
    still_serves(&proxy, "50 slowloris connections opened").await;
    for c in &mut held {
        let (out, closed) = read_to_close(c, Duration::from_secs(3)).await;
        assert!(
            closed && status_of(&out) == Some(408),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    // A connection that never sends a byte is closed, without an answer.
    let r = raw(proxy.http, b"", Duration::from_secs(3)).await;
    assert!(r.closed && r.text.is_empty(), "{r:?}");
    assert!(r.took < Duration::from_millis(2500), "{r:?}");

    // A body that stalls: 408 once body_timeout has passed.
    let r = raw(
        proxy.http,
        b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.status, Some(408), "{r:?}; log:\n{}", proxy.log());
    assert!(r.closed, "{r:?}");
    assert!(r.took < Duration::from_secs(3), "{r:?}");
    still_serves(&proxy, "a stalled body").await;

    // An idle keep-alive connection is closed after keepalive_timeout.
    let mut idle = TcpStream::connect(proxy.http).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.expect("answer");
    assert_eq!(status_of(&buf[..n]), Some(200));
    let start = Instant::now();
    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(4)).await;
    assert!(closed, "the idle keep-alive connection stayed open");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    still_serves(&proxy, "an idle keep-alive connection").await;
}

/// Waits until `listener` has taken `n` connections (accepts are asynchronous).
async fn held_everywhere(proxy: &Sitesteer, listener: &str, n: usize) {
    let line = format!("sitesteer_listener_connections{{listener=\"{listener}\"}} {n}");
    let seen = wait_until(Duration::from_secs(5), || async {
        get(proxy.admin, "/metrics")
            .await
            .is_ok_and(|m| String::from_utf8_lossy(&m.body).lines().any(|l| l == line))
    })
    .await;
    if seen.is_none() {
        let m = get(proxy.admin, "/metrics").await.expect("metrics");
        let text = String::from_utf8_lossy(&m.body).into_owned();
        let shown: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sitesteer_listener_connections"))
            .collect();
        panic!("{listener} never held {n} connections: {shown:?}");
    }
}

#[tokio::test]
async fn a_connection_flood_is_refused_fast_on_http_and_tcp() {
    let ports = [free_port(), free_port()];
    let site = DemoSite::start_with_tcp("a", ports[0], ports[1]).await;
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "tcp = \"{tcp}\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"{}\"\ntcp = \"127.0.0.1:{}\"\n\n[limits]\nmax_connections = 20\nheader_timeout = \"30s\"\n",
        site.addr, ports[1]
    );
    let proxy = Sitesteer::start(&config).await;
    // Each check on a connection the proxy closes after it, so that none lingers in the
    // count of held places below.
    wait_until(Duration::from_secs(10), || async {
        let r = raw(
            proxy.http,
            b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        r.status == Some(200)
    })
    .await
    .expect("proxy serves");

    // HTTP: 20 connections held open take every place...
    held_everywhere(&proxy, "http", 0).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(proxy.http).await.expect("connect"));
    }
    // ... so a flood of 100 more is refused at once with 503.
    held_everywhere(&proxy, "http", 20).await;
    let mut last = None;
    for _ in 0..3 {
        let r = raw(
            proxy.http,
            b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        let refused = r.status == Some(503);
        last = Some(r);
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.as_ref().is_some_and(|r| r.status == Some(503)),
        "no 503 with every place taken: {last:?}; log:\n{}",
        proxy.log()
    );
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let addr = proxy.http;
            tokio::spawn(async move {
                raw(
                    addr,
                    b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
                    Duration::from_secs(3),
                )
                .await
            })
        })
        .collect();
    for r in flood {
        let r = r.await.expect("flood task");
        assert_eq!(r.status, Some(503), "{r:?}");
        assert!(r.text.contains("limits.max_connections"), "{r:?}");
        assert!(
            r.closed && r.took < Duration::from_secs(1),
            "not refused fast: {r:?}"
        );
    }
    drop(held);
    let back = wait_until(Duration::from_secs(5), || async {
        get(proxy.http, "/health")
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(back.is_some(), "the places were not freed");

    // TCP: the same limit; the excess reads one JSON-RPC error line and the close.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(tcp).await.expect("connect"));
    }
    held_everywhere(&proxy, "tcp", 20).await;
    let mut last = None;
    for _ in 0..50 {
        let r = raw(tcp, b"", Duration::from_secs(2)).await;
        let refused = r.closed && r.text.contains("limits.max_connections");
        last = Some(r);
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.expect("tried");
    assert!(
        r.text.contains("limits.max_connections"),
        "no TCP refusal with every place taken: {r:?}; log:\n{}",
        proxy.log()
    );
    let line: serde_json::Value = serde_json::from_str(r.text.trim()).expect("a JSON-RPC line");
    assert_eq!(line["error"]["code"], -32000, "{line}");
    assert!(r.took < Duration::from_secs(1), "{r:?}");
    drop(held);
    let answered = wait_until(Duration::from_secs(5), || async {
        let Ok(mut c) = TcpStream::connect(tcp).await else {
            return false;
        };
        let ping = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
        if c.write_all(ping).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0 && String::from_utf8_lossy(&buf[..n]).contains("\"result\"")
        )
    })
    .await;
    assert!(answered.is_some(), "TCP did not serve again");
    still_serves(&proxy, "the floods").await;
}

#[tokio::test]
async fn the_admin_api_refuses_bad_json_and_oversized_bodies() {
    let (_site, proxy) = proxy_with("").await;
    let admin = proxy.admin;
    let bad: [(&str, Option<String>); 4] = [
        ("truncated JSON", Some("{\"weight\": ".into())),
        ("not JSON at all", Some("weight=5".into())),
        ("JSON of the wrong shape", Some("[1, 2, 3]".into())),
        ("an empty body", None),
    ];
    for (what, body) in bad {
        let r = request(admin, Method::PUT, "/api/v1/sites/a/weight", &[], body)
            .await
            .expect("answer");
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no JSON error: {r:?}"
        );
    }
    let huge = format!("{{\"weight\": 5, \"pad\": \"{}\"}}", "p".repeat(200_000));
    let r = request(
        admin,
        Method::PUT,
        "/api/v1/sites/a/weight",
        &[],
        Some(huge),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 413, "{r:?}");
    let r = request(
        admin,
        Method::POST,
        "/api/v1/failover",
        &[],
        Some("x".repeat(70_000)),
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 413, "{r:?}");
    // A malformed request line on the admin listener is refused, and the listener lives on.
    let r = raw(admin, b"\x00\x01garbage\r\n\r\n", Duration::from_secs(3)).await;
    assert!(r.closed, "{r:?}");
    assert_eq!(get(admin, "/healthz").await.expect("healthz").status, 200);
    let sites = proxy.sites().await;
    assert_eq!(sites["sites"][0]["effective_weight"], 100, "{sites}");
    still_serves(&proxy, "bad admin requests").await;
}

#[test]
fn every_broken_config_is_refused_by_check_naming_its_key() {
    let dir = Scratch::new("broken");
    for (i, (what, text, key)) in table::BROKEN.iter().enumerate() {
        let path = dir.0.join(format!("broken-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let out = Command::new(binary())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(key),
            "{what}: {key:?} is not named: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

/// Point 11 of issue 14: request heads that RFC 9112 (and RFC 3986 for the target) forbids
/// get `400` and a close at once, and never reach the site; a head whose lines end in a
/// bare CR is refused well within `header_timeout` (10 s here), not at it.
#[tokio::test]
async fn heads_with_control_characters_or_bare_crs_get_400_at_once_and_reach_no_site() {
    let echo = EchoSite::start().await;
    let proxy = proxy_for(&echo, "", None).await;
    let cases: [(&str, &[u8]); 18] = [
        (
            "a PROXY v1 header where proxy_protocol is off",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a PROXY v2 header where proxy_protocol is off",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x09\x0a\x00\x00\x01\xdc\x04\x01\xbbGET /health HTTP/1.1\r\n\r\n",
        ),
        (
            "a 0x01 in the target",
            b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a DEL (0x7f) in the target",
            b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a NUL in the target",
            b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "an ESC in the target",
            b"GET /a\x1b[0mb HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a tab in the target",
            b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a space in the target",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "lines ending in a bare CR",
            b"GET /health HTTP/1.1\rHost: a\r\r",
        ),
        (
            "a bare CR in the request line",
            b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a bare CR in a value",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        ),
        (
            "a CR CR LF line end",
            b"GET /health HTTP/1.1\r\nHost: a\r\r\n\r\n",
        ),
        (
            "a NUL in a value",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        ),
        (
            "an ESC in a value",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n",
        ),
        (
            "a NUL in a name",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX\x00Y: a\r\n\r\n",
        ),
        (
            "a folded header line",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        ),
        (
            "whitespace before the first header",
            b"GET /health HTTP/1.1\r\n Host: a\r\n\r\n",
        ),
        (
            "whitespace before a colon",
            b"GET /health HTTP/1.1\r\nHost : a\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let before = echo.hits();
        let r = raw(proxy.http, bytes, Duration::from_secs(5)).await;
        assert_eq!(r.status, Some(400), "{what}: {r:?}; log:\n{}", proxy.log());
        assert!(r.closed, "{what}: the connection stayed open: {r:?}");
        assert!(
            r.took < Duration::from_secs(1),
            "{what}: answered after {:?}",
            r.took
        );
        assert_eq!(echo.hits(), before, "{what}: the site saw the request");
        still_serves(&proxy, what).await;
    }
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("sitesteer_refused_total{listener=\"http\",reason=\"malformed_head\"}"),
        "no malformed_head refusal counted"
    );
}

/// Broken PROXY headers from the trusted balancer: each connection is closed without an
/// answer (a stalled one at `header_timeout`), and the proxy serves on.
#[tokio::test]
async fn broken_proxy_headers_are_closed_and_the_proxy_serves_on() {
    let echo = EchoSite::start().await;
    let proxy = proxy_for(
        &echo,
        "trusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = [\"http\"]\n\n[limits]\nheader_timeout = \"1s\"",
        None,
    )
    .await;
    let sig = b"\r\n\r\n\0\r\nQUIT\n";
    let v2 = |ver_cmd: u8, family: u8, len: u16, payload: &[u8]| {
        let mut h = sig.to_vec();
        h.extend_from_slice(&[ver_cmd, family]);
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(payload);
        h.extend_from_slice(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n");
        h
    };
    let long_v1 = format!("PROXY UNKNOWN {}\r\n", "x".repeat(200));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a v1 line over 107 bytes",
            long_v1.into_bytes(),
            "proxy_invalid",
        ),
        (
            "a v1 bad address",
            b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            "proxy_invalid",
        ),
        (
            "a v1 bad port",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 70000 2\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            "proxy_invalid",
        ),
        (
            "a v1 unknown protocol",
            b"PROXY UDP4 1.2.3.4 10.0.0.1 1 2\r\n".to_vec(),
            "proxy_invalid",
        ),
        (
            "a v1 line ending in LF alone",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            "proxy_invalid",
        ),
        (
            "a v2 version 1",
            v2(0x11, 0x11, 12, &[0; 12]),
            "proxy_invalid",
        ),
        (
            "a v2 unknown command",
            v2(0x2f, 0x11, 12, &[0; 12]),
            "proxy_invalid",
        ),
        (
            "a v2 unknown family",
            v2(0x21, 0x41, 12, &[0; 12]),
            "proxy_invalid",
        ),
        (
            "a v2 length over the bound",
            v2(0x21, 0x11, 65535, &[0; 12]),
            "proxy_invalid",
        ),
        (
            "a v2 IPv4 header too short",
            v2(0x21, 0x11, 4, &[0; 4]),
            "proxy_invalid",
        ),
        (
            "a v2 header that stops",
            sig.iter()
                .chain(&[0x21, 0x11, 0, 12, 1, 2])
                .copied()
                .collect(),
            "proxy_timeout",
        ),
        (
            "a v1 line that stops",
            b"PROXY TCP4 1.2.3.4".to_vec(),
            "proxy_timeout",
        ),
    ];
    for (what, bytes, reason) in &cases {
        let before = echo.hits();
        let (answer, closed) = exchange(LOCAL, proxy.http, bytes).await;
        assert!(
            closed && answer.is_empty(),
            "{what}: {answer:?}; log:\n{}",
            proxy.log()
        );
        assert_eq!(echo.hits(), before, "{what}: the site saw the request");
        // The log is coloured: the reason is looked for as a word.
        assert!(
            proxy.log().contains(&format!("\"{reason}\"")),
            "{what}: not logged as {reason}; log:\n{}",
            proxy.log()
        );
    }
    // Still serving the balancer's good connections.
    let (answer, _) = exchange(
        LOCAL,
        proxy.http,
        b"PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r\nGET /echo HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    for (reason, n) in [("proxy_invalid", 10), ("proxy_timeout", 2)] {
        let series =
            format!("sitesteer_refused_total{{listener=\"http\",reason=\"{reason}\"}} {n}");
        assert!(text.contains(&series), "{series} not in metrics");
    }
}
