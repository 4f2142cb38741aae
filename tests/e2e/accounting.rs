//! Steering's accounting, the same on every path: `sitesteer_retries_total` counts a retry
//! only when another site takes the request (HTTP streaming, checked exchanges and TCP
//! alike, within `proxy.retries`), `sitesteer_panic_decisions_total` counts TCP decisions
//! too, and `sitesteer_panic_mode` has one writer, the published Snapshot, so requests of
//! one endpoint kind cannot set it against what the admin API says.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{free_port, get, metric_sum as metric, request, Sitesteer};

/// Fast tcp probes of every site's `tcp` endpoint, and two retries.
const PROBES: &str = "[health]\nrise = 2\nfall = 2\n\n[proxy]\nretries = 2\nconnect_timeout = \"500ms\"\n\n\
    [[probe]]\nkind = \"tcp\"\nendpoint = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\njitter = \"5ms\"\n\n";

/// Requests of each path sent per test.
const REQUESTS: usize = 4;

/// An address nothing listens on.
pub(crate) fn closed_port() -> SocketAddr {
    // Bound and released at once: nothing listens there, so a connect is refused.
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// sitesteer with a TCP listener in front of `sites` (name, its `[site.endpoints]` lines).
async fn proxy(sites: &[(&str, String)]) -> (Sitesteer, SocketAddr) {
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut body = format!("tcp = \"{tcp}\"\n\n{PROBES}");
    for (name, endpoints) in sites {
        body.push_str(&format!(
            "[[site]]\nname = \"{name}\"\n[site.endpoints]\n{endpoints}\n"
        ));
    }
    (Sitesteer::start(&body).await, tcp)
}

/// Waits until every site in `names` is down.
pub(crate) async fn all_down(proxy: &Sitesteer, names: &[&str]) {
    for name in names {
        let took = proxy.wait_state(name, "down", Duration::from_secs(5)).await;
        assert!(
            took.is_some(),
            "{name} never went down; log:\n{}",
            proxy.log()
        );
    }
}

/// One TCP connection through the proxy that no site takes: it ends without a byte. The
/// client speaks first (the proxy connects to a site only on the client's first bytes).
pub(crate) async fn tcp_refused(tcp: SocketAddr) {
    let mut stream = TcpStream::connect(tcp).await.expect("proxy tcp listener");
    stream
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
        .await
        .expect("send");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the proxy ends a connection no site takes");
    assert!(matches!(read, Ok(0) | Err(_)), "no site answered: {read:?}");
}

/// One POST down pingora's streaming path (not JSON-RPC, so not a checked exchange) that no
/// site takes: 502 (or 503 when no site can take it at all).
pub(crate) async fn streaming_post_refused(http: SocketAddr) {
    let headers = [("content-type", "application/octet-stream")];
    let body = Some("not json-rpc".to_string());
    let r = request(http, Method::POST, "/", &headers, body)
        .await
        .expect("an answer");
    assert!(
        matches!(r.status, 502 | 503),
        "every site refused: {}",
        r.status
    );
}

/// Sends `REQUESTS` requests down each path (checked GET, streaming POST, TCP) to sites
/// that all refuse connects, and checks the retries and panic decisions of each path.
async fn every_path_counts_each_retry_once(sites: usize) {
    let names: Vec<String> = (0..sites).map(|i| format!("s{i}")).collect();
    let tables: Vec<(&str, String)> = names
        .iter()
        .map(|n| {
            let endpoints = format!(
                "http = \"{}\"\ntcp = \"{}\"\n",
                closed_port(),
                closed_port()
            );
            (n.as_str(), endpoints)
        })
        .collect();
    let (proxy, tcp) = self::proxy(&tables).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    all_down(&proxy, &refs).await;
    // Every site down: panic mode, every site tried in turn, within the budget.
    let tries = sites.min(3);
    let retries_each = (tries - 1) as f64;
    let n = REQUESTS as f64;
    let retries = |label: &'static str, before: f64, after: f64| {
        assert_eq!(
            after - before,
            n * retries_each,
            "{label}: {REQUESTS} requests over {sites} refusing sites, {tries} tries each"
        );
    };

    let (r0, p0) = counts(&proxy).await;
    for _ in 0..REQUESTS {
        let r = get(proxy.http, "/").await.expect("an answer");
        assert_eq!(r.status, 502, "every site refused");
    }
    let (r1, p1) = counts(&proxy).await;
    retries("checked GET", r0, r1);
    assert_eq!(p1 - p0, n * tries as f64, "checked GET: panic decisions");

    for _ in 0..REQUESTS {
        streaming_post_refused(proxy.http).await;
    }
    let (r2, p2) = counts(&proxy).await;
    retries("streaming POST", r1, r2);
    assert_eq!(p2 - p1, n * tries as f64, "streaming POST: panic decisions");

    for _ in 0..REQUESTS {
        tcp_refused(tcp).await;
    }
    let (r3, p3) = counts(&proxy).await;
    retries("TCP", r2, r3);
    assert_eq!(p3 - p2, n * tries as f64, "TCP: panic decisions");

    assert_eq!(metric(proxy.admin, "sitesteer_panic_mode").await, 1.0);
    assert_eq!(proxy.sites().await["panic"], true);
}

/// (retries, panic decisions) so far.
async fn counts(proxy: &Sitesteer) -> (f64, f64) {
    (
        metric(proxy.admin, "sitesteer_retries_total").await,
        metric(proxy.admin, "sitesteer_panic_decisions_total").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_refusing_site_is_never_counted_as_retried() {
    every_path_counts_each_retry_once(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_refusing_sites_with_two_retries_count_two_per_request_on_every_path() {
    every_path_counts_each_retry_once(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_is_the_snapshots_not_the_last_requests() {
    // `t` serves only raw TCP and is up; `h`, the only site with an HTTP endpoint, is down.
    // HTTP requests are steered to `h` in panic, but the Snapshot is not in panic mode: `t`
    // is up. The gauge must say what the admin API says.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let t_tcp = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        // Accepts probes (and anything else) until the test ends.
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let sites = [
        ("t", format!("tcp = \"{t_tcp}\"\n")),
        (
            "h",
            format!(
                "http = \"{}\"\ntcp = \"{}\"\n",
                closed_port(),
                closed_port()
            ),
        ),
    ];
    let (proxy, _tcp) = proxy(&sites).await;
    all_down(&proxy, &["h"]).await;
    assert!(proxy
        .wait_state("t", "up", Duration::from_secs(5))
        .await
        .is_some());
    let (_, p0) = counts(&proxy).await;
    for _ in 0..REQUESTS {
        let r = get(proxy.http, "/").await.expect("an answer");
        assert_eq!(r.status, 502, "h refused");
    }
    let (_, p1) = counts(&proxy).await;
    assert_eq!(
        p1 - p0,
        REQUESTS as f64,
        "each request steered to h in panic"
    );
    assert_eq!(proxy.sites().await["panic"], false, "t is up");
    assert_eq!(
        metric(proxy.admin, "sitesteer_panic_mode").await,
        0.0,
        "one writer: the Snapshot, which is not in panic mode"
    );
    accept.abort();
}
