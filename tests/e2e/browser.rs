//! The status page in a real browser: headless Chromium, driven by playwright-core from
//! `tests/browser/status_page.mjs`, watches a site die live (no reload), drains another from
//! the page with the admin token, and checks dark mode and a phone viewport. Screenshots land
//! in `build/artifacts/`. `make browser` installs Chromium and the pinned npm packages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{free_port, site_tables, DemoSite, Scratch, Sitesteer};

const TOKEN: &str = "browser-test-token";
/// The whole browser run (Chromium start, every check, screenshots).
const LIMIT: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    sitesteer_test_support::workspace_root().join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails with what to run when node, Chromium or the npm packages are missing.
fn require_tools() {
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut missing = Vec::new();
    if !node {
        missing.push("node".to_string());
    }
    if !chromium().exists() {
        missing.push(chromium().display().to_string());
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("tests/browser/node_modules (playwright-core)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run `make browser` (installs Debian's chromium and \
         `npm ci` in tests/browser)",
        missing.join(", ")
    );
}

/// The node process and its Chromium, in their own process group, killed together on drop.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_a_failure_live_and_drains_from_a_click() {
    require_tools();
    let ports = [free_port(), free_port()];
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let mut a = DemoSite::start("a", ports[0]).await;
    let _b = DemoSite::start("b", ports[1]).await;
    let secrets = Scratch::new("browser-token");
    let token_file = secrets.0.join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    // Lenient probes: a loaded machine must not make a site flap before the test kills it.
    let body = format!(
        "[admin]\ntoken_file = \"{}\"\n\n[[probe]]\nkind = \"http\"\npath = \"/health\"\n\
         interval = \"100ms\"\ntimeout = \"80ms\"\n\n[health]\nfall = 3\n\n{}",
        token_file.display(),
        site_tables(&[("a", 0, addr(0)), ("b", 0, addr(1))])
    );
    let proxy = Sitesteer::start(&body).await;
    for site in ["a", "b"] {
        let up = proxy.wait_state(site, "up", Duration::from_secs(10)).await;
        assert!(up.is_some(), "site {site} is not up:\n{}", proxy.log());
    }

    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(browser_dir().join("status_page.mjs"))
        .arg(format!("http://{}", proxy.admin))
        .env("SITESTEER_TOKEN", TOKEN)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut browser = Browser(child);
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    // READY: both sites show up on the page. Then site a dies, and the page must follow.
    let mut lines = BufReader::new(stdout).lines();
    let mut protocol = Vec::new();
    let outcome = tokio::time::timeout(LIMIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            protocol.push(line.clone());
            if line == "READY" {
                a.proc.kill9();
            }
        }
    })
    .await;
    let status = match outcome {
        Ok(()) => tokio::time::timeout(Duration::from_secs(10), browser.0.wait())
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    drop(browser);
    let log = tokio::time::timeout(Duration::from_secs(5), stderr_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let took = started.elapsed();
    let passed = status.is_some_and(|s| s.success()) && protocol.iter().any(|l| l == "OK");
    assert!(
        passed,
        "the status page browser test failed ({}; after {took:?}; stdout {protocol:?}):\n{log}\n\
         sitesteer log (tail):\n{}",
        match status {
            Some(s) => format!("node exited with {s}"),
            None => format!("node did not finish within {LIMIT:?}"),
        },
        tail(&proxy.log(), 30)
    );
    assert!(protocol.iter().any(|l| l == "READY"), "{protocol:?}");
    eprintln!("browser test passed in {took:?}:\n{log}");
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
