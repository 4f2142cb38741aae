//! The faults of a chaos run, each injected into one site under steady load, and the
//! figures of each: how long until traffic moved, what failed (by kind), how many long-lived
//! connections had to reconnect, whether connections or file descriptors leaked, and how
//! often the site's state changed against what rise/fall allow.

use std::collections::BTreeMap;
use std::time::Duration;

use super::lab::{epoch_ms, fd_count, Checks, Flavor, Proxy, Site, StatePoller};
use super::load::{Kind, Load, Outcome, Record};
use crate::wait_until;

/// The faults, in the order a run injects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// `kill -9`, restarted after the hold.
    Kill,
    /// `SIGSTOP` (the kernel still accepts connections; nothing answers), `SIGCONT` after.
    Freeze,
    /// Killed and restarted over and over.
    Flap,
    /// Every answer delayed (demo mode `slow`).
    Slow,
    /// Every answer a 500 (demo mode `error`).
    Error,
    /// Every MCP answer well-formed JSON but wrong JSON-RPC (demo mode `badrpc`).
    Badrpc,
    /// Connections cut mid-response (demo mode `drop`).
    Drop,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 7] = [
        Fault::Kill,
        Fault::Freeze,
        Fault::Flap,
        Fault::Slow,
        Fault::Error,
        Fault::Badrpc,
        Fault::Drop,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Freeze => "SIGSTOP",
            Fault::Flap => "flapping",
            Fault::Slow => "slow",
            Fault::Error => "HTTP 500",
            Fault::Badrpc => "bad JSON-RPC",
            Fault::Drop => "cut mid-response",
        }
    }
}

/// How long each phase lasts.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a fault is held.
    pub hold: Duration,
    /// Quiet time after recovery before leaks are counted.
    pub settle: Duration,
    /// Kill/restart cycles of the flapping fault.
    pub flap_cycles: usize,
    /// How long the flapping site stays dead in each cycle.
    pub flap_down: Duration,
    /// How long it lives in each cycle (from its restart).
    pub flap_up: Duration,
    /// The delay of the slow fault.
    pub slow_ms: u64,
}

/// The figures of one fault against one proxy.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Which fault.
    pub fault: Fault,
    /// Which proxy.
    pub flavor: Flavor,
    /// The faulty site.
    pub site: String,
    /// Long-lived connections the faulty site held when the fault began.
    pub held: i64,
    /// How long the fault was held.
    pub hold: Duration,
    /// Requests and messages sent during the phase (fault and recovery).
    pub sent: usize,
    /// From the fault until the last short request sent that it affected (answered by the
    /// faulty site, failed, or took longer than the slow-request line); 0 when none was.
    pub moved: Duration,
    /// Short requests affected that way.
    pub affected: usize,
    /// Failed requests and messages, by kind.
    pub failed: BTreeMap<Kind, usize>,
    /// A few failures, for the record.
    pub examples: Vec<String>,
    /// Long-lived connections that broke and were reconnected, by kind.
    pub reconnects: BTreeMap<Kind, usize>,
    /// Slowest successful short request of the phase.
    pub max_latency: Duration,
    /// From lifting the fault until the site served again.
    pub recovered: Option<Duration>,
    /// The proxy's open file descriptors before the fault and after recovery.
    pub fds: (Option<usize>, Option<usize>),
    /// After recovery: the long-lived connections the clients hold, sitesteer's
    /// `sitesteer_open_connections` (None for HAProxy) and the sites' own count.
    pub open: (i64, Option<i64>, Option<i64>),
    /// State changes of the faulty site.
    pub changes: Vec<Change>,
    /// `kill -9`s in the phase.
    pub kills: usize,
    /// Shortest stay in `down` (None if it never came back from one in the phase).
    pub min_down: Option<Duration>,
}

impl Figures {
    /// Failures of kinds the proxy could have retried (every short request kind here).
    pub fn retriable_failed(&self) -> usize {
        self.failed
            .iter()
            .filter(|(k, _)| !k.long_lived())
            .map(|(_, n)| n)
            .sum()
    }

    /// Failures of every kind.
    pub fn total_failed(&self) -> usize {
        self.failed.values().sum()
    }

    /// Reconnects of every kind.
    pub fn total_reconnects(&self) -> usize {
        self.reconnects.values().sum()
    }

    /// Entries into `down`.
    pub fn down_entries(&self) -> usize {
        self.changes.iter().filter(|c| c.to == "down").count()
    }

    /// Connections left open that no client holds (proxy gauge or sites' count above what
    /// the clients hold).
    pub fn leaked_connections(&self) -> i64 {
        let (clients, proxy, sites) = self.open;
        let over = |n: Option<i64>| n.map_or(0, |n| (n - clients).max(0));
        over(proxy).max(over(sites))
    }
}

/// One state change of a site.
#[derive(Clone, Debug)]
pub struct Change {
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// When, ms since the fault began.
    pub at_ms: u64,
    /// Why (sitesteer's event reason; empty for HAProxy).
    pub why: String,
}

/// Short requests slower than this count as affected by a fault: a request rescued from a
/// hung site by the 1 s read timeout, not one slowed by a busy machine.
const SLOW_LINE: Duration = Duration::from_millis(900);

/// Injects `fault` into `sites[target]` under the running `load`, waits for recovery and
/// returns the figures.
pub async fn run(
    proxy: &Proxy,
    sites: &mut [Site],
    load: &Load,
    fault: Fault,
    timing: Timing,
    target: usize,
) -> Result<Figures, String> {
    let name = sites[target].spec.name.clone();
    let held = sites[target].open_connections().await.unwrap_or(0);
    let fds_before = fd_count(proxy.pid());
    let t0 = load.now();
    let epoch0 = epoch_ms();
    let poller = (proxy.flavor == Flavor::Haproxy)
        .then(|| StatePoller::start(proxy.flavor, proxy.admin, &name));
    let mut kills = 0;
    let target = &mut sites[target];
    match fault {
        Fault::Kill => {
            target.kill9();
            kills += 1;
            tokio::time::sleep(timing.hold).await;
        }
        Fault::Freeze => {
            target.signal("-STOP");
            tokio::time::sleep(timing.hold).await;
        }
        Fault::Flap => {
            for _ in 0..timing.flap_cycles {
                target.kill9();
                kills += 1;
                tokio::time::sleep(timing.flap_down).await;
                target.spawn()?;
                tokio::time::sleep(timing.flap_up).await;
            }
        }
        Fault::Slow => {
            target.set_mode("slow", timing.slow_ms).await?;
            tokio::time::sleep(timing.hold).await;
        }
        Fault::Error | Fault::Badrpc | Fault::Drop => {
            let mode = match fault {
                Fault::Error => "error",
                Fault::Badrpc => "badrpc",
                _ => "drop",
            };
            target.set_mode(mode, 0).await?;
            tokio::time::sleep(timing.hold).await;
        }
    }
    let t1 = load.now();
    match fault {
        Fault::Kill => target.restart().await?,
        Fault::Freeze => target.signal("-CONT"),
        Fault::Flap => {
            if !target.wait_ready(Duration::from_secs(10)).await {
                target.restart().await?;
            }
        }
        _ => target.set_mode("ok", 0).await?,
    }
    let lifted = load.now();
    let up = wait_until(Duration::from_secs(15), || async {
        proxy.state_of(&name).await == "up"
    })
    .await;
    let recovered = match up {
        Some(_) => {
            wait_until(Duration::from_secs(10), || async {
                load.served_by_since(&name, lifted) > 0
            })
            .await;
            let first = load
                .between(lifted, load.now())
                .iter()
                .filter(|r| r.outcome == Outcome::Ok && r.site == site_index(load, &name))
                .map(|r| r.sent)
                .min();
            first.map(|f| f.saturating_sub(lifted))
        }
        None => None,
    };
    tokio::time::sleep(timing.settle).await;

    // Leaks: wait (bounded) until the proxy's and the sites' counts match what the
    // clients hold; whatever is left over after 5 s is a leak.
    let mut open = (0, None, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let clients = load.open_long_lived();
        let gauge = proxy.open_connections().await;
        let mut at_sites = Some(0);
        for s in sites.iter() {
            at_sites = match (at_sites, s.open_connections().await) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        open = (clients, gauge, at_sites);
        if gauge.is_none_or(|g| g == clients) && at_sites == Some(clients) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fds_after = fd_count(proxy.pid());
    let t2 = load.now();
    let epoch2 = epoch_ms();

    let changes: Vec<Change> = match poller {
        Some(p) => {
            let seen = p.stop().await;
            seen.windows(2)
                .map(|w| Change {
                    from: w[0].1.clone(),
                    to: w[1].1.clone(),
                    at_ms: w[1].0.saturating_sub(epoch0),
                    why: String::new(),
                })
                .collect()
        }
        None => proxy
            .state_events(&name, epoch0)
            .await
            .into_iter()
            .filter(|e| e.0 <= epoch2)
            .map(|(at, from, to, why)| Change {
                from,
                to,
                at_ms: at - epoch0,
                why,
            })
            .collect(),
    };
    let min_down = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.to == "down")
        .filter_map(|(i, c)| {
            changes
                .get(i + 1)
                .map(|next| next.at_ms.saturating_sub(c.at_ms))
        })
        .min()
        .map(Duration::from_millis);

    let records = load.between(t0, t2);
    let faulty = site_index(load, &name);
    let affects = |r: &Record| {
        r.sent < t1
            && !r.kind.long_lived()
            && ((r.outcome == Outcome::Ok && r.site == faulty)
                || matches!(r.outcome, Outcome::Failed(_))
                || r.took >= SLOW_LINE)
    };
    let affected: Vec<&Record> = records.iter().filter(|r| affects(r)).collect();
    let moved = affected
        .iter()
        .map(|r| r.sent.saturating_sub(t0))
        .max()
        .unwrap_or_default();
    let mut failed = BTreeMap::new();
    let mut reconnects = BTreeMap::new();
    let mut examples = Vec::new();
    for r in &records {
        match &r.outcome {
            Outcome::Failed(e) => {
                *failed.entry(r.kind).or_insert(0) += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "{} at +{}ms: {e}",
                        r.kind.name(),
                        r.sent.saturating_sub(t0).as_millis()
                    ));
                }
            }
            Outcome::Lost(_) => *reconnects.entry(r.kind).or_insert(0) += 1,
            Outcome::Ok => {}
        }
    }
    let max_latency = records
        .iter()
        .filter(|r| !r.kind.long_lived() && r.outcome == Outcome::Ok)
        .map(|r| r.took)
        .max()
        .unwrap_or_default();
    Ok(Figures {
        fault,
        flavor: proxy.flavor,
        site: name.clone(),
        held,
        hold: t1.saturating_sub(t0),
        sent: records.len(),
        moved,
        affected: affected.len(),
        failed,
        examples,
        reconnects,
        max_latency,
        recovered,
        fds: (fds_before, fds_after),
        open,
        changes,
        kills,
        min_down,
    })
}

fn site_index(load: &Load, name: &str) -> Option<u8> {
    load.site_index(name)
}

/// Renders a Markdown table of figures, one row per (fault, proxy).
pub fn table(rows: &[Figures], checks: Checks) -> String {
    let mut out = String::from(
        "| fault (site) | proxy | sent | traffic moved after | affected requests | failed requests (retriable) | failed long-lived messages | long-lived conns on the site → reconnects (ws/sse/tcp) | slowest ok request | back in service after | state changes (down entries / kills; shortest down) | leaked conns | fds before → after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in rows {
        let ll_failed: usize = f
            .failed
            .iter()
            .filter(|(k, _)| k.long_lived())
            .map(|(_, n)| n)
            .sum();
        let by_kind = |m: &BTreeMap<Kind, usize>, long: bool| {
            let parts: Vec<String> = m
                .iter()
                .filter(|(k, n)| k.long_lived() == long && **n > 0)
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        };
        let reconnects = format!(
            "{}/{}/{}",
            f.reconnects.get(&Kind::Ws).unwrap_or(&0),
            f.reconnects.get(&Kind::Sse).unwrap_or(&0),
            f.reconnects.get(&Kind::Tcp).unwrap_or(&0)
        );
        let moved = if f.fault == Fault::Flap {
            "n/a (site flaps)".to_string()
        } else {
            format!("{} ms", f.moved.as_millis())
        };
        let dwell = f
            .min_down
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "-".to_string());
        let fds = |n: Option<usize>| n.map_or("?".to_string(), |n| n.to_string());
        out.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {} | {}{} | {}{} | {} → {} | {} ms | {} | {} ({} / {}; {}) | {} | {} → {} |\n",
            f.fault.name(),
            f.site,
            f.flavor.name(),
            f.sent,
            moved,
            f.affected,
            f.retriable_failed(),
            by_kind(&f.failed, false),
            ll_failed,
            by_kind(&f.failed, true),
            f.held,
            reconnects,
            f.max_latency.as_millis(),
            f.recovered
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or_else(|| "not in time".to_string()),
            f.changes.len(),
            f.down_entries(),
            f.kills,
            dwell,
            f.leaked_connections(),
            fds(f.fds.0),
            fds(f.fds.1),
        ));
    }
    out.push_str(&format!(
        "\nHysteresis: rise {} / fall {} at a {} ms interval ({} ms timeout) allow no stay in `down` shorter than {} ms.\n",
        checks.rise,
        checks.fall,
        checks.interval_ms,
        checks.timeout_ms,
        checks.min_down_dwell().as_millis()
    ));
    out
}
