//! Silent failures cost nothing: a site that hangs (`SIGSTOP`: the kernel still accepts
//! connections, nothing answers) under steady safe MCP traffic. Requests in flight on it are
//! hedged to the other site once they are slower than the site normally is, and rescued
//! when it is judged down, so none fails and none waits for `proxy.read_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{free_port, get, site_tables, DemoSite, Sitesteer};
use crate::traffic::{assert_none_failed, served_by, Traffic};

/// The slowest a safe request may be while its site hangs: the hedge deadline (the 50 ms
/// floor, as the sites answer in a few ms) plus one probe interval would be 150 ms; this
/// leaves room for a debug build on a busy 2-core machine. The default `read_timeout` is 30 s.
const SLOWEST: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_site_costs_no_safe_request_and_no_request_waits_for_the_read_timeout() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let config = format!(
        "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n{}",
        site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    );
    let proxy = Sitesteer::start(&config).await;
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
