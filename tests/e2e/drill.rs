//! `sitesteer drill` against demo sites: the report's figures agree with the traffic this
//! test observed itself, and an impossible objective exits 3.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{binary, free_port, DemoSite, Sitesteer};
use crate::traffic::{failures, Traffic};

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn config(extra_a: &str, ports: [u16; 2]) -> String {
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    format!(
        "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n\
         [[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"{}\"\n{extra_a}\n\
         [[site]]\nname = \"b\"\n[site.endpoints]\nhttp = \"{}\"\n",
        addr(0),
        addr(1)
    )
}

async fn drill(proxy: &Sitesteer, args: &[&str]) -> (i32, String, String) {
    let admin = format!("http://{}", proxy.admin);
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(["drill", "a", "--admin", &admin, "--json"])
        .args(args);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("drill ends")
        .expect("drill runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_reports_what_the_traffic_saw() {
    let ports = [free_port(), free_port()];
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let proxy = Sitesteer::start(&config("", ports)).await;

    let traffic_epoch = epoch_ms();
    let traffic = Traffic::start(proxy.http, 2, Duration::from_millis(10));
    let (code, out, err) = drill(
        &proxy,
        &["--duration", "3", "--rate", "60", "--mode", "blackhole"],
    )
    .await;
    let outcomes = traffic.stop().await;
    assert_eq!(code, 0, "drill: {err}\n{out}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    for key in [
        "site",
        "shift_ms",
        "requests",
        "failed",
        "objectives",
        "met",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    for o in report["objectives"].as_array().expect("objectives") {
        for key in ["name", "target", "measured", "met"] {
            assert!(o.get(key).is_some(), "objective lacks {key}: {o}");
        }
    }
    assert_eq!(report["site"], "a");
    assert_eq!(report["met"], true);
    assert!(report["requests"].as_u64() > Some(100), "{report}");
    assert_eq!(report["failed"], 0);

    // What this test saw on its own connections agrees with the report.
    assert!(
        failures(&outcomes).is_empty(),
        "the test's own requests failed: {:?}",
        failures(&outcomes)
    );
    let started = report["started_ms"].as_u64().expect("started_ms");
    let at = |key: &str| started + report[key].as_u64().expect(key);
    let (fault, restore) = (at("fault_at_ms"), at("restore_at_ms"));
    let shift = report["shift_ms"].as_u64().expect("shift");
    assert!(shift <= 500, "shift {shift}ms");
    let sent = |o: &crate::traffic::Outcome| traffic_epoch + o.sent.as_millis() as u64;
    // Allow one probe interval of slack on each side: the clocks are the same, the samples are not.
    let moved = fault + shift + 60;
    let on_a_while_out = outcomes
        .iter()
        .filter(|o| sent(o) > moved && sent(o) + 60 < restore && o.site == "a")
        .count();
    assert_eq!(
        on_a_while_out, 0,
        "the test saw traffic on a after the report said it moved"
    );
    let on_b_while_out = outcomes
        .iter()
        .filter(|o| sent(o) > moved && sent(o) < restore && o.site == "b")
        .count();
    assert!(
        on_b_while_out > 20,
        "the test saw traffic on b while a was out"
    );
    if let Some(back) = report["restore_ms"].as_u64() {
        let on_a_after = outcomes
            .iter()
            .filter(|o| sent(o) > restore + back + 100 && o.site == "a")
            .count();
        assert!(
            on_a_after > 0,
            "the test saw a serve again after the reported restore"
        );
    }

    // The drill is in the incidents list.
    let incidents = crate::harness::get(proxy.admin, "/api/v1/incidents")
        .await
        .expect("incidents")
        .json();
    assert!(
        incidents["incidents"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["cause"] == "drill")),
        "{incidents}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_with_an_impossible_objective_exits_3() {
    let ports = [free_port(), free_port()];
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let proxy = Sitesteer::start(&config("[site.objectives]\nshift_time = \"0ms\"\n", ports)).await;
    let (code, out, err) = drill(
        &proxy,
        &["--duration", "3", "--mode", "kill-probe", "--no-record"],
    )
    .await;
    assert_eq!(code, 3, "{err}\n{out}");
    let report: Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["met"], false);
    let shift = report["objectives"]
        .as_array()
        .and_then(|l| l.iter().find(|o| o["name"] == "shift_time"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(shift["met"], false, "{shift}");
    assert_eq!(shift["target"], "0ms");
}

/// A `hang` drill, the default mode.
async fn hang_drill(objectives: &str) -> (i32, Value, String) {
    in_path_drill(objectives, None).await
}

/// A drill whose fault acts in the path to the site (`mode`, or the default `hang`), and
/// what its report must show for every such fault: sitesteer detected it itself, nothing
/// failed, and the slowest request stayed far from any timeout.
async fn in_path_drill(objectives: &str, mode: Option<&str>) -> (i32, Value, String) {
    let ports = [free_port(), free_port()];
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let proxy = Sitesteer::start(&config(objectives, ports)).await;
    let mut args = vec!["--duration", "3", "--no-record"];
    if let Some(mode) = mode {
        args.extend(["--mode", mode]);
    }
    let (code, out, err) = drill(&proxy, &args).await;
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("JSON report: {err}\n{out}"));
    assert_eq!(
        report["mode"],
        mode.unwrap_or("hang"),
        "hang is the default mode"
    );
    eprintln!(
        "{} drill: detected in {} ms, shift {} ms, {} hedged, {} rescued, {} failed, slowest {} ms",
        report["mode"],
        report["detection_ms"],
        report["shift_ms"],
        report["hedged"],
        report["rescued"],
        report["failed"],
        report["slowest_ms"]
    );
    let detection = report["detection_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("the fault was detected: {report}"));
    assert!(
        (1..1000).contains(&detection),
        "detected by probe timeouts, not at once and not never: {detection} ms"
    );
    assert!(report["shift_ms"].as_u64() >= Some(detection), "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["slowest_ms"].as_u64() < Some(1000),
        "hedged and rescued, no request waits for the faulty site: {report}"
    );
    (code, report, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_slow_and_errors_drills_are_detected_in_the_path_and_cost_nothing() {
    for mode in ["drop", "slow", "errors"] {
        let (code, report, err) = in_path_drill("", Some(mode)).await;
        assert_eq!(code, 0, "{mode}: {err}\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_drill_that_cannot_meet_its_shift_time_exits_3() {
    let (code, report, err) = hang_drill("[site.objectives]\nshift_time = \"1ms\"\n").await;
    assert_eq!(code, 3, "{err}\n{report}");
    assert!(
        report["hedged"].as_u64().unwrap_or(0) + report["rescued"].as_u64().unwrap_or(0) > 0,
        "requests in flight on the hung site were hedged or rescued: {report}"
    );
    assert_eq!(report["met"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_drill_that_meets_its_objectives_exits_0() {
    let (code, report, err) = hang_drill("[site.objectives]\nshift_time = \"3s\"\n").await;
    assert_eq!(code, 0, "{err}\n{report}");
    assert_eq!(report["met"], true);
}
