//! Long-lived streams through a real sitesteer (issue 14, points 6 to 8): HTTP+SSE stream
//! tokens bound to their one stream and message URL, the `endpoint` event rewritten whole
//! however the site splits it, idle TCP, WebSocket and SSE connections closed after
//! `limits.stream_idle_timeout`, and raw TCP clients reaching a site only once they speak.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{request, wait_until, Answer, DemoSite, Scratch, Sitesteer};
use crate::stream_site::{endpoint_event, SseClient, StreamSite};

/// Fast probes of each site's `/health`.
const PROBES: &str = "[[probe]]\nkind = \"http\"\nendpoint = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n";
/// The WebSocket route (for sites with a ws endpoint).
const WS_ROUTE: &str = "[[route]]\nprefix = \"/mcp/ws\"\nendpoint = \"ws\"\n\n";
/// The HTTP+SSE routes of the scripted site (and everything else to http).
const ROUTES: &str = "[[route]]\nprefix = \"/sse\"\nendpoint = \"sse\"\n\n[[route]]\nprefix = \"/messages\"\nendpoint = \"sse\"\n\n[[route]]\nprefix = \"/\"\nendpoint = \"http\"\n\n";

fn site_table(name: &str, tier: u8, site: &StreamSite, ws: Option<SocketAddr>) -> String {
    let ws = ws.map(|a| format!("ws = \"{a}\"\n")).unwrap_or_default();
    format!(
        "[[site]]\nname = \"{name}\"\ntier = {tier}\n[site.endpoints]\nhttp = \"{h}\"\nsse = \"{h}\"\ntcp = \"{t}\"\n{ws}\n",
        h = site.http,
        t = site.tcp
    )
}

/// An operator write on the admin API (`drain`, `undrain`).
async fn admin(proxy: &Sitesteer, site: &str, action: &str) {
    let r = request(
        proxy.admin,
        Method::POST,
        &format!("/api/v1/sites/{site}/{action}"),
        &[("content-type", "application/json")],
        Some("{}".into()),
    )
    .await
    .expect("admin API");
    assert_eq!(r.status, 200, "{action} {site}: {r:?}");
}

/// A message POST. Not `application/json`, so that on the http route too it takes the
/// plain proxy path (a checked exchange would judge the scripted site's answers).
async fn post(proxy: SocketAddr, target: &str) -> Answer {
    request(
        proxy,
        Method::POST,
        target,
        &[("content-type", "text/plain")],
        Some("message".into()),
    )
    .await
    .expect("the proxy answers")
}

fn token_of(url: &str) -> &str {
    url.split("sst=").nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_tokens_pin_only_their_own_live_stream_on_its_message_url() {
    let a = StreamSite::start("a").await;
    let b = StreamSite::start("b").await;
    let keys = Scratch::new("stream-keys");
    let key_file = keys.0.join("session.key");
    let body = format!(
        "[proxy]\nsession_key_file = \"{}\"\n\n{PROBES}{ROUTES}{}{}",
        key_file.display(),
        site_table("a", 1, &a, None),
        site_table("b", 0, &b, None)
    );
    let proxy = Sitesteer::start(&body).await;
    proxy
        .wait_all_up(&["a", "b"], Duration::from_secs(10))
        .await;
    // b (tier 0) is preferred; drained while the streams open, they land on a.
    admin(&proxy, "b", "drain").await;
    assert!(proxy
        .wait_state("b", "drained", Duration::from_secs(5))
        .await
        .is_some());
    let mut s1 = SseClient::open(proxy.http, "/sse?sid=one&keepalive=100").await;
    let mut s2 = SseClient::open(proxy.http, "/sse?sid=two").await;
    assert_eq!(
        (s1.header("x-sitesteer-site"), s2.header("x-sitesteer-site")),
        ("a".into(), "a".into())
    );
    let u1 = s1
        .endpoint_url()
        .await
        .expect("endpoint event of stream one");
    let u2 = s2
        .endpoint_url()
        .await
        .expect("endpoint event of stream two");
    assert!(u1.starts_with("/messages/?session_id=one&sst=ss1."), "{u1}");
    assert!(u2.starts_with("/messages/?session_id=two&sst=ss1."), "{u2}");
    // Two streams of one site: two tokens.
    assert_ne!(
        token_of(&u1),
        token_of(&u2),
        "one token for every stream of a site"
    );
    admin(&proxy, "b", "undrain").await;
    proxy.wait_all_up(&["b"], Duration::from_secs(10)).await;

    // The stream's own message URL is pinned to its site...
    let r = post(proxy.http, &u1).await;
    assert_eq!(
        (r.status, r.header("x-sitesteer-site")),
        (202, "a"),
        "{r:?}"
    );
    // ... the token on another route, or with another session's id, is not.
    let other_route = format!("/mcp?sst={}", token_of(&u1));
    let r = post(proxy.http, &other_route).await;
    assert_eq!(
        r.header("x-sitesteer-site"),
        "b",
        "token on another route pinned: {r:?}"
    );
    let other_session = u1.replace("session_id=one", "session_id=two");
    let r = post(proxy.http, &other_session).await;
    assert_eq!(
        r.header("x-sitesteer-site"),
        "b",
        "token for another session pinned: {r:?}"
    );
    // A forged or modified token is refused: sitesteer never issued it.
    let mut forged = u1.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let r = post(proxy.http, &forged).await;
    assert_eq!((r.status, r.header("x-sitesteer-site")), (404, ""), "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).contains("session not found"),
        "{r:?}"
    );

    // Stream one ends; its site is drained. Its token brings no new session there, while
    // stream two, still open, keeps its messages on the drained site.
    drop(s1);
    admin(&proxy, "a", "drain").await;
    assert!(proxy
        .wait_state("a", "drained", Duration::from_secs(5))
        .await
        .is_some());
    let moved = wait_until(Duration::from_secs(5), || async {
        post(proxy.http, &u1).await.header("x-sitesteer-site") == "b"
    })
    .await;
    assert!(
        moved.is_some(),
        "an ended stream's token still pins to its drained site"
    );
    let r = post(proxy.http, &u2).await;
    assert_eq!(
        (r.status, r.header("x-sitesteer-site")),
        (202, "a"),
        "open stream lost: {r:?}"
    );
    assert!(
        proxy
            .metric("sitesteer_sse_token_unpinned_total{reason=\"ended\"}")
            .await
            >= 1.0
    );
    assert!(
        proxy
            .metric("sitesteer_sse_token_unpinned_total{reason=\"target\"}")
            .await
            >= 2.0
    );

    // Another instance with the same key cannot see stream two: it pins the token while a
    // takes new sessions, and not once a is drained there.
    let peer = Sitesteer::start(&body).await;
    peer.wait_all_up(&["a", "b"], Duration::from_secs(10)).await;
    let r = post(peer.http, &u2).await;
    assert_eq!(
        (r.status, r.header("x-sitesteer-site")),
        (202, "a"),
        "{r:?}"
    );
    admin(&peer, "a", "drain").await;
    assert!(peer
        .wait_state("a", "drained", Duration::from_secs(5))
        .await
        .is_some());
    let r = post(peer.http, &u2).await;
    assert_eq!(
        r.header("x-sitesteer-site"),
        "b",
        "a drained site got a new session: {r:?}"
    );
    drop(s2);
}

/// Where the event `endpoint_event(sid, nl)` is cut: every boundary a rewrite can trip on.
fn interesting_cuts(sid: &str, nl: &str) -> Vec<(&'static str, Vec<usize>)> {
    let event = endpoint_event(sid, nl);
    let data = event.find("data:").expect("data line");
    let url = event.find("session_id").expect("url");
    let end = event.len();
    let n = nl.len();
    let mut cases = vec![
        ("inside event:", vec![3]),
        ("after event:", vec![6]),
        ("before the first line end", vec![data - n]),
        ("between the lines", vec![data]),
        ("inside data:", vec![data + 2]),
        ("inside the URL", vec![url + 4]),
        ("before the blank line", vec![end - n]),
        (
            "everywhere at once",
            vec![3, data - n, data + 2, url + 4, end - n],
        ),
    ];
    if n == 2 {
        cases.push(("between CR and LF of the first line", vec![data - 1]));
        cases.push(("between CR and LF of the data line", vec![end - 3]));
        cases.push(("between CR and LF of the blank line", vec![end - 1]));
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_event_split_anywhere_is_rewritten_whole() {
    let a = StreamSite::start("a").await;
    let body = format!("{PROBES}{ROUTES}{}", site_table("a", 0, &a, None));
    let proxy = Sitesteer::start(&body).await;
    proxy.wait_all_up(&["a"], Duration::from_secs(10)).await;
    let mut tried = 0;
    for (nl_name, nl) in [("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")] {
        let mut cases = interesting_cuts("s", nl);
        let every: Vec<usize> = (1..endpoint_event("s", nl).len()).collect();
        if nl_name == "crlf" {
            cases.push(("a byte at a time", every));
        }
        for (i, (what, cuts)) in cases.into_iter().enumerate() {
            let sid = format!("{nl_name}{i}");
            let cuts: Vec<String> = cuts.iter().map(usize::to_string).collect();
            let target = format!("/sse?sid={sid}&nl={nl_name}&cuts={}", cuts.join(","));
            let mut stream = SseClient::open(proxy.http, &target).await;
            let url = stream.endpoint_url().await;
            let url = url.unwrap_or_else(|| {
                panic!(
                    "{nl_name} {what}: no endpoint event in {:?}",
                    String::from_utf8_lossy(&stream.body)
                )
            });
            let prefix = format!("/messages/?session_id={sid}&sst=ss1.");
            let token = url.strip_prefix(&prefix).unwrap_or_else(|| {
                panic!(
                    "{nl_name} {what}: not rewritten whole: {url:?} in {:?}",
                    String::from_utf8_lossy(&stream.body)
                )
            });
            assert_eq!(token.split('.').count(), 3, "{nl_name} {what}: {url}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
                "{nl_name} {what}: {url}"
            );
            // The whole event, line endings as the site wrote them.
            let want = endpoint_event(&sid, nl).replace(
                &format!("session_id={sid}"),
                &format!("session_id={sid}&sst=ss1.{token}"),
            );
            assert!(
                stream.body.starts_with(want.as_bytes()),
                "{nl_name} {what}: {:?}",
                String::from_utf8_lossy(&stream.body)
            );
            let r = post(proxy.http, &url).await;
            assert_eq!(
                (r.status, r.header("x-sitesteer-site")),
                (202, "a"),
                "{nl_name} {what}: {r:?}"
            );
            tried += 1;
        }
    }
    assert_eq!(tried, 8 + 11 + 1 + 8);
    assert_eq!(
        proxy
            .metric("sitesteer_sse_endpoint_unrewritten_total{reason=\"too_long\"}")
            .await,
        0.0
    );
}

/// Waits until the proxy's TCP listener `tcp` accepts (the harness waits only for HTTP and
/// admin); the probing connection sends nothing and closes, so it never reaches a site.
async fn wait_listening(tcp: SocketAddr) {
    let up = wait_until(Duration::from_secs(10), || async {
        TcpStream::connect(tcp).await.is_ok()
    })
    .await;
    assert!(up.is_some(), "the TCP listener {tcp} never accepted");
}

/// Reads a line from `conn` within `limit`.
async fn read_line(conn: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + limit;
    while !out.ends_with(b"\n") {
        match tokio::time::timeout_at(deadline, conn.read(&mut byte)).await {
            Ok(Ok(1)) => out.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// How long until `conn` is closed by the proxy, if within `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(start + limit, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_websocket_and_sse_streams_close_after_stream_idle_timeout() {
    let a = StreamSite::start("a").await;
    let ws_port = crate::harness::free_port();
    let demo = DemoSite::start("a", ws_port).await;
    let tcp = SocketAddr::from(([127, 0, 0, 1], crate::harness::free_port()));
    let body = format!(
        "tcp = \"{tcp}\"\n\n[limits]\nstream_idle_timeout = \"1s\"\n\n{PROBES}{WS_ROUTE}{ROUTES}{}",
        site_table("a", 0, &a, Some(demo.addr))
    );
    let proxy = Sitesteer::start(&body).await;
    proxy.wait_all_up(&["a"], Duration::from_secs(10)).await;
    wait_listening(tcp).await;
    let idle = Duration::from_secs(1);
    // Busy connections send something every 300 ms for 3 s; idle ones stop after their
    // first exchange and must be closed about 1 s later.
    let busy_for = Duration::from_secs(3);
    let every = Duration::from_millis(300);

    // Raw TCP.
    let mut idle_tcp = TcpStream::connect(tcp).await.expect("connect");
    idle_tcp.write_all(b"hello\n").await.expect("send");
    assert_eq!(
        read_line(&mut idle_tcp, Duration::from_secs(3))
            .await
            .as_deref(),
        Some("a: hello\n")
    );
    let mut busy_tcp = TcpStream::connect(tcp).await.expect("connect");
    // WebSocket.
    let (mut idle_ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/mcp/ws", proxy.http))
        .await
        .expect("websocket");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    idle_ws.send(Message::text(ping)).await.expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(3), idle_ws.next()).await;
    assert!(
        matches!(answer, Ok(Some(Ok(Message::Text(_))))),
        "{answer:?}"
    );
    let (mut busy_ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/mcp/ws", proxy.http))
        .await
        .expect("websocket");
    // SSE: a silent stream, and one whose site sends keep-alive comments.
    let mut idle_sse = SseClient::open(proxy.http, "/sse?sid=quiet").await;
    assert!(idle_sse.endpoint_url().await.is_some());
    let mut busy_sse = SseClient::open(proxy.http, "/sse?sid=chatty&keepalive=300").await;
    assert!(busy_sse.endpoint_url().await.is_some());

    let busy = async {
        let start = tokio::time::Instant::now();
        let mut n = 0;
        while start.elapsed() < busy_for {
            n += 1;
            busy_tcp
                .write_all(format!("n{n}\n").as_bytes())
                .await
                .expect("busy tcp send");
            let line = read_line(&mut busy_tcp, Duration::from_secs(2)).await;
            assert_eq!(
                line,
                Some(format!("a: n{n}\n")),
                "busy tcp closed at {:?}",
                start.elapsed()
            );
            busy_ws
                .send(Message::text(ping))
                .await
                .expect("busy ws send");
            let answer = tokio::time::timeout(Duration::from_secs(2), busy_ws.next()).await;
            assert!(
                matches!(answer, Ok(Some(Ok(Message::Text(_))))),
                "busy ws at {:?}: {answer:?}",
                start.elapsed()
            );
            tokio::time::sleep(every).await;
        }
        n
    };
    let idle_tcp_closed = closed_within(&mut idle_tcp, Duration::from_secs(4));
    let idle_ws_closed = async {
        let start = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                match idle_ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return start.elapsed(),
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .ok()
    };
    let idle_sse_closed = idle_sse.ends_within(Duration::from_secs(4));
    let (rounds, tcp_closed, ws_closed, sse_closed) =
        tokio::join!(busy, idle_tcp_closed, idle_ws_closed, idle_sse_closed);
    assert!(rounds >= 5, "{rounds}");
    for (what, closed) in [("tcp", tcp_closed), ("ws", ws_closed), ("sse", sse_closed)] {
        let closed = closed
            .unwrap_or_else(|| panic!("idle {what} not closed within 4 s; log:\n{}", proxy.log()));
        assert!(
            closed >= idle - Duration::from_millis(350),
            "idle {what} closed too early: {closed:?}"
        );
        eprintln!("idle {what} closed {closed:?} after it went quiet (stream_idle_timeout 1s)");
    }
    // The busy SSE stream is still open and flowing.
    let before = busy_sse.body.len();
    assert!(
        busy_sse
            .read_until(Duration::from_secs(2), |c| c.body.len() > before)
            .await,
        "the busy SSE stream was closed"
    );
    for transport in ["tcp", "ws", "sse"] {
        let series = format!("sitesteer_idle_closed_total{{site=\"a\",transport=\"{transport}\"}}");
        assert_eq!(proxy.metric(&series).await, 1.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_clients_never_reach_a_site_and_are_closed() {
    let a = StreamSite::start("a").await;
    let tcp = SocketAddr::from(([127, 0, 0, 1], crate::harness::free_port()));
    let body = format!(
        "tcp = \"{tcp}\"\n\n[limits]\nmax_connections = 8\nheader_timeout = \"1s\"\n\n{PROBES}{ROUTES}{}",
        site_table("a", 0, &a, None)
    );
    let proxy = Sitesteer::start(&body).await;
    proxy.wait_all_up(&["a"], Duration::from_secs(10)).await;
    wait_listening(tcp).await;
    // max_connections silent clients take every place (once the probe's place is free)...
    let free = wait_until(Duration::from_secs(3), || async {
        proxy
            .metric("sitesteer_listener_connections{listener=\"tcp\"}")
            .await
            == 0.0
    })
    .await;
    assert!(free.is_some(), "the probing connection was not closed");
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(tcp).await.expect("connect"));
    }
    let held = wait_until(Duration::from_secs(3), || async {
        proxy
            .metric("sitesteer_listener_connections{listener=\"tcp\"}")
            .await
            == 8.0
    })
    .await;
    assert!(held.is_some(), "the silent clients were not all taken");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and not one site connection.
    assert_eq!(a.tcp_accepts(), 0, "silent clients opened site connections");
    // They are closed by the first-byte timeout, still without a site connection.
    let closes = futures_util::future::join_all(
        silent
            .iter_mut()
            .map(|c| closed_within(c, Duration::from_secs(3))),
    )
    .await;
    assert!(closes.iter().all(Option::is_some), "{closes:?}");
    let slowest = closes.iter().flatten().max();
    eprintln!("{} silent clients closed, the last {slowest:?} after the wait (header_timeout 1s, 300 ms of it waited before)", closes.len());
    assert_eq!(a.tcp_accepts(), 0);
    assert_eq!(
        proxy
            .metric("sitesteer_refused_total{listener=\"tcp\",reason=\"first_byte_timeout\"}")
            .await,
        8.0
    );
    // A real client is served after them.
    let mut client = TcpStream::connect(tcp).await.expect("connect");
    client
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
        .await
        .expect("send");
    let line = read_line(&mut client, Duration::from_secs(3)).await;
    assert_eq!(
        line.as_deref(),
        Some("a: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
    );
    assert_eq!(a.tcp_accepts(), 1);
}
