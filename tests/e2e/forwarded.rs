//! Who the client is, as the site sees it: `X-Forwarded-For`, `Forwarded` and
//! `X-Forwarded-Proto` set by sitesteer (a forged value from an untrusted client replaced, a
//! trusted proxy's chain extended), and the PROXY protocol (v1, v2) from a trusted balancer
//! on the HTTP and TCP listeners, refused from anyone else. The site here is a small
//! backend inside the test that answers every request with the head it received. An
//! untrusted peer is a connection from 127.0.0.2 while only 127.0.0.1 is trusted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::harness::{free_port, wait_until, DemoSite, Sitesteer};

/// A backend that answers every HTTP/1 request with `200` and the request head as its body,
/// one request per connection, counting the heads it received. Dropped with the test (the
/// task ends with the runtime).
pub(crate) struct EchoSite {
    /// Its address.
    pub(crate) addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl EchoSite {
    /// Starts the backend on a free port.
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo site");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(Self::answer(conn, counted.clone()));
            }
        });
        Self { addr, hits }
    }

    /// Request heads received so far.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn answer(mut conn: TcpStream, hits: Arc<AtomicUsize>) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            true
        })
        .await;
        if read != Ok(true) {
            return;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            head.len()
        );
        let _ = conn.write_all(answer.as_bytes()).await;
        let _ = conn.write_all(&head).await;
        let _ = conn.shutdown().await;
    }
}

/// The values of header `name` (lower case) in an echoed head, one per line.
fn echoed(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// Checks that the echoed head carried header `name` exactly once, with `value`.
#[track_caller]
fn seen(answer: &str, name: &str, value: &str) {
    assert_eq!(echoed(answer, name), [value], "{name} in {answer}");
}

/// A connection to `addr` from `source` (any 127/8 address works on loopback).
pub(crate) async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind source");
    socket.connect(addr).await.expect("connect")
}

/// Writes `bytes` from `source` and reads until the close (at most 5 s): what came back and
/// whether it closed.
pub(crate) async fn exchange(source: Ipv4Addr, addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut conn = connect_from(source, addr).await;
    let _ = conn.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// The trusted peer.
pub(crate) const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// An untrusted peer.
pub(crate) const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A request carrying forged forwarded headers.
const FORGED: &[u8] = b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";

/// sitesteer in front of the echo site, with `proxy` as the body of its `[proxy]` table;
/// `tcp` adds a TCP listener and a demo site's TCP endpoint.
pub(crate) async fn proxy_for(
    echo: &EchoSite,
    proxy: &str,
    tcp: Option<(SocketAddr, SocketAddr)>,
) -> Sitesteer {
    let (listen, endpoint) = match tcp {
        Some((listen, site)) => (
            format!("tcp = \"{listen}\"\n\n"),
            format!("tcp = \"{site}\"\n"),
        ),
        None => (String::new(), String::new()),
    };
    let config = format!(
        "{listen}[[site]]\nname = \"echo\"\n[site.endpoints]\nhttp = \"{}\"\n{endpoint}\n[[probe]]\nkind = \"tcp\"\nendpoint = \"http\"\n\n[proxy]\n{proxy}\n",
        echo.addr
    );
    let s = Sitesteer::start_logging(
        &config,
        "info,sitesteer::tcp=debug,pingora_proxy=error,pingora_core=error",
    )
    .await;
    let up = wait_until(Duration::from_secs(10), || async {
        s.state_of("echo").await == "up"
    })
    .await;
    assert!(
        up.is_some(),
        "the echo site never came up; log:\n{}",
        s.log()
    );
    s
}

#[tokio::test]
async fn a_forged_client_address_is_replaced_and_a_trusted_proxy_s_chain_extended() {
    let echo = EchoSite::start().await;
    // Nobody trusted (the default): the site sees exactly the client's own address.
    let proxy = proxy_for(&echo, "", None).await;
    let (answer, _) = exchange(LOCAL, proxy.http, FORGED).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    seen(&answer, "x-forwarded-for", "127.0.0.1");
    seen(&answer, "forwarded", "for=127.0.0.1;proto=http");
    seen(&answer, "x-forwarded-proto", "http");
    drop(proxy);

    // 127.0.0.1 trusted: its chain is kept and extended; 127.0.0.2's is still replaced.
    let proxy = proxy_for(&echo, "trusted_proxies = [\"127.0.0.1/32\"]", None).await;
    let (answer, _) = exchange(LOCAL, proxy.http, FORGED).await;
    seen(&answer, "x-forwarded-for", "6.6.6.6, 127.0.0.1");
    seen(
        &answer,
        "forwarded",
        "for=6.6.6.6;proto=https, for=127.0.0.1;proto=http",
    );
    seen(&answer, "x-forwarded-proto", "https");
    let (answer, _) = exchange(OTHER, proxy.http, FORGED).await;
    seen(&answer, "x-forwarded-for", "127.0.0.2");
    seen(&answer, "forwarded", "for=127.0.0.2;proto=http");
}

/// A v2 header: PROXY command, TCP over IPv4 or IPv6, `src` to `dst`.
fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
    let mut addrs = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11);
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            h.push(0x21);
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        _ => panic!("one family"),
    }
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(&addrs);
    h
}

fn with(header: &[u8], rest: &[u8]) -> Vec<u8> {
    [header, rest].concat()
}

#[tokio::test]
async fn proxy_protocol_from_a_trusted_balancer_names_the_client_on_http_and_tcp() {
    let echo = EchoSite::start().await;
    let ports = [free_port(), free_port()];
    let demo = DemoSite::start_with_tcp("t", ports[0], ports[1]).await;
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let site_tcp = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let proxy = proxy_for(
        &echo,
        "trusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = [\"http\", \"tcp\"]",
        Some((tcp, site_tcp)),
    )
    .await;
    let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();

    // HTTP, v1 and v2 (IPv6): the header's client is the one the site sees, and its own
    // forged X-Forwarded-For is dropped (the client is not a trusted proxy).
    let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 443\r\n";
    let (answer, _) = exchange(LOCAL, proxy.http, &with(v1, FORGED)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}; log:\n{}",
        proxy.log()
    );
    seen(&answer, "x-forwarded-for", "203.0.113.9");
    seen(&answer, "forwarded", "for=203.0.113.9;proto=http");
    let six: SocketAddr = "[2001:db8::9]:40001".parse().unwrap();
    let v2_six = v2(six, "[2001:db8::1]:443".parse().unwrap());
    let (answer, _) = exchange(LOCAL, proxy.http, &with(&v2_six, FORGED)).await;
    seen(&answer, "x-forwarded-for", "2001:db8::9");
    seen(&answer, "forwarded", "for=\"[2001:db8::9]\";proto=http");

    // TCP, v1 and v2: the JSON-RPC after the header reaches the site intact, and the TCP
    // plane knows the client by the header's address.
    let ping = b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n";
    let v1_tcp = b"PROXY TCP4 198.51.100.4 10.0.0.1 40002 7000\r\n";
    let v2_tcp = v2("198.51.100.5:40003".parse().unwrap(), dst);
    for (header, client) in [
        (&v1_tcp[..], "198.51.100.4:40002"),
        (&v2_tcp[..], "198.51.100.5:40003"),
    ] {
        let mut conn = connect_from(LOCAL, tcp).await;
        conn.write_all(&with(header, ping)).await.expect("write");
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(&mut conn).read_line(&mut line),
        )
        .await;
        assert!(
            read.is_ok() && line.contains("\"id\":7") && line.contains("\"result\""),
            "tcp through PROXY {client}: {line:?}; log:\n{}",
            proxy.log()
        );
        drop(conn);
        let logged = wait_until(Duration::from_secs(5), || async {
            proxy
                .log()
                .lines()
                .any(|l| l.contains("tcp connection ended") && l.contains(client))
        })
        .await;
        assert!(
            logged.is_some(),
            "no tcp log line for {client}; log:\n{}",
            proxy.log()
        );
    }

    // A trusted peer without a header: closed at once with no answer, and a warning.
    for (listener, addr, bytes) in [
        (
            "http",
            proxy.http,
            &b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ),
        ("tcp", tcp, &ping[..]),
    ] {
        let (answer, closed) = exchange(LOCAL, addr, bytes).await;
        assert!(
            closed && answer.is_empty(),
            "{listener} without a header: {answer:?}"
        );
        let series =
            format!("sitesteer_refused_total{{listener=\"{listener}\",reason=\"proxy_missing\"}}");
        assert_eq!(proxy.metric(&series).await, 1.0, "{series}");
    }
    assert!(
        proxy.log().contains("a trusted proxy sent no PROXY header"),
        "no clear log line; log:\n{}",
        proxy.log()
    );

    // An untrusted peer that sends a header (a forged address) is closed unanswered; one
    // that sends none is served under its own address.
    for (listener, addr, bytes) in [
        ("http", proxy.http, with(v1, FORGED)),
        ("tcp", tcp, with(v1_tcp, ping)),
        ("http", proxy.http, with(&v2_six, FORGED)),
        ("tcp", tcp, with(&v2_tcp, ping)),
    ] {
        let (answer, closed) = exchange(OTHER, addr, &bytes).await;
        assert!(
            closed && answer.is_empty(),
            "{listener} untrusted PROXY: {answer:?}"
        );
    }
    for listener in ["http", "tcp"] {
        let series = format!(
            "sitesteer_refused_total{{listener=\"{listener}\",reason=\"proxy_untrusted\"}}"
        );
        assert_eq!(proxy.metric(&series).await, 2.0, "{series}");
    }
    let (answer, _) = exchange(OTHER, proxy.http, FORGED).await;
    seen(&answer, "x-forwarded-for", "127.0.0.2");
    for (listener, version, n) in [
        ("http", "v1", 1),
        ("http", "v2", 1),
        ("tcp", "v1", 1),
        ("tcp", "v2", 1),
    ] {
        let series = format!("sitesteer_proxy_protocol_headers_total{{listener=\"{listener}\",version=\"{version}\"}}");
        assert_eq!(proxy.metric(&series).await, f64::from(n), "{series}");
    }
    drop(demo);
}

/// On TLS listeners the PROXY header comes before the ClientHello: it is read from the raw
/// socket before the handshake, and the site sees the header's client with `https`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_comes_before_the_tls_handshake() {
    use tokio_rustls::rustls::pki_types::ServerName;

    let echo = EchoSite::start().await;
    let ports = [free_port(), free_port()];
    let demo = DemoSite::start_with_tcp("t", ports[0], ports[1]).await;
    let pki = crate::tls::Pki::new("sitesteer test CA");
    let files = crate::harness::Scratch::new("pp-tls");
    let (cert, key) = pki.leaf(&["localhost"]);
    let cert_file = crate::tls::put(&files.0, "cert.pem", &cert);
    let key_file = crate::tls::put(&files.0, "key.pem", &key);
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = proxy_for(
        &echo,
        &format!("trusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol = [\"http\", \"tcp\"]\n\n[tls]\ncert_file = \"{cert_file}\"\nkey_file = \"{key_file}\""),
        Some((tcp, SocketAddr::from(([127, 0, 0, 1], ports[1])))),
    )
    .await;
    let tls = crate::tls::client(&pki.ca_pem(), tokio_rustls::rustls::DEFAULT_VERSIONS);
    let name = || ServerName::try_from("localhost").expect("name");

    // HTTPS behind PROXY v1.
    let mut conn = connect_from(LOCAL, proxy.http).await;
    conn.write_all(b"PROXY TCP4 203.0.113.77 10.0.0.1 40000 443\r\n")
        .await
        .expect("header");
    let mut conn = tls
        .connect(name(), conn)
        .await
        .expect("TLS after the PROXY header");
    conn.write_all(FORGED).await.expect("request");
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}; log:\n{}",
        proxy.log()
    );
    seen(&answer, "x-forwarded-for", "203.0.113.77");
    seen(&answer, "forwarded", "for=203.0.113.77;proto=https");
    seen(&answer, "x-forwarded-proto", "https");

    // TLS over raw TCP behind PROXY v2.
    let mut conn = connect_from(LOCAL, tcp).await;
    conn.write_all(&v2(
        "198.51.100.77:40001".parse().unwrap(),
        "10.0.0.1:7000".parse().unwrap(),
    ))
    .await
    .expect("header");
    let mut conn = tls
        .connect(name(), conn)
        .await
        .expect("TLS after the v2 header");
    conn.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"ping\"}\n")
        .await
        .expect("ping");
    let mut line = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(&mut conn).read_line(&mut line),
    )
    .await;
    assert!(line.contains("\"id\":8"), "{line:?}; log:\n{}", proxy.log());
    drop(conn);
    let logged = wait_until(Duration::from_secs(5), || async {
        proxy
            .log()
            .lines()
            .any(|l| l.contains("tcp connection ended") && l.contains("198.51.100.77:40001"))
    })
    .await;
    assert!(logged.is_some(), "no tcp log line; log:\n{}", proxy.log());

    // From an untrusted peer the header is refused before any handshake.
    for addr in [proxy.http, tcp] {
        let mut conn = connect_from(OTHER, addr).await;
        conn.write_all(b"PROXY TCP4 203.0.113.78 10.0.0.1 40000 443\r\n")
            .await
            .expect("header");
        let refused = tls.connect(name(), conn).await;
        assert!(refused.is_err(), "TLS after an untrusted PROXY header");
    }
    for listener in ["http", "tcp"] {
        let series = format!(
            "sitesteer_refused_total{{listener=\"{listener}\",reason=\"proxy_untrusted\"}}"
        );
        assert_eq!(proxy.metric(&series).await, 1.0, "{series}");
    }
    drop(demo);
}
