//! The reduced chaos suite (the full one is `make chaos`, `tests/chaos/main.rs`): steady
//! mixed load (HTTP GET, MCP ping, tools/list, tools/call, WebSocket, SSE, raw TCP) through
//! sitesteer while one site is, in turn, killed, frozen, flapped, slowed, made to answer 500,
//! made to answer bad JSON-RPC and made to cut connections mid-response. Retriable requests
//! never fail where a proxy can rescue them, traffic moves, nothing leaks, steering never
//! flaps faster than rise/fall allow. Then a short soak: RSS stays flat.

use sitesteer_test_support::chaos as kit;

use std::time::Duration;

use kit::faults::{self, Fault, Timing};
use kit::lab::{Checks, Flavor};
use kit::suite::{self, LoadShape, RunSpec};

/// Load light enough for a shared 2-core machine running the debug build.
const LOAD: LoadShape = LoadShape {
    workers: 4,
    pause: Duration::from_millis(20),
    conns_per_worker: 4,
    long_lived: 2,
    ll_pause: Duration::from_millis(100),
    ll_lifetime: Duration::from_secs(3),
};

/// Client connections of [`LOAD`]: the request workers' and the long-lived ones.
const LOAD_CONNS: usize = LOAD.workers * LOAD.conns_per_worker + 3 * LOAD.long_lived;

/// Checks a little more lenient than the full suite's (100 ms / 90 ms), so that a debug build
/// on a busy 2-core machine is not taken down by a late probe: still rise 2 / fall 2.
const CHECKS: Checks = Checks {
    interval_ms: 200,
    timeout_ms: 150,
    rise: 2,
    fall: 2,
    mcp: true,
};

/// Held by each load-heavy test of this suite, so that they never share the machine with
/// one another (each measures timings that a second load on 2 cores would distort).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a load-heavy test: waits for the machine (see [`HEAVY`]) and points the chaos kit
/// at the binary under test.
pub(crate) async fn heavy_test() -> tokio::sync::MutexGuard<'static, ()> {
    let serial = HEAVY.lock().await;
    crate::harness::binary();
    serial
}

/// Writes straight to the test process's stderr (libtest does not capture it), so the
/// figures show in `make test` output.
pub(crate) fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{text}\n").as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_fault_under_mixed_load_loses_no_retriable_request_and_leaks_nothing() {
    let _serial = heavy_test().await;
    let spec = RunSpec {
        load: LOAD,
        timing: Timing {
            hold: Duration::from_millis(2000),
            settle: Duration::from_millis(300),
            flap_cycles: 3,
            flap_down: Duration::from_millis(300),
            flap_up: Duration::from_millis(600),
            slow_ms: 300,
        },
        faults: Fault::ALL.to_vec(),
        checks: CHECKS,
        warmup: Duration::from_millis(1000),
        quiet: Duration::from_secs(2),
    };
    let run = tokio::time::timeout(
        Duration::from_secs(150),
        suite::run(Flavor::Sitesteer, &spec),
    )
    .await
    .expect("the chaos run is bounded")
    .unwrap_or_else(|e| panic!("chaos run failed: {e}"));
    say(&format!(
        "chaos (reduced, sitesteer): {} requests and messages in {:.1}s ({:.0}/s)\n{}",
        run.sent,
        run.duration.as_secs_f64(),
        run.rate(),
        faults::table(&run.faults, spec.checks)
    ));
    for f in &run.faults {
        say(&format!(
            "  {}: state changes {:?}; failures {:?}",
            f.fault.name(),
            f.changes,
            f.examples
        ));
    }
    for f in &run.faults {
        let name = f.fault.name();
        // Every fault is hidden from short requests that are safe to repeat: connect
        // refused, hang (read timeout), slow answers and 500s are retried on another site,
        // and so are cut answers and wrong JSON-RPC, which checked exchanges hold back until
        // they are known to be right. (Long-lived messages are counted apart.)
        assert_eq!(
            f.retriable_failed(),
            0,
            "{name}: retriable requests failed: {:?}",
            f.examples
        );
        // Traffic left the site while the fault was still on (a late probe on a busy
        // machine can take a healthy site down too and delay this; hence the margin).
        if f.fault != Fault::Flap {
            assert!(
                f.moved < Duration::from_millis(1500),
                "{name}: traffic took {:?} to move: {:?}; {:?}",
                f.moved,
                f.examples,
                f.changes
            );
        }
        assert!(
            f.recovered.is_some(),
            "{name}: site {} never served again after the fault",
            f.site
        );
        assert_eq!(
            f.leaked_connections(),
            0,
            "{name}: connections left open (clients, sitesteer gauge, sites): {:?}",
            f.open
        );
        // Pooled upstream connections come and go with the load; a leak grows past them.
        if let (Some(before), Some(after)) = f.fds {
            assert!(
                after <= before + 2 * LOAD_CONNS,
                "{name}: sitesteer's fds grew from {before} to {after}"
            );
        }
        if let Some(dwell) = f.min_down {
            assert!(
                dwell + Duration::from_millis(10) >= spec.checks.min_down_dwell(),
                "{name}: site {} stayed down only {dwell:?}, less than rise {} allows: {:?}",
                f.site,
                spec.checks.rise,
                f.changes
            );
        }
    }
    let flap = run
        .faults
        .iter()
        .find(|f| f.fault == Fault::Flap)
        .expect("flapping ran");
    // The precise check is the shortest stay in down above; this one only catches a site
    // that keeps falling with nothing killing it (a busy machine may add one false down).
    assert!(
        flap.down_entries() <= 2 * flap.kills,
        "flapping: {} entries into down for {} kills: {:?}",
        flap.down_entries(),
        flap.kills,
        flap.changes
    );
    assert_eq!(
        run.open_after.0,
        Some(0),
        "sitesteer still counts open connections after the load stopped"
    );
    assert_eq!(
        run.open_after.1,
        Some(0),
        "the sites still hold connections after the load stopped"
    );
    if let (Some(loaded), Some(end)) = (run.fds.1, run.fds.2) {
        // Idle pooled upstream connections (a few per site) may stay for 60 s; the count
        // 3 s after the load must not be above the count under load before the faults.
        assert!(
            end <= loaded + 8,
            "sitesteer's fds went from {loaded} under load to {end} after it: {:?}",
            run.fds
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_keeps_rss_and_fds_flat() {
    let _serial = heavy_test().await;
    let soak = tokio::time::timeout(
        Duration::from_secs(90),
        suite::soak(
            LOAD,
            CHECKS,
            Duration::from_secs(28),
            Duration::from_secs(2),
            Duration::from_secs(8),
        ),
    )
    .await
    .expect("the soak is bounded")
    .unwrap_or_else(|e| panic!("soak failed: {e}"));
    let (first, last, max) = soak.rss();
    let (fd_first, fd_last, fd_max) = soak.fds();
    say(&format!(
        "soak (reduced): {} requests in {:.0}s ({:.0}/s), {} failed, {} reconnects; RSS after \
         warm-up {first} → {last} KiB (max {max}), slope {:.0} KiB/min; fds {fd_first} → \
         {fd_last} (max {fd_max})",
        soak.sent,
        soak.duration.as_secs_f64(),
        soak.rate(),
        soak.failed,
        soak.reconnects,
        soak.slope_kib_per_min()
    ));
    for e in &soak.examples {
        say(&format!("  {e}"));
    }
    say(&format!(
        "  {} state changes with no fault injected: {:?}",
        soak.changes.len(),
        soak.changes
    ));
    assert_eq!(
        soak.failed, 0,
        "requests failed under steady load: {:?}",
        soak.examples
    );
    assert!(
        last <= first + first / 4 + 4096,
        "RSS grew from {first} KiB to {last} KiB in {:?}: {:?}",
        soak.duration,
        soak.samples
    );
    // Up to one downstream and one upstream connection per client connection may come and go.
    let conns = LOAD_CONNS;
    assert!(
        fd_last <= fd_first + conns && fd_max <= fd_first + 2 * conns,
        "fds went from {fd_first} to {fd_last} (max {fd_max}): {:?}",
        soak.samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_panic_mode_long_lived_connections_are_not_swept() {
    use crate::harness::{free_port, DemoSite, Sitesteer};
    use kit::client::Ws;
    use std::net::SocketAddr;
    // A probe path no site serves: every site is down, steering is in panic mode and still
    // sends connections to the down sites; the sweeper must leave them open.
    let ports = [free_port(), free_port()];
    let _a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let sites: String = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            format!("[[site]]\nname = \"{name}\"\n[site.endpoints]\nhttp = \"{addr}\"\nws = \"{addr}\"\n\n")
        })
        .collect();
    let proxy = Sitesteer::start(&format!(
        "[[probe]]\nkind = \"http\"\npath = \"/missing\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n{sites}"
    ))
    .await;
    for name in ["a", "b"] {
        assert!(
            proxy
                .wait_state(name, "down", Duration::from_secs(3))
                .await
                .is_some(),
            "{name} goes down on the failing probe"
        );
    }
    let mut ws = Ws::connect(proxy.http)
        .await
        .expect("a WebSocket in panic mode");
    for id in 0..30 {
        ws.ping(id).await.unwrap_or_else(|e| {
            panic!(
                "ping {id} on a WebSocket held in panic mode: {e:?}; log:\n{}",
                proxy.log()
            )
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
