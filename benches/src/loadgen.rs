//! `loadgen`: a small closed-loop HTTP/1.1 load generator for the failover benchmark
//! (`benches/failover.sh`).
//!
//! `--connections` keep-alive connections each send one request at a time (closed loop),
//! optionally paced so that all of them together send `--rate` requests per second. A
//! connection that sees a transport error counts the request as failed, drops the connection
//! and opens a new one for its next request. `--requests` stops after that many requests in
//! total (the callgrind measurement of `benches/run.sh`). At `--kill-after` seconds it runs
//! `kill -9 --kill-pid`, or the shell command `--fault-cmd` (a silent fault: `kill -STOP`, an
//! iptables DROP rule, a slow mode), and records when; at `--heal-after` it runs `--heal-cmd`
//! (`kill -CONT`, ...). It writes a JSON summary to `--out` (and prints it).
//!
//! Every request is recorded with its send time (µs since start), latency, status or error
//! and the `x-demo-site` header of the response, which names the site that served it.
//!
//! # Definitions used in the summary
//!
//! * **failed**: a request that got no response (connect, send or receive error, or no
//!   complete response within `--timeout`) or a non-2xx status.
//! * **failed_after_kill**: failed requests that *completed* (response or error) at or after
//!   the kill was issued, including requests already in flight when the site died.
//! * **lands elsewhere**: a request that got a 2xx response whose `x-demo-site` is present and
//!   differs from `--killed-site`.
//! * **kill time** K: the moment the `kill -9` command returned, so the signal has certainly
//!   been sent (`kill_done_ms`). Running `kill` takes 1–3 ms; requests sent between issuing it
//!   (`kill_ms`) and K may still be served by the site that is about to die, and are not
//!   counted against the proxy.
//! * **shift_ms**: let B be the bucket width (`--bucket-ms`, 50 ms).
//!   Bucket j (j ≥ 0) holds the requests *sent* in [K + jB, K + (j+1)B). Only complete
//!   buckets count: j < J where J = ⌊(end of sending − K) / B⌋. Bucket j is *shifted* when
//!   it is empty or at least 99% (`--threshold`) of its requests land elsewhere.
//!   `shift_ms` = j*·B for the smallest j* < J such that every bucket j*..J−1 is shifted and at
//!   least one of them is non-empty. So `shift_ms = 0` means that from the kill on, every
//!   50 ms of new requests was ≥ 99% served by other sites (e.g. because the proxy retried
//!   the requests that hit the dead site). `null` when there was no kill, no
//!   `--killed-site`, no complete bucket, or the last bucket is not shifted (traffic never
//!   shifted within the run). The resolution is B.
//!   With `--heal-after`, the buckets end at the heal: shift_ms is the time until no new
//!   request reached the faulty site while it was faulty.
//! * **back_ms**: with `--heal-after`, the time from the heal until the first request sent
//!   after it that the site served; `null` when it never did within the run.
//! * latency percentiles are over all requests that got a response (any status), in ms.
#![warn(unreachable_pub, missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Response header a demo site puts on every response.
const DEMO_SITE_HEADER: &str = "x-demo-site";

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "closed-loop HTTP/1.1 load generator with a timed kill -9 or fault"
)]
struct Args {
    /// Target URL, http://HOST:PORT/PATH (plain HTTP only).
    #[arg(long)]
    url: String,
    /// Keep-alive connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Total requests per second over all connections, paced (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds after start at which to `kill -9` `--kill-pid`.
    #[arg(long)]
    kill_after: Option<f64>,
    /// The process to kill.
    #[arg(long)]
    kill_pid: Option<u32>,
    /// Instead of `kill -9 --kill-pid`: a shell command run at `--kill-after` (the fault).
    #[arg(long)]
    fault_cmd: Option<String>,
    /// Seconds after start at which to run `--heal-cmd` (the end of the fault).
    #[arg(long)]
    heal_after: Option<f64>,
    /// The shell command that ends the fault.
    #[arg(long)]
    heal_cmd: Option<String>,
    /// Name (`x-demo-site`) of the site that `--kill-pid` serves.
    #[arg(long)]
    killed_site: Option<String>,
    /// Per-request timeout, seconds (counts as a failure).
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Bucket width for `shift_ms`, milliseconds.
    #[arg(long, default_value_t = 50)]
    bucket_ms: u64,
    /// Share of a bucket's requests that must land elsewhere for it to count as shifted.
    #[arg(long, default_value_t = 0.99)]
    threshold: f64,
    /// A label copied into the output (e.g. the proxy's name).
    #[arg(long)]
    label: Option<String>,
    /// Write the JSON summary here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every request's record into the output.
    #[arg(long)]
    records: bool,
    /// Stop after this many requests in total (still bounded by `--duration`).
    #[arg(long)]
    requests: Option<u64>,
}

/// One request's outcome.
#[derive(Debug, Clone)]
struct Record {
    conn: usize,
    /// Sent, µs since start.
    send_us: u64,
    /// Response fully read (or error seen), µs after `send_us`.
    latency_us: u64,
    /// HTTP status, 0 when there was none.
    status: u16,
    error: Option<String>,
    site: Option<String>,
    /// Whether the request went on an already used connection.
    reused: bool,
}

impl Record {
    fn ok(&self) -> bool {
        self.error.is_none() && (200..300).contains(&self.status)
    }
    fn done_us(&self) -> u64 {
        self.send_us + self.latency_us
    }
}

struct Target {
    addr: String,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad --url {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {url}: only http:// is supported"));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("--url {url}: no host"))?;
    let port = auth.port_u16().unwrap_or(80);
    let host = auth.host().to_string();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    Ok(Target {
        addr: format!("{host}:{port}"),
        host: auth.as_str().to_string(),
        path,
    })
}

struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    task: JoinHandle<()>,
    used: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(target: &Target) -> Result<Conn, String> {
    let stream = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn {
        sender,
        task,
        used: false,
    })
}

/// Sends one request on `slot` (connecting first if needed). Returns (status, site, reused).
/// On any error the connection is dropped, so the next request reconnects.
async fn one_request(
    slot: &mut Option<Conn>,
    target: &Target,
) -> Result<(u16, Option<String>, bool), (String, bool)> {
    if slot.as_ref().is_some_and(|c| c.sender.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(connect(target).await.map_err(|e| (e, false))?);
    }
    let Some(conn) = slot.as_mut() else {
        return Err(("no connection".to_string(), false));
    };
    let reused = conn.used;
    conn.used = true;
    let result = async {
        conn.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let req = hyper::Request::get(target.path.as_str())
            .header(hyper::header::HOST, target.host.as_str())
            .header(hyper::header::USER_AGENT, "sitesteer-loadgen")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let site = resp
            .headers()
            .get(DEMO_SITE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok::<_, String>((status, site))
    }
    .await;
    match result {
        Ok((status, site)) => Ok((status, site, reused)),
        Err(e) => {
            *slot = None;
            Err((e, reused))
        }
    }
}

async fn worker(
    id: usize,
    target: Arc<Target>,
    args: Arc<Args>,
    start: Instant,
    end: Instant,
    budget: Arc<AtomicU64>,
) -> Vec<Record> {
    let mut records = Vec::new();
    let interval = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    // Stagger the connections over one interval so that sends are spread evenly.
    let mut next = match interval {
        Some(iv) => start + iv.mul_f64(id as f64 / args.connections as f64),
        None => start,
    };
    let mut slot: Option<Conn> = None;
    loop {
        if interval.is_some() {
            tokio::time::sleep_until(next).await;
        }
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        if args
            .requests
            .is_some_and(|n| budget.fetch_add(1, Ordering::Relaxed) >= n)
        {
            break;
        }
        let outcome = tokio::time::timeout(timeout, one_request(&mut slot, &target)).await;
        let latency_us = sent.elapsed().as_micros() as u64;
        let send_us = sent.saturating_duration_since(start).as_micros() as u64;
        let record = match outcome {
            Ok(Ok((status, site, reused))) => Record {
                conn: id,
                send_us,
                latency_us,
                status,
                error: None,
                site,
                reused,
            },
            Ok(Err((error, reused))) => Record {
                conn: id,
                send_us,
                latency_us,
                status: 0,
                error: Some(error),
                site: None,
                reused,
            },
            Err(_) => {
                let reused = slot.as_ref().is_some_and(|c| c.used);
                slot = None;
                Record {
                    conn: id,
                    send_us,
                    latency_us,
                    status: 0,
                    error: Some(format!("timeout after {:?}", timeout)),
                    site: None,
                    reused,
                }
            }
        };
        records.push(record);
        if let Some(iv) = interval {
            next += iv;
            // Never burst to catch up after a slow response: start the schedule again.
            let now = Instant::now();
            if next < now {
                next = now;
            }
        }
    }
    records
}

/// Runs `program args` at `after`; returns (issued µs, done µs, result text).
async fn run_at(
    start: Instant,
    after: Duration,
    program: &'static str,
    args: Vec<String>,
) -> (u64, u64, String) {
    tokio::time::sleep_until(start + after).await;
    let issued = start.elapsed().as_micros() as u64;
    let result = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program).args(&args).status()
    })
    .await;
    let done = start.elapsed().as_micros() as u64;
    let text = match result {
        Ok(Ok(s)) if s.success() => "ok".to_string(),
        Ok(Ok(s)) => format!("{program} exited with {s}"),
        Ok(Err(e)) => format!("cannot run {program}: {e}"),
        Err(e) => format!("{program} task failed: {e}"),
    };
    (issued, done, text)
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx] as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn lands_elsewhere(r: &Record, killed: &str) -> bool {
    r.ok() && r.site.as_deref().is_some_and(|s| s != killed)
}

/// `shift_ms` as defined in the module documentation, plus the per-bucket table.
fn shift(
    records: &[Record],
    kill_us: u64,
    end_us: u64,
    bucket_us: u64,
    killed: &str,
    threshold: f64,
) -> (Option<u64>, Vec<Value>) {
    if end_us <= kill_us || bucket_us == 0 {
        return (None, Vec::new());
    }
    let complete = ((end_us - kill_us) / bucket_us) as usize;
    let mut sent = vec![0u64; complete];
    let mut elsewhere = vec![0u64; complete];
    let mut to_killed = vec![0u64; complete];
    let mut failed = vec![0u64; complete];
    for r in records.iter().filter(|r| r.send_us >= kill_us) {
        let j = ((r.send_us - kill_us) / bucket_us) as usize;
        if j >= complete {
            continue;
        }
        sent[j] += 1;
        if lands_elsewhere(r, killed) {
            elsewhere[j] += 1;
        } else if !r.ok() {
            failed[j] += 1;
        } else if r.site.as_deref() == Some(killed) {
            to_killed[j] += 1;
        }
    }
    let shifted = |j: usize| sent[j] == 0 || elsewhere[j] as f64 >= threshold * sent[j] as f64;
    let mut first: Option<usize> = None;
    let mut any_sent = false;
    for j in (0..complete).rev() {
        if !shifted(j) {
            break;
        }
        any_sent |= sent[j] > 0;
        if any_sent {
            first = Some(j);
        }
    }
    let table = (0..complete.min(40))
        .map(|j| {
            json!({
                "from_ms": j as u64 * bucket_us / 1000,
                "sent": sent[j],
                "elsewhere": elsewhere[j],
                "to_killed_site": to_killed[j],
                "failed": failed[j],
            })
        })
        .collect();
    (first.map(|j| j as u64 * bucket_us / 1000), table)
}

fn summarize(
    args: &Args,
    mut records: Vec<Record>,
    end_us: u64,
    kill: Option<(u64, u64, String)>,
    heal: Option<(u64, u64, String)>,
) -> Value {
    records.sort_by_key(|r| r.send_us);
    let total = records.len();
    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok()).collect();
    let kill_us = kill.as_ref().map(|k| k.1);
    let kill_issued_us = kill.as_ref().map(|k| k.0);
    let failed_after_kill = kill_issued_us
        .map(|k| failed.iter().filter(|r| r.done_us() >= k).count())
        .unwrap_or(0);
    let mut lat: Vec<u64> = records
        .iter()
        .filter(|r| r.status != 0)
        .map(|r| r.latency_us)
        .collect();
    lat.sort_unstable();
    let mut lat_after: Vec<u64> = match kill_us {
        Some(k) => records
            .iter()
            .filter(|r| r.status != 0 && r.send_us >= k && r.send_us < k + 1_000_000)
            .map(|r| r.latency_us)
            .collect(),
        None => Vec::new(),
    };
    lat_after.sort_unstable();

    let mut by_site = serde_json::Map::new();
    for r in records.iter().filter(|r| r.ok()) {
        let name = r.site.clone().unwrap_or_else(|| "(none)".to_string());
        let entry = by_site
            .entry(name)
            .or_insert_with(|| json!({"before_kill": 0, "after_kill": 0}));
        let key = match kill_us {
            Some(k) if r.send_us >= k => "after_kill",
            _ => "before_kill",
        };
        if let Some(n) = entry.get_mut(key) {
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
    }

    let heal_us = heal.as_ref().map(|h| h.1);
    let back_ms = match (heal_us, args.killed_site.as_deref()) {
        (Some(h), Some(site)) => records
            .iter()
            .filter(|r| r.send_us >= h && r.ok() && r.site.as_deref() == Some(site))
            .map(|r| round3((r.send_us - h) as f64 / 1000.0))
            .next(),
        _ => None,
    };
    let (shift_ms, buckets) = match (kill_us, args.killed_site.as_deref()) {
        (Some(k), Some(site)) => shift(
            &records,
            k,
            heal_us.unwrap_or(end_us).min(end_us),
            args.bucket_ms * 1000,
            site,
            args.threshold,
        ),
        _ => (None, Vec::new()),
    };
    let served_by_killed_after_kill = match (kill_us, args.killed_site.as_deref()) {
        (Some(k), Some(site)) => records
            .iter()
            .filter(|r| r.send_us >= k && r.ok() && r.site.as_deref() == Some(site))
            .count(),
        _ => 0,
    };

    let failures: Vec<Value> = failed
        .iter()
        .take(200)
        .map(|r| {
            json!({
                "conn": r.conn,
                "send_ms": round3(r.send_us as f64 / 1000.0),
                "since_kill_ms": kill_us.map(|k| round3((r.send_us as f64 - k as f64) / 1000.0)),
                "latency_ms": round3(r.latency_us as f64 / 1000.0),
                "status": r.status,
                "error": r.error,
                "site": r.site,
                "reused_connection": r.reused,
            })
        })
        .collect();
    let mut errors = serde_json::Map::new();
    for r in &failed {
        let key = match &r.error {
            Some(e) => e.split(':').next().unwrap_or("error").to_string(),
            None => format!("status {}", r.status),
        };
        let n = errors.get(&key).and_then(Value::as_u64).unwrap_or(0);
        errors.insert(key, json!(n + 1));
    }

    let mut out = json!({
        "label": args.label,
        "url": args.url,
        "connections": args.connections,
        "duration_s": args.duration,
        "rate": args.rate,
        "bucket_ms": args.bucket_ms,
        "threshold": args.threshold,
        "total": total,
        "ok": total - failed.len(),
        "failed": failed.len(),
        "failed_after_kill": failed_after_kill,
        "failure_kinds": errors,
        "killed_site": args.killed_site,
        "kill_ms": kill.as_ref().map(|k| round3(k.0 as f64 / 1000.0)),
        "kill_done_ms": kill.as_ref().map(|k| round3(k.1 as f64 / 1000.0)),
        "kill_result": kill.as_ref().map(|k| k.2.clone()),
        "shift_ms": shift_ms,
        "heal_ms": heal.as_ref().map(|h| round3(h.0 as f64 / 1000.0)),
        "heal_done_ms": heal.as_ref().map(|h| round3(h.1 as f64 / 1000.0)),
        "heal_result": heal.as_ref().map(|h| h.2.clone()),
        "back_ms": back_ms,
        "served_by_killed_site_after_kill": served_by_killed_after_kill,
        "p50_ms": percentile(&lat, 50.0).map(round3),
        "p99_ms": percentile(&lat, 99.0).map(round3),
        "max_ms": lat.last().map(|v| round3(*v as f64 / 1000.0)),
        "p99_first_second_after_kill_ms": percentile(&lat_after, 99.0).map(round3),
        "max_first_second_after_kill_ms": lat_after.last().map(|v| round3(*v as f64 / 1000.0)),
        "by_site": by_site,
        "buckets_after_kill": buckets,
        "failures": failures,
    });
    if args.records {
        let all: Vec<Value> = records
            .iter()
            .map(|r| {
                json!([
                    r.conn,
                    r.send_us,
                    r.latency_us,
                    r.status,
                    r.site,
                    r.error,
                    r.reused
                ])
            })
            .collect();
        out["records_columns"] = json!([
            "conn",
            "send_us",
            "latency_us",
            "status",
            "site",
            "error",
            "reused"
        ]);
        out["records"] = Value::Array(all);
    }
    out
}

async fn run(args: Args) -> Result<Value, String> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".to_string());
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".to_string());
    }
    if args.kill_after.is_some() != (args.kill_pid.is_some() || args.fault_cmd.is_some())
        || (args.kill_pid.is_some() && args.fault_cmd.is_some())
    {
        return Err("--kill-after goes with one of --kill-pid and --fault-cmd".to_string());
    }
    if args.heal_after.is_some() != args.heal_cmd.is_some() {
        return Err("--heal-after and --heal-cmd go together".to_string());
    }
    let target = Arc::new(parse_url(&args.url)?);
    let args = Arc::new(args);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);

    let within = |at: f64| at >= 0.0 && at < args.duration;
    let fault: Option<(&'static str, Vec<String>)> = match (&args.kill_pid, &args.fault_cmd) {
        (Some(pid), _) => Some(("kill", vec!["-9".to_string(), pid.to_string()])),
        (None, Some(cmd)) => Some(("sh", vec!["-c".to_string(), cmd.clone()])),
        (None, None) => None,
    };
    let killer = match (args.kill_after, fault) {
        (Some(after), Some((program, argv))) if within(after) => Some(tokio::spawn(run_at(
            start,
            Duration::from_secs_f64(after),
            program,
            argv,
        ))),
        (Some(_), Some(_)) => return Err("--kill-after must be within --duration".to_string()),
        _ => None,
    };
    let healer = match (args.heal_after, &args.heal_cmd) {
        (Some(after), Some(cmd)) if within(after) && args.kill_after.is_some_and(|k| k < after) => {
            Some(tokio::spawn(run_at(
                start,
                Duration::from_secs_f64(after),
                "sh",
                vec!["-c".to_string(), cmd.clone()],
            )))
        }
        (Some(_), Some(_)) => {
            return Err("--heal-after must be after --kill-after and within --duration".to_string())
        }
        _ => None,
    };
    let budget = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.connections)
        .map(|id| {
            tokio::spawn(worker(
                id,
                target.clone(),
                args.clone(),
                start,
                end,
                budget.clone(),
            ))
        })
        .collect();
    let mut records = Vec::new();
    for w in workers {
        match w.await {
            Ok(r) => records.extend(r),
            Err(e) => eprintln!("loadgen: a connection task failed: {e}"),
        }
    }
    let kill = match killer {
        Some(k) => match k.await {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("loadgen: the kill task failed: {e}");
                None
            }
        },
        None => None,
    };
    let heal = match healer {
        Some(h) => h.await.ok(),
        None => None,
    };
    let end_us = end.saturating_duration_since(start).as_micros() as u64;
    Ok(summarize(&args, records, end_us, kill, heal))
}

fn main() -> std::process::ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let out_path = args.out.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let summary = match runtime.block_on(run(args)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let text = serde_json::to_string_pretty(&summary).unwrap_or_else(|_| "{}".to_string());
    if let Some(path) = out_path {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return std::process::ExitCode::from(1);
        }
    }
    // Print the summary without the long lists.
    let mut short = summary;
    if let Some(obj) = short.as_object_mut() {
        for key in [
            "buckets_after_kill",
            "failures",
            "records",
            "records_columns",
        ] {
            obj.remove(key);
        }
    }
    println!(
        "{}",
        serde_json::to_string(&short).unwrap_or_else(|_| "{}".to_string())
    );
    std::process::ExitCode::SUCCESS
}
