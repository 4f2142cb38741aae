//! Probes against real sites: a hung site is caught by timeout, a wrong MCP answer is caught
//! even when HTTP looks fine.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{free_port, site_tables, DemoSite, Sitesteer};
use crate::traffic::{assert_none_failed, served_by, Traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_site_is_detected_by_timeout_and_costs_no_request() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let config = format!(
        "[proxy]\nread_timeout = \"1s\"\n\n[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n{}",
        site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    );
    let proxy = Sitesteer::start(&config).await;
    let traffic = Traffic::start(proxy.http, 3, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(400)).await;

    a.proc.signal("-STOP"); // the kernel still accepts connections; nothing answers
    let frozen_at = traffic.now();
    let took = proxy.wait_state("a", "down", Duration::from_secs(3)).await;
    assert!(
        took.is_some(),
        "a hung site must go down; log:\n{}",
        proxy.log()
    );
    let sites = proxy.sites().await;
    let reason = sites["sites"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("timeout"), "reason: {reason}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = traffic.now();

    a.proc.signal("-CONT");
    assert!(
        proxy
            .wait_state("a", "up", Duration::from_secs(10))
            .await
            .is_some(),
        "a recovers"
    );
    let outcomes = traffic.stop().await;
    assert_none_failed(&outcomes, "while a hung");
    assert_eq!(
        served_by(
            &outcomes,
            "a",
            frozen_at + Duration::from_millis(300),
            after
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_json_rpc_answer_fails_the_mcp_probe_while_http_looks_fine() {
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let config = format!(
        "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n\
         [[probe]]\nkind = \"mcp\"\ninterval = \"60ms\"\ntimeout = \"50ms\"\n\n{}",
        site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    );
    let proxy = Sitesteer::start(&config).await;
    assert!(proxy
        .wait_state("a", "up", Duration::from_secs(2))
        .await
        .is_some());
    a.set_mode("badrpc").await;
    assert!(
        proxy
            .wait_state("a", "down", Duration::from_secs(2))
            .await
            .is_some(),
        "log:\n{}",
        proxy.log()
    );
    let sites = proxy.sites().await;
    let reason = sites["sites"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("bad answer"), "reason: {reason}");
    assert_eq!(proxy.state_of("b").await, "up");
    a.set_mode("ok").await;
    assert!(proxy
        .wait_state("a", "up", Duration::from_secs(3))
        .await
        .is_some());
}
