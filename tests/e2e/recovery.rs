//! A site that comes back: up again within `rise` probe intervals (the failures it collected
//! while down no longer hold it out), then, with `health.slow_start`, a share of traffic that
//! grows instead of a flood.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{free_port, site_tables, DemoSite, Sitesteer};
use crate::traffic::{assert_none_failed, served_by, Outcome, Traffic};

/// `rise` 2 at a 100 ms interval: up in about 200 ms once the site answers; the rest is room
/// for a busy machine. Before, the site stayed degraded for up to `health.window` (10 s).
const BACK_WITHIN: Duration = Duration::from_millis(1500);

/// The share of the outcomes sent in `[from, to)` that `site` served.
fn share(outcomes: &[Outcome], site: &str, from: Duration, to: Duration) -> f64 {
    let all = outcomes
        .iter()
        .filter(|o| o.sent >= from && o.sent < to && o.result.is_ok())
        .count();
    served_by(outcomes, site, from, to) as f64 / all.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_back_from_down_is_up_within_rise_intervals_and_ramps_over_slow_start() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let mut a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let config = format!(
        "[health]\nrise = 2\nfall = 2\nslow_start = \"3s\"\n\n\
         [[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n{}",
        site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    );
    let proxy = Sitesteer::start(&config).await;
    let traffic = Traffic::start(proxy.http, 6, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(500)).await;

    a.proc.kill9();
    assert!(
        proxy
            .wait_state("a", "down", Duration::from_secs(3))
            .await
            .is_some(),
        "a goes down; log:\n{}",
        proxy.log()
    );
    // Down long enough that most of its window is failed probes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _a = DemoSite::start("a", ports[0]).await;
    let back = proxy.wait_state("a", "up", BACK_WITHIN).await;
    let up_at = traffic.now();
    let sites = proxy.sites().await;
    assert!(
        back.is_some(),
        "a answers again but is not up within {BACK_WITHIN:?}: {}",
        sites["sites"][0]
    );
    eprintln!(
        "a was up {:?} after it answered again",
        back.unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let outcomes = traffic.stop().await;

    assert_none_failed(&outcomes, "across the kill, the restart and the ramp");
    let second = Duration::from_secs(1);
    let early = share(&outcomes, "a", up_at, up_at + second);
    let late = share(&outcomes, "a", up_at + 2 * second, up_at + 3 * second);
    eprintln!("a's share of traffic: {early:.2} in its first second back, {late:.2} in its third");
    // Weights equal: a warm a takes about half. Over the first second of a 3 s slow start
    // its weight is 5-37% of b's (a share of 5-27%); over the third, 68-100% (40-50%).
    assert!(
        early < 0.3,
        "a is not flooded when it comes back: {early:.2}"
    );
    assert!(
        late > early && late > 0.3,
        "a's share grows: {early:.2} then {late:.2}"
    );
}
