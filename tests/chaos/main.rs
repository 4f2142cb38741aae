//! The full chaos suite (`make chaos`): every fault under steady mixed load against
//! sitesteer and against HAProxy in the same run, real distance through network namespaces,
//! and a soak (10 minutes by default). Prints the figures and writes them into
//! `RELIABILITY.md` between the `chaos:begin` and `chaos:end` markers.
//!
//! Knobs (environment): `CHAOS_SOAK_SECS` (600), `CHAOS_HOLD_MS` (3000), `CHAOS_PARTS`
//! (`faults,distance,soak`), `CHAOS_PROXIES` (`sitesteer,haproxy`), `CHAOS_REPORT` (the file to write, default `RELIABILITY.md` at
//! the workspace root; `-` prints only), `SITESTEER_BIN` (the binary under test;
//! `make chaos` points it at the release build).
#![warn(unreachable_pub, missing_docs)]

use sitesteer_test_support::chaos as kit;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kit::distance::{self, DistanceSpec, NotRun};
use kit::faults::{self, Fault, Figures, Timing};
use kit::lab::{Checks, Flavor};
use kit::suite::{self, LoadShape, RunFigures, RunSpec, SoakFigures};

const BEGIN: &str = "<!-- chaos:begin -->";
const END: &str = "<!-- chaos:end -->";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The machine, the binaries and the time, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let haproxy = sh("haproxy", &["-v"]);
    let haproxy = haproxy.lines().next().unwrap_or("?");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.to_string_lossy().to_string();
    let commit = sh("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty = !sh("git", &["-C", &root, "status", "--porcelain"]).is_empty();
    format!(
        "{} vCPU (`nproc`), `{cpu}`, Linux {}, {haproxy}; sitesteer built (release) from \
         commit `{commit}`{}; load average at start {}; date {} UTC.",
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        if dirty {
            " plus uncommitted changes in the working tree"
        } else {
            ""
        },
        load.join(" "),
        sh("date", &["-u", "+%Y-%m-%d %H:%M"]),
    )
}

/// A fault counts as survived when the proxy still runs, the site came back into service
/// and no long-lived connection leaked.
fn survived(f: &Figures) -> bool {
    f.recovered.is_some() && f.leaked_connections() == 0
}

fn summary(runs: &[RunFigures]) -> String {
    let mut out = String::from(
        "| proxy | load held | faults survived | requests lost (retriable kinds) | long-lived messages failed | long-lived reconnects | fds: idle before the load / under load / 65 s after the load | open connections after the load (proxy gauge / sites) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let reconnects: usize = r.faults.iter().map(Figures::total_reconnects).sum();
        let fds = |n: Option<usize>| n.map_or("?".to_string(), |n| n.to_string());
        let gauge = r.open_after.0.map_or("n/a".to_string(), |n| n.to_string());
        let sites = r.open_after.1.map_or("?".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "| {} | {} requests and messages in {:.0} s ({:.0}/s; {} request ticks skipped, all connections busy) | {}/{} | {} | {} | {} | {} / {} / {} | {gauge} / {sites} |",
            r.flavor.name(),
            r.sent,
            r.duration.as_secs_f64(),
            r.rate(),
            r.skipped,
            r.faults.iter().filter(|f| survived(f)).count(),
            r.faults.len(),
            r.failed.1,
            r.failed.0 - r.failed.1,
            reconnects,
            fds(r.fds.0),
            fds(r.fds.1),
            fds(r.fds.2),
        );
    }
    out
}

fn examples(runs: &[RunFigures]) -> String {
    let mut out = String::new();
    for r in runs {
        for f in &r.faults {
            if f.examples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "- {} / {}:", r.flavor.name(), f.fault.name());
            for e in &f.examples {
                let e: String = e.chars().take(200).collect();
                let _ = writeln!(out, "  - `{}`", e.replace('`', "'"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("- none\n");
    }
    out
}

fn soak_text(s: &SoakFigures) -> String {
    let (first, last, max) = s.rss();
    let (fd_first, fd_last, fd_max) = s.fds();
    let mut out = format!(
        "{} requests and messages in {:.0} s ({:.0}/s; {} request ticks skipped, all connections \
         busy), {} failed, {} long-lived reconnects; {} site state changes with no fault \
         injected.\n\n\
         | RSS after {:.0} s warm-up: first | last | max | slope | fds first / last / max |\n|---|---|---|---|---|\n\
         | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+.0} KiB/min | {fd_first} / {fd_last} / {fd_max} |\n\n",
        s.sent,
        s.duration.as_secs_f64(),
        s.rate(),
        s.skipped,
        s.failed,
        s.reconnects,
        s.changes.len(),
        s.warmup_s,
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0,
        s.slope_kib_per_min(),
    );
    out.push_str("RSS samples (s: MiB): ");
    let step = (s.samples.len() / 20).max(1);
    let picks: Vec<String> = s
        .samples
        .iter()
        .step_by(step)
        .map(|(t, rss, _)| format!("{t:.0}: {:.1}", *rss as f64 / 1024.0))
        .collect();
    out.push_str(&picks.join(", "));
    out.push('\n');
    out
}

fn write_report(section: &str) -> Result<Option<PathBuf>, String> {
    let target = std::env::var("CHAOS_REPORT").unwrap_or_default();
    if target == "-" {
        return Ok(None);
    }
    let path = if target.is_empty() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../RELIABILITY.md")
    } else {
        PathBuf::from(target)
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let block = format!("{BEGIN}\n{section}{END}");
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{text}\n## Figures of the last `make chaos`\n\n{block}\n"),
    };
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(path.canonicalize().unwrap_or(path)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = Instant::now();
    let parts = std::env::var("CHAOS_PARTS").unwrap_or_else(|_| "faults,distance,soak".into());
    let soak_secs = env_u64("CHAOS_SOAK_SECS", 600);
    let hold = Duration::from_millis(env_u64("CHAOS_HOLD_MS", 3000));
    let machine = machine();
    eprintln!("[chaos] {machine}");
    let checks = Checks::FAST;
    let load = LoadShape {
        workers: 8,
        pause: Duration::from_millis(5),
        conns_per_worker: 4,
        long_lived: 2,
        ll_pause: Duration::from_millis(50),
        ll_lifetime: Duration::from_secs(5),
    };
    let mut section = String::new();
    let _ = writeln!(
        section,
        "Command: `make chaos` (`SITESTEER_BIN=target/release/sitesteer cargo run --release -p \
         sitesteer-test-support --example chaos`), parts `{parts}`, fault hold {} ms, soak {soak_secs} s.\n\n\
         Machine: {machine}\n",
        hold.as_millis()
    );
    let mut failed = false;

    if parts.contains("faults") {
        let spec = RunSpec {
            load,
            timing: Timing {
                hold,
                settle: Duration::from_secs(1),
                flap_cycles: 8,
                flap_down: Duration::from_millis(400),
                flap_up: Duration::from_millis(800),
                slow_ms: 300,
            },
            faults: Fault::ALL.to_vec(),
            checks,
            warmup: Duration::from_secs(3),
            quiet: Duration::from_secs(65),
        };
        let mut runs = Vec::new();
        let proxies = std::env::var("CHAOS_PROXIES").unwrap_or_else(|_| "sitesteer,haproxy".into());
        let flavors = [Flavor::Sitesteer, Flavor::Haproxy]
            .into_iter()
            .filter(|f| proxies.contains(f.name()));
        for flavor in flavors {
            eprintln!("[chaos] faults against {}", flavor.name());
            match suite::run(flavor, &spec).await {
                Ok(r) => {
                    eprintln!("{}", faults::table(&r.faults, checks));
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("[chaos] {} run failed: {e}", flavor.name());
                    let _ = writeln!(section, "**{} run failed:** {e}\n", flavor.name());
                    failed = true;
                }
            }
        }
        let mut rows: Vec<Figures> = Vec::new();
        for fault in Fault::ALL {
            for r in &runs {
                rows.extend(r.faults.iter().filter(|f| f.fault == fault).cloned());
            }
        }
        let _ = writeln!(
            section,
            "### Faults, sitesteer and HAProxy in the same run\n\n\
             Load: {} request workers (each a request every {} ms, open loop, on one of {} \
             kept-alive connections: `GET /`, MCP `ping`, `tools/list`, `tools/call echo` in turn), {} WebSocket, {} SSE and \
             {} raw TCP clients (a JSON-RPC `ping` every {} ms each). Faults on site `a` of three \
             (`a`, `b`, `c`), each held {} ms, then lifted; flapping is {} kill/restart cycles \
             ({} ms dead, {} ms alive).\n\n{}\n{}\nFailures seen (first five per fault):\n\n{}",
            load.workers,
            load.pause.as_millis(),
            load.conns_per_worker,
            load.long_lived,
            load.long_lived,
            load.long_lived,
            load.ll_pause.as_millis(),
            hold.as_millis(),
            spec.timing.flap_cycles,
            spec.timing.flap_down.as_millis(),
            spec.timing.flap_up.as_millis(),
            summary(&runs),
            faults::table(&rows, checks),
            examples(&runs),
        );
        for r in &runs {
            let _ = writeln!(
                section,
                "<details><summary>{} config of this run</summary>\n\n```\n{}```\n</details>\n",
                r.flavor.name(),
                r.config
            );
        }
    }

    if parts.contains("distance") {
        eprintln!("[chaos] real distance");
        let spec = DistanceSpec {
            settle: Duration::from_secs(4),
            measure: Duration::from_secs(8),
            far_delay: Duration::from_millis(30),
            slow_delay: Duration::from_millis(80),
            loss: 0.3,
        };
        let _ = writeln!(section, "### Real distance (network namespaces)\n");
        match distance::run(spec).await {
            Ok(f) => {
                let table = distance::table(&f);
                eprintln!("{table}");
                let _ = writeln!(section, "{table}");
            }
            Err(NotRun::Skip(why)) => {
                eprintln!("[chaos] real distance SKIPPED: {why}");
                let _ = writeln!(section, "Skipped: {why}\n");
            }
            Err(NotRun::Failed(e)) => {
                eprintln!("[chaos] real distance failed: {e}");
                let _ = writeln!(section, "**Failed:** {e}\n");
                failed = true;
            }
        }
    }

    if parts.contains("soak") {
        eprintln!("[chaos] soak of {soak_secs} s");
        let _ = writeln!(section, "### Soak (sitesteer)\n");
        match suite::soak(
            load,
            checks,
            Duration::from_secs(soak_secs),
            Duration::from_secs(5),
            Duration::from_secs(60.min(soak_secs / 5)),
        )
        .await
        {
            Ok(s) => {
                let text = soak_text(&s);
                eprintln!("{text}");
                let _ = writeln!(section, "{text}");
            }
            Err(e) => {
                eprintln!("[chaos] soak failed: {e}");
                let _ = writeln!(section, "**Failed:** {e}\n");
                failed = true;
            }
        }
    }

    let _ = writeln!(
        section,
        "Whole run: {:.0} s.\n",
        started.elapsed().as_secs_f64()
    );
    match write_report(&section) {
        Ok(Some(path)) => eprintln!("[chaos] figures written to {}", path.display()),
        Ok(None) => println!("{section}"),
        Err(e) => {
            eprintln!("[chaos] could not write the report: {e}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
