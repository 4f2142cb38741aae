//! Silent failures: a site that hangs (`SIGSTOP`: the kernel still accepts connections,
//! nothing answers). Safe requests in flight on it are hedged to the other site once they
//! are slower than the site normally is, and rescued when it is judged down, so none fails
//! and none waits for `proxy.read_timeout`. A side-effecting call is never sent twice: when
//! its site is judged down it is told at once that its outcome is unknown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, get, mcp, site_tables, DemoSite, Sitesteer};
use crate::traffic::{assert_none_failed, served_by, Traffic};

/// The slowest a safe request may be while its site hangs: the hedge deadline (the 50 ms
/// floor, as the sites answer in a few ms) plus one probe interval would be 150 ms; this
/// leaves room for a debug build on a busy 2-core machine. The default `read_timeout` is 30 s.
const SLOWEST: Duration = Duration::from_millis(500);

/// How long the site hangs in the side-effect test.
const HANG: Duration = Duration::from_secs(3);
/// By when a call cut by the hang hears its outcome is unknown: detection (two failed probes
/// 100 ms apart, 80 ms timeout) plus `close_grace` (100 ms) is about 400 ms; well before the
/// site wakes (3 s), let alone `read_timeout` (30 s).
const HEARS_WITHIN: Duration = Duration::from_millis(1500);

/// Two demo sites, `a` and `b`, behind sitesteer probing every 100 ms.
struct Lab {
    a: DemoSite,
    b: DemoSite,
    proxy: Sitesteer,
}

impl Lab {
    async fn start() -> Self {
        let ports = [free_port(), free_port()];
        let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
        let a = DemoSite::start("a", ports[0]).await;
        let b = DemoSite::start("b", ports[1]).await;
        let config = format!(
            "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n{}",
            site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
        );
        let proxy = Sitesteer::start(&config).await;
        Self { a, b, proxy }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_site_costs_no_safe_request_and_no_request_waits_for_the_read_timeout() {
    let Lab { a, b: _b, proxy } = Lab::start().await;
    let traffic = Traffic::start(proxy.http, 8, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(600)).await;

    a.proc.signal("-STOP");
    let frozen_at = traffic.now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let thawed_at = traffic.now();
    a.proc.signal("-CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcomes = traffic.stop().await;

    assert_none_failed(&outcomes, "while a hung");
    let slowest = outcomes.iter().max_by_key(|o| o.took).expect("traffic ran");
    eprintln!(
        "a hung for 2 s under 8 clients: {} requests, slowest {:?} (sent at {:?}, hang at {:?})",
        outcomes.len(),
        slowest.took,
        slowest.sent,
        frozen_at
    );
    assert!(
        slowest.took < SLOWEST,
        "no request may wait for the hung site: the slowest took {:?} (sent at {:?}, hang from {:?} to {:?})",
        slowest.took,
        slowest.sent,
        frozen_at,
        thawed_at
    );
    // The healthy site serves throughout the hang, in every quarter second of it.
    let quarter = Duration::from_millis(250);
    let mut from = frozen_at;
    while from + quarter <= thawed_at {
        assert!(
            served_by(&outcomes, "b", from, from + quarter) > 0,
            "b served nothing from {from:?} to {:?}",
            from + quarter
        );
        from += quarter;
    }
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    let counted = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("site=\"a\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (hedged, rescued) = (
        counted("sitesteer_hedges_total"),
        counted("sitesteer_rescues_total"),
    );
    eprintln!("hedged {hedged}, rescued {rescued} requests away from a");
    assert!(
        hedged + rescued > 0.0,
        "requests in flight on the hung site were hedged or rescued:\n{text}"
    );
}

/// How one side-effecting call ended.
struct Call {
    took: Duration,
    status: u16,
    body: Value,
    site: String,
}

/// `tools/call increment` at `addr` (the proxy, or a site itself).
async fn increment(addr: SocketAddr) -> Result<Call, String> {
    let asked = Instant::now();
    let answer = mcp(
        addr,
        "tools/call",
        json!({"name": "increment", "arguments": {}}),
        None,
    )
    .await?;
    Ok(Call {
        took: asked.elapsed(),
        status: answer.status,
        body: serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
        site: answer.header("x-sitesteer-site").to_string(),
    })
}

/// The counter of the demo site at `addr`: one more direct `increment`, less one.
async fn counter_of(addr: SocketAddr) -> u64 {
    let call = increment(addr).await.expect("the site answers");
    call.body["result"]["structuredContent"]["value"]
        .as_u64()
        .expect("a counter value")
        - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_effecting_call_on_a_hung_site_is_never_repeated_and_hears_at_detection() {
    let Lab { a, b, proxy } = Lab::start().await;
    let http = proxy.http;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut calls = Vec::new();
                // Bounded: the caller's stop, and at most 5,000 calls.
                while !stop.load(Ordering::Relaxed) && calls.len() < 5_000 {
                    calls.push(increment(http).await);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                calls
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.proc.signal("-STOP");
    tokio::time::sleep(HANG).await;
    a.proc.signal("-CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for w in workers {
        calls.extend(w.await.expect("worker"));
    }

    let calls: Vec<Call> = calls
        .into_iter()
        .map(|c| c.expect("every call is answered, none times out"))
        .collect();
    let cut: Vec<&Call> = calls.iter().filter(|c| c.status != 200).collect();
    let slowest = calls.iter().map(|c| c.took).max().unwrap_or_default();
    eprintln!(
        "{} increments, {} cut by the hang, slowest {slowest:?}",
        calls.len(),
        cut.len()
    );
    assert!(
        slowest < HEARS_WITHIN,
        "no call waits for the hung site to wake: the slowest took {slowest:?}"
    );
    assert!(!cut.is_empty(), "calls were in flight on a when it hung");
    for c in &cut {
        assert_eq!(c.status, 502, "{}", c.body);
        assert_eq!(c.body["jsonrpc"], "2.0", "{}", c.body);
        assert_eq!(c.body["id"], 1, "the request's own id: {}", c.body);
        assert_eq!(c.body["error"]["code"], -32003, "{}", c.body);
        assert_eq!(c.body["error"]["data"]["site"], "a", "{}", c.body);
        assert_eq!(c.body["error"]["data"]["outcome"], "unknown", "{}", c.body);
    }
    // Never executed twice: b ran exactly the calls it answered.
    let by_b = calls
        .iter()
        .filter(|c| c.status == 200 && c.site == "b")
        .count() as u64;
    assert_eq!(
        counter_of(b.addr).await,
        by_b,
        "b ran only what it answered"
    );
    // a ran what it answered, and perhaps the cut ones when it woke: their outcome was
    // unknown, which is what their clients were told.
    let by_a = calls
        .iter()
        .filter(|c| c.status == 200 && c.site == "a")
        .count() as u64;
    let ran_on_a = counter_of(a.addr).await;
    assert!(
        (by_a..=by_a + cut.len() as u64).contains(&ran_on_a),
        "a ran {ran_on_a}, answered {by_a}, {} cut",
        cut.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_site_that_drops_packets_moves_on_after_the_site_s_usual_connect_time() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    // Slow probes, so that the calls below reach a before the probes notice; a takes nearly
    // all the traffic.
    let config = format!(
        "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"2s\"\ntimeout = \"1s\"\n\n\
         [[site]]\nname = \"a\"\nweight = 1000\n[site.endpoints]\nhttp = \"{}\"\n\n\
         [[site]]\nname = \"b\"\nweight = 1\n[site.endpoints]\nhttp = \"{}\"\n",
        addr(0),
        addr(1)
    );
    let proxy = Sitesteer::start(&config).await;
    // Connects to a are measured (a fraction of a millisecond on loopback).
    for _ in 0..5 {
        let call = increment(proxy.http).await.expect("warm-up");
        assert_eq!(call.status, 200, "{}", call.body);
    }
    // From now on packets to a are dropped: new connections to it time out.
    let set = crate::harness::request(
        proxy.admin,
        hyper::Method::POST,
        "/api/v1/sites/a/fault",
        &[("content-type", "application/json")],
        Some(r#"{"fault":"drop"}"#.to_string()),
    )
    .await
    .expect("admin API");
    assert_eq!(set.status, 200, "{}", String::from_utf8_lossy(&set.body));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        // A fresh client connection each time, so that the proxy opens new ones to the site.
        let call = increment(proxy.http).await.expect("answered");
        assert_eq!(
            call.status, 200,
            "a connect that failed is safe to retry: {}",
            call.body
        );
        slowest = slowest.max(call.took);
    }
    eprintln!("with packets to a dropped, the slowest call took {slowest:?}");
    // connect_timeout is 1 s; the site's own connects say 50 ms (the floor) is plenty.
    assert!(
        slowest < Duration::from_millis(500),
        "a dropped SYN cost {slowest:?}, not a few times the site's usual connect time"
    );
}
