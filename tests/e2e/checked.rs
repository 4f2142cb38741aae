//! Checked exchanges: a wrong JSON-RPC answer or a cut answer to a request that is safe to
//! repeat goes to the next site and never reaches the client; a request with a side effect
//! is never sent twice, so its site's own answer passes through.

use std::time::Duration;

use serde_json::json;

use crate::harness::{free_port, get, mcp, site_tables, DemoSite, Sitesteer};

/// `sitesteer_retries_total{site="…"}` in a `/metrics` answer.
fn retries_of(metrics: &str, site: &str) -> f64 {
    let series = format!("sitesteer_retries_total{{site=\"{site}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_cut_answers_go_to_the_next_site_but_side_effects_are_not_repeated() {
    let a = DemoSite::start("a", free_port()).await;
    let b = DemoSite::start("b", free_port()).await;
    // `a` takes every first try (tier 0); `b` is the backup. The probes only check
    // `/health`, so `a` stays up while it answers MCP wrongly: only the data path saves
    // the requests.
    let config = format!(
        "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\n\n{}",
        site_tables(&[("a", 0, a.addr), ("b", 1, b.addr)])
    );
    let proxy = Sitesteer::start(&config).await;
    proxy.wait_all_up(&["a", "b"], Duration::from_secs(5)).await;
    a.set_mode("badrpc").await;

    // A tool nobody marked idempotent: sent once, to `a`, and its wrong answer passes.
    let call = json!({"name": "increment", "arguments": {}});
    let answer = mcp(proxy.http, "tools/call", call.clone(), None)
        .await
        .expect("increment answered");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-sitesteer-site"), "a");
    assert_eq!(answer.json()["id"], "not-yours", "{:?}", answer.json());
    let on_b = mcp(b.addr, "tools/call", call, None).await.expect("b");
    assert_eq!(
        on_b.json()["result"]["structuredContent"]["value"],
        1,
        "the increment was repeated on b: {:?}",
        on_b.json()
    );

    // Calls that only read: every answer is the right one, from `b`.
    for i in 0..30 {
        let method = if i % 2 == 0 { "ping" } else { "tools/list" };
        let answer = mcp(proxy.http, method, json!({}), None)
            .await
            .unwrap_or_else(|e| panic!("{method} #{i} failed: {e}"));
        let body = answer.json();
        assert_eq!(answer.status, 200, "{method} #{i}: {body:?}");
        assert_eq!(body["id"], 1, "{method} #{i} got a wrong answer: {body:?}");
        assert!(body.get("result").is_some(), "{method} #{i}: {body:?}");
        assert_eq!(answer.header("x-sitesteer-site"), "b", "{method} #{i}");
    }

    // Answers cut mid-way: every GET still gets a whole answer.
    a.set_mode("drop").await;
    for i in 0..30 {
        let answer = get(proxy.http, "/")
            .await
            .unwrap_or_else(|e| panic!("GET #{i} failed: {e}"));
        assert_eq!(answer.status, 200, "GET #{i}");
        assert_eq!(answer.header("x-sitesteer-site"), "b", "GET #{i}");
    }

    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let retried = retries_of(&String::from_utf8_lossy(&metrics.body), "a");
    assert!(
        retried >= 2.0,
        "the wrong and cut answers of a were not retried ({retried}); log:\n{}",
        proxy.log()
    );
}
