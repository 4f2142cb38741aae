//! A site killed under steady traffic: traffic moves within a fraction of a second, no
//! request fails, and the site returns after recovery, with hysteresis.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{free_port, get, site_tables, DemoSite, Sitesteer};
use crate::traffic::{assert_none_failed, served_by, Traffic};

const PROBES: &str = "[health]\nrise = 5\nfall = 2\n\n[proxy]\nread_timeout = \"2s\"\n\n[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\njitter = \"5ms\"\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_costs_no_request_and_comes_back_with_hysteresis() {
    let ports = [free_port(), free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let mut a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let _c = DemoSite::start("c", ports[2]).await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1)), ("c", 1, addr(2))])
    ))
    .await;

    let traffic = Traffic::start(proxy.http, 4, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = traffic.now();
    a.proc.kill9();
    let down = proxy.wait_state("a", "down", Duration::from_secs(2)).await;
    assert!(
        down.is_some(),
        "a was not marked down; log:\n{}",
        proxy.log()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    let restarted = DemoSite::start("a", ports[0]).await;
    let restarted_at = traffic.now();
    let up_after = proxy
        .wait_state("a", "up", Duration::from_secs(5))
        .await
        .expect("a came back up");
    let up_at = traffic.now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let outcomes = traffic.stop().await;

    assert_none_failed(&outcomes, "across the kill and the restart");
    assert!(
        served_by(&outcomes, "a", Duration::ZERO, killed_at) > 10,
        "a served before the kill"
    );
    let moved = killed_at + Duration::from_millis(300);
    assert_eq!(
        served_by(&outcomes, "a", moved, restarted_at),
        0,
        "traffic left a within 300ms of the kill"
    );
    assert!(served_by(&outcomes, "b", moved, restarted_at) > 10);
    assert_eq!(
        served_by(
            &outcomes,
            "c",
            Duration::ZERO,
            up_at + Duration::from_secs(1)
        ),
        0,
        "tier 1 stays idle while tier 0 has a site"
    );
    // rise = 5 at a 50ms interval, probing every quarter interval while the outcome changes:
    // no way back in fewer than four quarter intervals after the first pass.
    assert!(
        up_after >= Duration::from_millis(45),
        "a came back after only {up_after:?}: no hysteresis"
    );
    assert!(
        served_by(
            &outcomes,
            "a",
            up_at + Duration::from_millis(100),
            Duration::from_secs(3600)
        ) > 5,
        "traffic returned to a"
    );
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_site_down_panic_mode_still_serves() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let a = DemoSite::start("a", ports[0]).await;
    let b = DemoSite::start("b", ports[1]).await;
    let proxy = Sitesteer::start(&format!(
        "{PROBES}{}",
        site_tables(&[("a", 0, addr(0)), ("b", 1, addr(1))])
    ))
    .await;
    a.set_mode("error").await;
    b.set_mode("error").await;
    assert!(proxy
        .wait_state("a", "down", Duration::from_secs(2))
        .await
        .is_some());
    assert!(proxy
        .wait_state("b", "down", Duration::from_secs(2))
        .await
        .is_some());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let r = get(proxy.http, "/").await.expect("served in panic mode");
        assert_eq!(r.status, 500, "the sites' own answer passes through");
        seen.insert(r.header("x-sitesteer-site").to_string());
    }
    assert_eq!(
        seen.len(),
        2,
        "panic mode spreads over every site: {seen:?}"
    );
    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("sitesteer_panic_mode 1"), "{text}");
    assert!(
        !text.contains("sitesteer_panic_decisions_total 0"),
        "{text}"
    );
}
