//! Load-aware choice and shedding (issue 15): a site that slows down under load loses
//! traffic at once (power of two choices over peak-EWMA cost), and when every site is at
//! `max_in_flight` the excess is shed with 503 and `Retry-After` within
//! `proxy.queue_timeout`, never left hanging.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use crate::harness::{free_port, get, mcp, request, site_tables, DemoSite, Sitesteer};
use crate::traffic::{assert_none_failed, served_by, Traffic};

/// Probes that keep a slow site `up` with the same score as a fast one (the latency of
/// 300ms is far below the reference and the degraded threshold), and no hedging: the
/// shares are the steering's alone.
const KEEP_UP: &str = "[health]\nlatency_reference = \"1h\"\ndegraded_latency = \"10s\"\n\n[proxy]\nhedge_budget = 0\nread_timeout = \"3s\"\n\n[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"500ms\"\ntimeout = \"450ms\"\n\n";

/// Puts `site` in `slow` mode with `delay_ms`.
async fn slow(site: &DemoSite, delay_ms: u64) {
    let body = json!({"mode": "slow", "delay_ms": delay_ms}).to_string();
    let r = request(site.addr, Method::POST, "/control", &[], Some(body))
        .await
        .expect("control");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_slowed_under_load_gets_clearly_less_than_its_weight_share() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let fast = DemoSite::start("fast", ports[0]).await;
    let slowed = DemoSite::start("slow", ports[1]).await;
    let proxy = Sitesteer::start(&format!(
        "{KEEP_UP}{}",
        site_tables(&[("fast", 0, addr(0)), ("slow", 0, addr(1))])
    ))
    .await;
    proxy
        .wait_all_up(&["fast", "slow"], Duration::from_secs(5))
        .await;
    slow(&slowed, 50).await;
    let traffic = Traffic::start(proxy.http, 8, Duration::from_millis(1));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = traffic.now();
    let outcomes = traffic.stop().await;
    assert_none_failed(&outcomes, "a site slowed by 50ms");
    // After the first second, when every site's latency was seen.
    let from = Duration::from_secs(1);
    let to_slow = served_by(&outcomes, "slow", from, end);
    let to_fast = served_by(&outcomes, "fast", from, end);
    let share = to_slow as f64 / (to_slow + to_fast).max(1) as f64;
    eprintln!(
        "slowed site: {to_slow} of {} requests ({share:.3}); weight share 0.5",
        to_slow + to_fast
    );
    assert!(
        to_fast > 100,
        "too little traffic to judge: {to_fast} + {to_slow}"
    );
    assert!(
        share < 0.2,
        "the slowed site kept {share:.3} of the traffic (weight share 0.5)"
    );
    // Both sites stayed up with equal weight: the choice, not health, moved the traffic.
    assert_eq!(proxy.state_of("slow").await, "up");
    drop(fast);
}

/// Sends `n` concurrent requests (every third a safe MCP call, which takes the checked
/// exchange; the others GETs, pingora's path) and returns each answer with its time.
async fn burst(
    proxy: SocketAddr,
    n: usize,
) -> Vec<(Result<crate::harness::Answer, String>, Duration, bool)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                let started = Instant::now();
                let rpc = i % 3 == 0;
                let answer = if rpc {
                    mcp(proxy, "tools/list", json!({}), None).await
                } else {
                    get(proxy, "/health").await
                };
                (answer, started.elapsed(), rpc)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_site_at_max_in_flight_the_excess_gets_503_with_retry_after_and_nothing_hangs() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let a = DemoSite::start("a", ports[0]).await;
    let b = DemoSite::start("b", ports[1]).await;
    let tables = site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
        .replace("tier = 0\n", "tier = 0\nmax_in_flight = 1\n");
    let proxy = Sitesteer::start(&format!("{KEEP_UP}{tables}")).await;
    proxy.wait_all_up(&["a", "b"], Duration::from_secs(5)).await;
    // Each request holds its site for 300ms, three times proxy.queue_timeout (100ms).
    a.set_mode("slow").await;
    b.set_mode("slow").await;

    let answers = burst(proxy.http, 12).await;
    let mut served = 0;
    let mut shed = 0;
    for (answer, took, rpc) in &answers {
        let answer = answer
            .as_ref()
            .expect("every request is answered, none hangs");
        match answer.status {
            200 => {
                served += 1;
                assert!(!answer.header("x-sitesteer-site").is_empty());
            }
            503 => {
                shed += 1;
                assert_eq!(answer.header("retry-after"), "1", "{answer:?}");
                // Shed within queue_timeout plus slack, not after a site's 300ms.
                assert!(*took < Duration::from_millis(290), "shed after {took:?}");
                let body: Value = serde_json::from_slice(&answer.body).expect("JSON body");
                if *rpc {
                    assert_eq!(body["jsonrpc"], "2.0", "{body}");
                    assert_eq!(body["id"], 1, "{body}");
                    assert_eq!(body["error"]["code"], -32000, "{body}");
                } else {
                    assert!(body["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("max_in_flight")));
                }
            }
            other => panic!("unexpected HTTP {other}: {answer:?}"),
        }
    }
    assert!(
        served >= 2,
        "each site serves one at a time: {served} served"
    );
    assert!(shed >= 6, "the excess is shed: {shed} of {}", answers.len());
    assert!(served + shed == answers.len());
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    let counted: f64 = text
        .lines()
        .find(|l| l.starts_with("sitesteer_shed_total{listener=\"http\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(counted as usize, shed, "{text}");
    assert!(
        text.contains("sitesteer_site_in_flight{site=\"a\"}"),
        "{text}"
    );

    // Once the burst is over, requests are served again.
    a.set_mode("ok").await;
    b.set_mode("ok").await;
    let after = get(proxy.http, "/health").await.expect("answer");
    assert_eq!(after.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_of_a_full_site_reads_one_json_rpc_error_line_within_queue_timeout() {
    let (http_port, tcp_port) = (free_port(), free_port());
    let site = DemoSite::start_with_tcp("t", http_port, tcp_port).await;
    let listen_tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Sitesteer::start(&format!(
        "tcp = \"{listen_tcp}\"\n\n{KEEP_UP}[[site]]\nname = \"t\"\nmax_in_flight = 1\n\
         [site.endpoints]\nhttp = \"127.0.0.1:{http_port}\"\ntcp = \"127.0.0.1:{tcp_port}\"\n"
    ))
    .await;
    proxy.wait_all_up(&["t"], Duration::from_secs(5)).await;
    // One slow HTTP request holds the site's only slot for 300ms.
    site.set_mode("slow").await;
    let http = proxy.http;
    let holder = tokio::spawn(async move { get(http, "/health").await });
    tokio::time::sleep(Duration::from_millis(60)).await;

    let started = Instant::now();
    let mut conn = tokio::io::BufReader::new(
        tokio::net::TcpStream::connect(listen_tcp)
            .await
            .expect("connect"),
    );
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    conn.get_mut()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
        .await
        .expect("write");
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_line(&mut line))
        .await
        .expect("an answer, not a hang")
        .expect("read");
    let took = started.elapsed();
    let answer: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
    assert_eq!(answer["error"]["code"], -32000, "{line}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_in_flight")),
        "{line}"
    );
    assert!(took < Duration::from_millis(230), "shed after {took:?}");
    // The request that held the slot was served.
    let held = holder.await.expect("task").expect("answer");
    assert_eq!(held.status, 200);
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("sitesteer_shed_total{listener=\"tcp\"} 1"),
        "{text}"
    );
}
