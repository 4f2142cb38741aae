//! `sitesteer ctl`: the operator's client of the admin API. Human tables (coloured on a
//! terminal) by default, `--json` for scripts; clear errors when the API is unreachable
//! (exit 2) or refuses (exit 1).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{json, Value};
use sitesteer_probes::probe::client;

use crate::exit::{EXIT_RUNTIME, EXIT_USAGE};

/// `sitesteer ctl` arguments.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// The admin API.
    #[arg(long, env = "SITESTEER_ADMIN", default_value = "http://127.0.0.1:9900")]
    pub admin: String,
    /// The admin token (for writes).
    #[arg(long, env = "SITESTEER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// On or off.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `sitesteer ctl` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CtlCommand {
    /// Sites and recent events at a glance.
    Status,
    /// Every site's state, score, latency, error rate, weight and connections.
    Sites,
    /// Set a site's weight at runtime (persisted).
    Weight {
        /// The site.
        site: String,
        /// The new weight (0 takes the site out of rotation).
        #[arg(allow_negative_numbers = true)]
        weight: i64,
    },
    /// Stop new traffic to a site; open connections finish within the drain timeout.
    Drain {
        /// The site.
        site: String,
    },
    /// Let a drained (or failed-over) site take traffic again.
    Undrain {
        /// The site.
        site: String,
    },
    /// Take a site into or out of maintenance (closes its connections).
    Maint {
        /// The site.
        site: String,
        /// on or off.
        switch: Switch,
    },
    /// Manual failover: FROM stops taking traffic; TO (optional) is preferred.
    Failover {
        /// The site to leave.
        #[arg(long)]
        from: String,
        /// The site to prefer.
        #[arg(long)]
        to: Option<String>,
    },
    /// Recent state changes and operator actions, newest first.
    Events {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Measured failovers, newest first.
    Incidents,
    /// Reload the config file; a bad file is refused with its errors.
    Reload,
}

/// A failed call: the exit code and one sentence.
pub(crate) struct CtlError(pub u8, pub String);

/// The admin API client.
pub(crate) struct AdminClient {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `url` (`http://HOST:PORT`).
    pub(crate) async fn connect(url: &str, token: Option<String>) -> Result<Self, CtlError> {
        let authority = url
            .strip_prefix("http://")
            .map(|r| r.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| {
                CtlError(
                    EXIT_USAGE,
                    format!("the admin URL {url:?} is not http://HOST:PORT"),
                )
            })?;
        let addr = tokio::net::lookup_host(authority)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                CtlError(
                    EXIT_RUNTIME,
                    format!("cannot resolve the admin address {authority:?}"),
                )
            })?;
        Ok(Self {
            addr,
            host: authority.to_string(),
            token,
        })
    }

    /// `GET path` as text (the Prometheus metrics); a non-2xx answer is an error.
    pub(crate) async fn text(&self, path: &str) -> Result<String, CtlError> {
        let answer = self.send(Method::GET, path, None).await?;
        if !answer.status.is_success() {
            return Err(CtlError(
                EXIT_USAGE,
                format!("the admin API refused {path}: HTTP {}", answer.status),
            ));
        }
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// One request to the API, bounded to 30 s.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<client::Answer, CtlError> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let body = body.map(|b| Bytes::from(b.to_string()));
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client::request(self.addr, method, path, &self.host, &headers, body),
        )
        .await
        .map_err(|_| {
            CtlError(
                EXIT_RUNTIME,
                format!("the admin API at {} did not answer within 30s", self.host),
            )
        })?
        .map_err(|e| {
            CtlError(
                EXIT_RUNTIME,
                format!(
                    "cannot reach the admin API at http://{} ({})",
                    self.host,
                    e.as_str()
                ),
            )
        })?;
        Ok(answer)
    }

    /// Calls the API; 2xx answers are returned as JSON, others become errors.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CtlError> {
        let answer = self.send(method, path, body).await?;
        let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if answer.status.is_success() {
            return Ok(json);
        }
        let mut message = json
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", answer.status));
        if let Some(errors) = json.get("errors").and_then(Value::as_array) {
            for e in errors {
                let line = e
                    .get("line")
                    .and_then(Value::as_u64)
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                message.push_str(&format!(
                    "\n  {}{line}: {}",
                    e.get("path").and_then(Value::as_str).unwrap_or(""),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
        Err(CtlError(
            EXIT_USAGE,
            format!("the admin API refused: {message}"),
        ))
    }
}

/// Runs `sitesteer ctl`.
pub(crate) fn main(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sitesteer: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CtlError(code, message)) => {
            eprintln!("sitesteer: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: CtlArgs) -> Result<(), CtlError> {
    let api = AdminClient::connect(&args.admin, args.token.clone()).await?;
    let enc = |s: &str| s.replace('/', "%2F");
    let (result, render): (Value, fn(&Value) -> String) = match &args.command {
        CtlCommand::Status => {
            let sites = api.call(Method::GET, "/api/v1/sites", None).await?;
            let events = api
                .call(Method::GET, "/api/v1/events?limit=5", None)
                .await?;
            (json!({"sites": sites, "events": events}), render_status)
        }
        CtlCommand::Sites => (
            api.call(Method::GET, "/api/v1/sites", None).await?,
            render_sites,
        ),
        CtlCommand::Weight { site, weight } => (
            api.call(
                Method::PUT,
                &format!("/api/v1/sites/{}/weight", enc(site)),
                Some(json!({"weight": weight})),
            )
            .await?,
            render_ack,
        ),
        CtlCommand::Drain { site } => (
            api.call(
                Method::POST,
                &format!("/api/v1/sites/{}/drain", enc(site)),
                None,
            )
            .await?,
            render_ack,
        ),
        CtlCommand::Undrain { site } => (
            api.call(
                Method::POST,
                &format!("/api/v1/sites/{}/undrain", enc(site)),
                None,
            )
            .await?,
            render_ack,
        ),
        CtlCommand::Maint { site, switch } => (
            api.call(
                Method::POST,
                &format!("/api/v1/sites/{}/maintenance", enc(site)),
                Some(json!({"on": matches!(switch, Switch::On)})),
            )
            .await?,
            render_ack,
        ),
        CtlCommand::Failover { from, to } => (
            api.call(
                Method::POST,
                "/api/v1/failover",
                Some(json!({"from": from, "to": to})),
            )
            .await?,
            render_ack,
        ),
        CtlCommand::Events { limit } => (
            api.call(Method::GET, &format!("/api/v1/events?limit={limit}"), None)
                .await?,
            render_events,
        ),
        CtlCommand::Incidents => (
            api.call(Method::GET, "/api/v1/incidents", None).await?,
            render_incidents,
        ),
        CtlCommand::Reload => (
            api.call(Method::POST, "/api/v1/reload", None).await?,
            render_reload,
        ),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        print!("{}", render(&result));
    }
    Ok(())
}

fn colour_on() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(state: &str) -> String {
    if !colour_on() {
        return state.to_string();
    }
    let code = match state {
        "up" => "32",
        "degraded" => "33",
        "down" => "31;1",
        "drained" => "35",
        "maintenance" => "90",
        _ => "0",
    };
    format!("\x1b[{code}m{state}\x1b[0m")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Pads `text` (whose visible width is `width`) to `to` columns.
fn pad(text: String, width: usize, to: usize) -> String {
    format!("{text}{}", " ".repeat(to.saturating_sub(width)))
}

fn render_sites(v: &Value) -> String {
    let sites = v
        .get("sites")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let name_w = sites
        .iter()
        .map(|x| s(x, "name").len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<name_w$}  {:<11}  {:>4}  {:>9}  {:>5}  {:>9}  {:>9}  {:>6}  {:>5}  {:>8}  WHY\n",
        "SITE", "STATE", "TIER", "WEIGHT", "SCORE", "LAT ms", "P99 ms", "ERR%", "CONNS", "AVAIL 1h"
    );
    for x in &sites {
        let state = s(x, "state");
        out.push_str(&format!(
            "{:<name_w$}  {}  {:>4}  {:>9}  {:>5.3}  {:>9.2}  {:>9.2}  {:>6.2}  {:>5}  {:>7.3}%  {}\n",
            s(x, "name"),
            pad(paint(state), state.len(), 11),
            x.get("tier").and_then(Value::as_u64).unwrap_or(0),
            format!("{}/{}", x.get("effective_weight").and_then(Value::as_u64).unwrap_or(0), x.get("configured_weight").and_then(Value::as_u64).unwrap_or(0)),
            f(x, "score"),
            f(x, "latency_ewma_ms"),
            f(x, "latency_p99_ms"),
            f(x, "error_rate") * 100.0,
            x.get("open_connections").and_then(Value::as_u64).unwrap_or(0),
            f(x, "availability_1h") * 100.0,
            s(x, "reason"),
        ));
    }
    if v.get("panic").and_then(Value::as_bool).unwrap_or(false) {
        out.push_str("PANIC MODE: no site is up or degraded; traffic spreads over every site not in maintenance\n");
    }
    out
}

fn render_events(v: &Value) -> String {
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    for e in &events {
        let at = e.get("at_ms").and_then(Value::as_u64).unwrap_or(0);
        let secs = at / 1000;
        let (h, m, sec) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let change = match (
            e.get("from").and_then(Value::as_str),
            e.get("to").and_then(Value::as_str),
        ) {
            (Some(from), Some(to)) => format!(" {} -> {}", paint(from), paint(to)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{h:02}:{m:02}:{sec:02}.{:03}Z  {:<8}  {:<12}{change}  {} ({})\n",
            at % 1000,
            s(e, "kind"),
            e.get("site").and_then(Value::as_str).unwrap_or("-"),
            s(e, "reason"),
            s(e, "actor"),
        ));
    }
    if events.is_empty() {
        out.push_str("no events yet\n");
    }
    out
}

fn render_status(v: &Value) -> String {
    let mut out = render_sites(&v["sites"]);
    out.push_str("\nrecent events:\n");
    out.push_str(&render_events(&v["events"]));
    out
}

fn render_ack(v: &Value) -> String {
    match v.get("site") {
        Some(site) => format!(
            "ok: {} is {} (weight {}/{}){}\n",
            s(site, "name"),
            paint(s(site, "state")),
            site.get("effective_weight")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            site.get("configured_weight")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            if s(site, "reason").is_empty() {
                String::new()
            } else {
                format!(": {}", s(site, "reason"))
            }
        ),
        None => match (
            v.get("from").and_then(Value::as_str),
            v.get("to").and_then(Value::as_str),
        ) {
            (Some(from), Some(to)) => format!(
                "ok: failover from {from} to {to}; `sitesteer ctl undrain {from}` ends it\n"
            ),
            (Some(from), None) => {
                format!("ok: failover away from {from}; `sitesteer ctl undrain {from}` ends it\n")
            }
            _ => "ok\n".to_string(),
        },
    }
}

fn render_reload(v: &Value) -> String {
    let r = &v["reload"];
    let mut out = format!(
        "reloaded: generation {}, {} sites",
        r.get("generation").and_then(Value::as_u64).unwrap_or(0),
        r.get("sites").and_then(Value::as_u64).unwrap_or(0)
    );
    for key in ["added", "removed", "needs_restart"] {
        if let Some(items) = r
            .get(key)
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            out.push_str(&format!(
                ", {}: {}",
                key.replace('_', " "),
                names.join(", ")
            ));
        }
    }
    out.push('\n');
    out
}

fn render_incidents(v: &Value) -> String {
    let incidents = v
        .get("incidents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if incidents.is_empty() {
        return "no incidents recorded\n".into();
    }
    let mut out = format!(
        "{:<24}  {:<12}  {:>10}  {:>10}  {:>6}  {:>7}  MET\n",
        "STARTED", "SITE", "DETECT ms", "SHIFT ms", "FAILED", "RETRIED"
    );
    for i in &incidents {
        let met = i.get("met").and_then(Value::as_bool).unwrap_or(false);
        out.push_str(&format!(
            "{:<24}  {:<12}  {:<9}  {:>10}  {:>10}  {:>6}  {:>7}  {}\n",
            s(i, "started"),
            s(i, "site"),
            s(i, "cause"),
            i.get("detection_ms")
                .map(|x| x.to_string())
                .unwrap_or_default(),
            i.get("shift_ms").map(|x| x.to_string()).unwrap_or_default(),
            i.get("failed_requests")
                .map(|x| x.to_string())
                .unwrap_or_default(),
            i.get("retried_requests")
                .map(|x| x.to_string())
                .unwrap_or_default(),
            if met {
                paint("up").replace("up", "yes")
            } else {
                paint("down").replace("down", "no")
            },
        ));
    }
    out
}
