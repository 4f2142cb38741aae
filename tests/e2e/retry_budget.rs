//! The fleet-wide retry budget (`proxy.retry_budget`) against real processes: when every
//! site answers 5xx under a steady load, the attempts per request stay within the budget
//! (sitesteer's metrics and the sites' own counts agree), and each client gets a site's own
//! answer, never a 502 of sitesteer's making; when every site refuses connects, the connect
//! retries of every path (checked, streaming, TCP) stay within it too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;

use crate::accounting::{all_down, closed_port, streaming_post_refused, tcp_refused};
use crate::harness::{free_port, get, metric_sum, request, site_tables, FakeSite, Sitesteer};

const PROBES: &str =
    "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n";

/// `[proxy.retry_budget]` of the test: retries worth a fifth of the requests, and a reserve
/// of 2 per second over the 10 s ttl (20 in all: the run is shorter than one ttl).
const RATIO: f64 = 0.2;
const RESERVE: f64 = 2.0 * 10.0;

#[tokio::test]
async fn a_fleet_answering_5xx_everywhere_gets_no_more_attempts_than_the_budget() {
    let failing = |_: &serde_json::Value| (503, json!({"error": "overloaded"}));
    let sites = [
        FakeSite::start(failing).await,
        FakeSite::start(failing).await,
        FakeSite::start(failing).await,
    ];
    let proxy = Sitesteer::start(&format!(
        "{PROBES}[proxy]\nretries = 2\n\n[proxy.retry_budget]\nratio = {RATIO}\n\
         min_per_second = 2\nttl = \"10s\"\n\n{}",
        site_tables(&[
            ("a", 0, sites[0].addr),
            ("b", 0, sites[1].addr),
            ("c", 0, sites[2].addr),
        ])
    ))
    .await;
    proxy
        .wait_all_up(&["a", "b", "c"], Duration::from_secs(10))
        .await;
    let seen_before: usize = sites.iter().map(FakeSite::seen).sum();
    let retries_before = metric_sum(proxy.admin, "sitesteer_retries_total").await;

    // Eight clients for four seconds, each sending safe `tools/list` calls: half take a JSON
    // answer (checked exchanges), half only an event stream (pingora's path).
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (sent, http) = (sent.clone(), proxy.http);
            tokio::spawn(async move {
                let accept = if client % 2 == 0 {
                    "application/json, text/event-stream"
                } else {
                    "text/event-stream"
                };
                let headers = [("content-type", "application/json"), ("accept", accept)];
                let mut wrong = Vec::new();
                for id in 0..100_000u64 {
                    if Instant::now() >= stop {
                        break;
                    }
                    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
                    let r =
                        request(http, Method::POST, "/mcp", &headers, Some(body.to_string())).await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    match r {
                        // The site's own answer, labelled with the site that gave it.
                        Ok(r) if r.status == 503 && !r.header("x-sitesteer-site").is_empty() => {}
                        Ok(r) => wrong.push(format!("{accept}: {} {:?}", r.status, r.body)),
                        Err(e) => wrong.push(format!("{accept}: {e}")),
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for client in clients {
        wrong.extend(client.await.expect("client"));
    }
    let requests = sent.load(Ordering::SeqCst) as f64;
    assert!(requests >= 200.0, "too little load to judge: {requests}");
    assert!(
        wrong.is_empty(),
        "{} of {requests} answers were not the site's own 503: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    // What the sites saw, and what sitesteer says it sent them: every attempt is a request
    // started or one more attempt at another site (no hedge: the sites answer at once).
    let attempts = (sites.iter().map(FakeSite::seen).sum::<usize>() - seen_before) as f64;
    let retries = metric_sum(proxy.admin, "sitesteer_retries_total").await - retries_before;
    let hedges = metric_sum(proxy.admin, "sitesteer_hedges_total").await;
    assert!(
        (requests + retries + hedges - attempts).abs() <= 2.0,
        "sitesteer's count ({requests} requests + {retries} retries + {hedges} hedges) and \
         the sites' ({attempts}) disagree"
    );
    let budget = requests * (1.0 + RATIO) + RESERVE;
    eprintln!(
        "retry budget: {requests} requests, {attempts} attempts at the sites, {retries} retries, \
         {hedges} hedges; budget {budget}"
    );
    assert!(
        attempts <= budget + 2.0,
        "{attempts} attempts for {requests} requests: past the budget of {budget} \
         (without one, 1 + retries = 3 per request)"
    );
    // The budget is used, not just never reached: far more retries than the reserve alone.
    assert!(
        retries >= requests * RATIO * 0.8,
        "{retries} retries for {requests} requests"
    );
    let refused = metric_sum(
        proxy.admin,
        "sitesteer_retries_refused_total{reason=\"budget\"}",
    )
    .await;
    assert!(
        refused >= requests * 0.5,
        "{refused} refusals counted for {requests} requests"
    );
}

/// Connect failures draw from the budget too, on every path: with every site refusing
/// connects, the checked GETs, streaming POSTs and TCP connections together get no more
/// retries than `ratio` of them plus the reserve (`1 + retries` connects each without it).
#[tokio::test]
async fn a_fleet_refusing_every_connect_gets_no_more_retries_than_the_budget() {
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let names = ["a", "b", "c"];
    let mut body = format!(
        "tcp = \"{tcp}\"\n\n[health]\nrise = 2\nfall = 2\n\n[proxy]\nretries = 2\n\n\
         [proxy.retry_budget]\nratio = {RATIO}\nmin_per_second = 1\nttl = \"10s\"\n\n\
         [[probe]]\nkind = \"tcp\"\nendpoint = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n"
    );
    for name in names {
        body.push_str(&format!(
            "[[site]]\nname = \"{name}\"\n[site.endpoints]\nhttp = \"{}\"\ntcp = \"{}\"\n\n",
            closed_port(),
            closed_port()
        ));
    }
    let proxy = Sitesteer::start(&body).await;
    all_down(&proxy, &names).await;
    let retries_before = metric_sum(proxy.admin, "sitesteer_retries_total").await;
    // Panic mode: every site is tried; each refuses at once.
    const EACH: usize = 100;
    for _ in 0..EACH {
        let r = get(proxy.http, "/").await.expect("an answer");
        assert_eq!(r.status, 502, "no site answered");
        streaming_post_refused(proxy.http).await;
        tcp_refused(tcp).await;
    }
    let requests = (3 * EACH) as f64;
    let retries = metric_sum(proxy.admin, "sitesteer_retries_total").await - retries_before;
    let budget = requests * RATIO + 10.0;
    eprintln!("retry budget: {requests} refused requests, {retries} retries; budget {budget}");
    assert!(
        retries <= budget + 1.0,
        "{retries} retries for {requests} requests: past the budget of {budget} (two each \
         without one)"
    );
    assert!(retries >= requests * RATIO * 0.8, "{retries} retries");
    let refused = metric_sum(proxy.admin, "sitesteer_retries_refused_total").await;
    assert!(refused >= requests * 0.5, "{refused} refusals counted");
}
