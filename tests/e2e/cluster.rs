//! A fleet of front doors: a real etcd (Debian's `etcd-server`) on loopback ports with a
//! temporary data directory, and three sitesteer instances with the same `[cluster]`.
//! Propagation within a second, racing writes never lost in silence, fail static through an
//! etcd outage (serving, refusing writes clearly, converging afterwards) and restarts that
//! take up the fleet's state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::harness::{
    binary, free_port, get, put_weight, request, wait_until, Answer, DemoSite, Proc, Scratch,
    Sitesteer,
};

const PROBES: &str =
    "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n";

/// The etcd server binary: `ETCD_BIN`, else Debian's, installed when missing.
fn etcd_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("ETCD_BIN") {
        return PathBuf::from(bin);
    }
    let bin = PathBuf::from("/usr/bin/etcd");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "etcd-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !bin.exists() {
        eprintln!("installing etcd-server (Debian) for the cluster tests");
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            install();
        }
    }
    assert!(
        bin.exists(),
        "{} is missing: install Debian's etcd-server (make test does) or set ETCD_BIN",
        bin.display()
    );
    bin
}

/// A single-member etcd on loopback, killed (and its data dir removed) on drop.
struct Etcd {
    client: SocketAddr,
    peer: SocketAddr,
    dir: Scratch,
    proc: Option<Proc>,
}

impl Etcd {
    async fn start() -> Self {
        let mut etcd = Self {
            client: SocketAddr::from(([127, 0, 0, 1], free_port())),
            peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: Scratch::new("etcd"),
            proc: None,
        };
        etcd.run().await;
        etcd
    }

    fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Starts etcd on the same ports and data dir (a restart after `kill9`).
    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("etcd.log"))
            .expect("etcd log");
        let peer = format!("http://{}", self.peer);
        let child = Command::new(etcd_binary())
            .arg("--name=e2e")
            .arg(format!("--data-dir={}", self.dir.0.join("data").display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=e2e={peer}"))
            .args(["--logger=zap", "--log-level=warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.proc = Some(Proc { child });
        let client = self.client;
        let up = wait_until(Duration::from_secs(10), || async move {
            get(client, "/health")
                .await
                .is_ok_and(|r| r.status == 200 && r.json()["health"] == "true")
        })
        .await;
        if up.is_none() {
            let log = std::fs::read_to_string(self.dir.0.join("etcd.log")).unwrap_or_default();
            panic!("etcd did not start on {}:\n{log}", self.client);
        }
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// Restarts `s` on its own config, state file and ports (after `kill -9`).
async fn restart(s: Sitesteer) -> Sitesteer {
    let Sitesteer {
        http,
        admin,
        mut proc,
        dir,
    } = s;
    proc.kill9();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.0.join("sitesteer.log"))
        .expect("log file");
    let child = Command::new(binary())
        .args(["run", "-c"])
        .arg(dir.0.join("sitesteer.toml"))
        .env("RUST_LOG", "info,pingora_proxy=error,pingora_core=error")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sitesteer");
    let s = Sitesteer {
        http,
        admin,
        proc: Proc { child },
        dir,
    };
    let ready = wait_until(Duration::from_secs(15), || async {
        get(admin, "/healthz").await.is_ok_and(|r| r.status == 200)
            && TcpStream::connect(http).await.is_ok()
    })
    .await;
    assert!(
        ready.is_some(),
        "sitesteer did not restart; log:\n{}",
        s.log()
    );
    s
}

async fn post(admin: SocketAddr, path: &str) -> Answer {
    request(admin, Method::POST, path, &[], None)
        .await
        .expect("admin API answers")
}

fn site<'a>(sites: &'a Value, name: &str) -> &'a Value {
    sites["sites"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn weight(s: &Sitesteer, name: &str) -> u64 {
    site(&s.sites().await, name)["effective_weight"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

async fn connected(s: &Sitesteer) -> Option<bool> {
    s.sites().await["cluster"]["connected"].as_bool()
}

/// Waits until `check` holds for every instance's `GET /api/v1/sites`; returns how long it
/// took.
async fn all(
    fleet: &[Sitesteer],
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Option<Duration> {
    wait_until(limit, || async {
        for s in fleet {
            if !check(&s.sites().await) {
                return false;
            }
        }
        true
    })
    .await
}

fn is_connected(sites: &Value) -> Option<bool> {
    sites["cluster"]["connected"].as_bool()
}

async fn events(s: &Sitesteer) -> Vec<String> {
    let r = get(s.admin, "/api/v1/events?limit=1000")
        .await
        .expect("events");
    r.json()["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["reason"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_operator_state_through_etcd() {
    let began = Instant::now();
    let mut etcd = Etcd::start().await;
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let (_a, _b) = tokio::join!(
        DemoSite::start("a", ports[0]),
        DemoSite::start("b", ports[1])
    );
    // c shares b's server: a third site for three independent fields.
    let sites =
        crate::harness::site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1)), ("c", 0, addr(1))]);
    let prefix = format!("/e2e-{}-{}/", std::process::id(), etcd.client.port());
    let body = |name: &str| {
        format!(
            "{PROBES}{sites}[cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\ninstance = \"{name}\"\nlease_ttl = \"2s\"\n",
            etcd.url()
        )
    };
    let (b1, b2, b3) = (body("i1"), body("i2"), body("i3"));
    let (i1, i2, i3) = tokio::join!(
        Sitesteer::start(&b1),
        Sitesteer::start(&b2),
        Sitesteer::start(&b3)
    );
    let mut fleet = vec![i1, i2, i3];
    assert!(
        all(&fleet, Duration::from_secs(5), |s| is_connected(s)
            == Some(true))
        .await
        .is_some(),
        "every instance joins the cluster store"
    );

    // A weight set through instance 1 reaches all three within one second.
    let r = put_weight(fleet[0].admin, "a", 7).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let took = all(&fleet, Duration::from_secs(1), |s| {
        site(s, "a")["effective_weight"] == 7
    })
    .await;
    let took = took.unwrap_or_else(|| panic!("weight 7 did not reach every instance within 1s"));
    eprintln!("cluster: a weight set through i1 reached all three in {took:?}");

    // GET /api/v1/cluster shows every instance's view.
    let views = wait_until(Duration::from_secs(3), || async {
        let r = get(fleet[1].admin, "/api/v1/cluster")
            .await
            .expect("cluster API");
        let list = r.json()["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        list.len() == 3
            && list.iter().all(|v| {
                v["sites"].as_array().is_some_and(|sites| {
                    sites
                        .iter()
                        .any(|s| s["name"] == "a" && s["effective_weight"] == 7)
                })
            })
    })
    .await;
    assert!(
        views.is_some(),
        "the cluster API lists three views with a at 7: {:?}",
        get(fleet[1].admin, "/api/v1/cluster")
            .await
            .map(|r| r.json())
    );

    // Racing writes to different fields through three instances: all of them land.
    for round in 0..4u32 {
        let (wa, wb) = (10 + round, 40 + round);
        let drain = round % 2 == 0;
        let path = if drain {
            "/api/v1/sites/c/drain"
        } else {
            "/api/v1/sites/c/undrain"
        };
        let (ra, rb, rc) = tokio::join!(
            put_weight(fleet[0].admin, "a", wa),
            put_weight(fleet[1].admin, "b", wb),
            post(fleet[2].admin, path)
        );
        for (what, r) in [("weight a", &ra), ("weight b", &rb), ("drain c", &rc)] {
            assert_eq!(r.status, 200, "round {round}: {what}: {:?}", r.json());
        }
        let want_c = if drain { "drained" } else { "up" };
        let converged = all(&fleet, Duration::from_secs(2), |sites| {
            site(sites, "a")["effective_weight"] == wa
                && site(sites, "b")["effective_weight"] == wb
                && site(sites, "c")["state"] == want_c
        })
        .await;
        assert!(
            converged.is_some(),
            "round {round}: the fleet reflects all three writes"
        );
    }
    // Each instance keeps its local state file current.
    let state: Value = serde_json::from_slice(
        &std::fs::read(fleet[2].dir.0.join("sitesteer.state.json")).expect("state file"),
    )
    .expect("state JSON");
    assert_eq!(state["overrides"]["sites"]["a"]["weight"], 13, "{state}");
    assert_eq!(state["overrides"]["sites"]["b"]["weight"], 43, "{state}");

    // Racing writes to the same field: each one that succeeded was applied (in some order),
    // so an observer saw both, and the fleet agrees on the last.
    for (x, y) in [(21u32, 22u32), (23, 24), (25, 26)] {
        let (rx, ry) = tokio::join!(
            put_weight(fleet[0].admin, "a", x),
            put_weight(fleet[1].admin, "a", y)
        );
        let mut landed = Vec::new();
        for (w, r) in [(x, &rx), (y, &ry)] {
            match r.status {
                200 => landed.push(w),
                409 => assert!(
                    r.json()["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("not applied")),
                    "{:?}",
                    r.json()
                ),
                other => panic!("weight {w}: unexpected {other}: {:?}", r.json()),
            }
        }
        assert!(!landed.is_empty());
        let agreed = wait_until(Duration::from_secs(2), || async {
            let mut seen = Vec::new();
            for s in &fleet {
                seen.push(weight(s, "a").await);
            }
            seen.iter().all(|w| *w == seen[0]) && landed.iter().any(|l| u64::from(*l) == seen[0])
        })
        .await;
        assert!(agreed.is_some(), "the fleet agrees on one of {landed:?}");
        let observer = events(&fleet[2]).await;
        for w in &landed {
            let text = format!("weight set to {w}");
            assert!(
                observer.iter().any(|e| e.starts_with(&text)),
                "i3 saw {text}: {observer:?}"
            );
        }
    }
    let last = weight(&fleet[0], "a").await;
    let mut conflicts = 0.0;
    for s in &fleet {
        let m = get(s.admin, "/metrics").await.expect("metrics");
        let text = String::from_utf8_lossy(&m.body).into_owned();
        conflicts += text
            .lines()
            .filter(|l| l.starts_with("sitesteer_cluster_writes_total{result=\"conflict\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    eprintln!("cluster: {conflicts} write(s) collided and were redone on the fresh value");

    // etcd dies: every instance keeps serving, refuses writes clearly and says so.
    etcd.kill9();
    let noticed = all(&fleet, Duration::from_secs(3), |s| {
        is_connected(s) == Some(false)
    })
    .await;
    assert!(noticed.is_some(), "every instance notices the outage");
    for s in &fleet {
        for _ in 0..10 {
            let r = get(s.http, "/").await.expect("proxied during the outage");
            assert_eq!(r.status, 200);
            assert!(!r.header("x-sitesteer-site").is_empty());
        }
        let r = put_weight(s.admin, "b", 5).await;
        assert_eq!(r.status, 503, "{:?}", r.json());
        assert_eq!(
            r.json()["error"],
            "the cluster store is unreachable; the change was not applied"
        );
        assert_eq!(weight(s, "a").await, last, "the last known state stays");
    }
    let out = Command::new(binary())
        .args([
            "ctl",
            "--admin",
            &format!("http://{}", fleet[0].admin),
            "drain",
            "a",
        ])
        .env_remove("SITESTEER_TOKEN")
        .output()
        .expect("run ctl");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster store is unreachable"),
        "{out:?}"
    );
    let metrics = get(fleet[0].admin, "/metrics").await.expect("metrics");
    assert!(String::from_utf8_lossy(&metrics.body).contains("sitesteer_cluster_connected 0"));
    assert!(events(&fleet[0])
        .await
        .iter()
        .any(|e| e.contains("cluster store is unreachable")));

    // An instance restarted during the outage starts from its local state file.
    let i2 = fleet.remove(1);
    fleet.insert(1, restart(i2).await);
    assert_eq!(
        weight(&fleet[1], "a").await,
        last,
        "restarted from the state file"
    );
    assert_eq!(connected(&fleet[1]).await, Some(false));
    assert_eq!(
        get(fleet[1].http, "/").await.map(|r| r.status).ok(),
        Some(200)
    );

    // etcd returns on the same data dir: the fleet catches up and writes flow again.
    etcd.run().await;
    let back = Instant::now();
    let caught_up = all(&fleet, Duration::from_secs(5), |s| {
        is_connected(s) == Some(true)
    })
    .await;
    assert!(caught_up.is_some(), "every instance reconnects");
    eprintln!(
        "cluster: fleet reconnected {:?} after etcd answered again",
        back.elapsed()
    );
    let r = put_weight(fleet[2].admin, "b", 77).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let took = all(&fleet, Duration::from_secs(1), |s| {
        site(s, "b")["effective_weight"] == 77
    })
    .await;
    assert!(took.is_some(), "the fleet converges after the outage");

    // An instance restarted while the fleet moved on takes up the current state at start.
    let mut i3 = fleet.pop().expect("i3");
    i3.proc.kill9();
    let r = put_weight(fleet[0].admin, "a", 88).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let i3 = restart(i3).await;
    assert_eq!(
        weight(&i3, "a").await,
        88,
        "the restarted instance took the fleet's state at start"
    );
    fleet.push(i3);
    eprintln!("cluster: scenario took {:?}", began.elapsed());
}
