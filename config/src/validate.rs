//! Turns a [`RawConfig`] into a [`Config`], collecting every error with its key path.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::defaults as d;
use crate::duration::parse_duration;
use crate::model::*;
use crate::raw::*;

mod dns_guard;
mod retry_budget;

/// Collects errors as (key path, message); lines are added by the caller.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }
}

/// `admin.allowed_hosts`: DNS names (letters, digits, `-`, `.`), without a port, lowercased.
fn allowed_hosts(names: &[String], p: &mut Problems) -> Vec<String> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.len() > 253 || !name.split('.').all(label_ok) {
            p.add(
                format!("admin.allowed_hosts[{i}]"),
                format!("must be a DNS name without a port (such as \"admin.example.com\"), got {name:?}"),
            );
            continue;
        }
        out.push(name);
    }
    out
}

/// Validates `raw`; `base_dir` is where relative paths in the file are anchored.
pub(crate) fn validate(raw: RawConfig, base_dir: &Path, p: &mut Problems) -> Option<Config> {
    let listen = listen(&raw.listen, p);
    let admin = Admin {
        token_file: raw.admin.token_file.as_deref().map(|f| anchor(base_dir, f)),
        allowed_hosts: allowed_hosts(raw.admin.allowed_hosts.as_deref().unwrap_or(&[]), p),
    };
    let state_file = anchor(base_dir, raw.state_file.as_deref().unwrap_or(d::STATE_FILE));
    let objectives = objectives(&raw.objectives, "objectives", &Objectives::default(), p);
    let tier_objectives = tier_objectives(&raw.tier, &objectives, p);
    if !raw.site_declared {
        p.add("site", "at least one [[site]] is required");
    }
    let sites = sites(&raw.site, &objectives, &tier_objectives, p);
    let routes = routes(&raw.route, &sites, p);
    let probes = probes(&raw.probe, &sites, p);
    let health = health(&raw.health, p);
    let mut proxy = proxy(&raw.proxy, base_dir, p);
    proxy.upgrade_sock = upgrade_sock(raw.proxy.upgrade_sock.as_deref(), base_dir, &state_file, p);
    proxy.trusted_proxies = crate::forwarding::trusted_proxies(
        raw.proxy.trusted_proxies.as_deref(),
        &mut |path, message| p.add(path, message),
    );
    proxy.proxy_protocol = crate::forwarding::proxy_protocol(
        raw.proxy.proxy_protocol.as_deref(),
        listen.as_ref().map(|l| (l.http.is_some(), l.tcp.is_some())),
        &proxy.trusted_proxies,
        &mut |path, message| p.add(path, message),
    );
    let dns = raw.dns.as_ref().map(|r| dns(r, base_dir, p));
    let geo = geo(&raw.geo, p);
    let cluster = raw.cluster.as_ref().map(|r| cluster(r, base_dir, p));
    let webhooks = webhooks(&raw.webhook, p);
    let drills = drills(&raw.drill, &sites, p);
    let limits = limits(&raw.limits, p);
    let tls = tls(raw.tls.as_ref(), listen.as_ref(), base_dir, p);
    let mut sites = sites;
    site_tls(&raw.site, &mut sites, &tls, base_dir, p);

    if let (Some(admin_addr), true) = (listen.as_ref().map(|l| l.admin), admin.token_file.is_none())
    {
        if !admin_addr.ip().is_loopback() {
            p.add(
                "admin.token_file",
                format!("the admin listener {admin_addr} is not on loopback, so a token_file is required to protect writes"),
            );
        }
    }
    if let Some(dns) = &dns {
        if listen.as_ref().is_some_and(|l| l.dns.is_none()) {
            p.add(
                "listen.dns",
                "[dns] is configured but listen.dns is not set",
            );
        }
        let _ = dns;
    }

    if !p.0.is_empty() {
        return None;
    }
    Some(Config {
        listen: listen?,
        admin,
        state_file,
        sites,
        routes,
        probes,
        health,
        proxy,
        objectives,
        dns,
        geo,
        cluster,
        webhooks,
        drills,
        limits,
        tls,
    })
}

fn anchor(base_dir: &Path, file: &str) -> PathBuf {
    let path = PathBuf::from(file);
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

fn socket_addr(text: &str, path: &str, p: &mut Problems) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(path, format!("expected an address such as \"127.0.0.1:8080\" or \"[::1]:8080\", got {text:?}"));
            None
        }
    }
}

fn duration(text: &Option<String>, default: Duration, path: &str, p: &mut Problems) -> Duration {
    match text {
        None => default,
        Some(t) => parse_duration(t).unwrap_or_else(|e| {
            p.add(path, e);
            default
        }),
    }
}

/// A duration between `range` milliseconds (inclusive), else `default_ms` with a problem.
fn duration_in(
    text: &Option<String>,
    default_ms: u64,
    range: (u64, u64),
    path: &str,
    p: &mut Problems,
) -> Duration {
    let default = Duration::from_millis(default_ms);
    let value = duration(text, default, path, p);
    let (lo, hi) = (
        Duration::from_millis(range.0),
        Duration::from_millis(range.1),
    );
    if value < lo || value > hi {
        p.add(
            path,
            format!("must be between {lo:?} and {hi:?}, got {value:?}"),
        );
        return default;
    }
    value
}

fn int_in<T: TryFrom<i64> + Copy>(
    value: Option<i64>,
    default: T,
    range: (i64, i64),
    path: &str,
    p: &mut Problems,
) -> T {
    match value {
        None => default,
        Some(v) if v >= range.0 && v <= range.1 => T::try_from(v).unwrap_or(default),
        Some(v) => {
            p.add(
                path,
                format!("must be between {} and {}, got {v}", range.0, range.1),
            );
            default
        }
    }
}

fn fraction(
    value: Option<f64>,
    default: f64,
    open_zero: bool,
    path: &str,
    p: &mut Problems,
) -> f64 {
    match value {
        None => default,
        Some(v) if v.is_finite() && v <= 1.0 && (v > 0.0 || (!open_zero && v == 0.0)) => v,
        Some(v) => {
            let lower = if open_zero { "above 0" } else { "at least 0" };
            p.add(path, format!("must be {lower} and at most 1, got {v}"));
            default
        }
    }
}

fn listen(raw: &RawListen, p: &mut Problems) -> Option<Listen> {
    let before = p.0.len();
    let http = socket_addr(
        raw.http.as_deref().unwrap_or(d::LISTEN_HTTP),
        "listen.http",
        p,
    );
    let tcp = raw
        .tcp
        .as_deref()
        .and_then(|t| socket_addr(t, "listen.tcp", p));
    let dns = raw
        .dns
        .as_deref()
        .and_then(|t| socket_addr(t, "listen.dns", p));
    let admin = socket_addr(
        raw.admin.as_deref().unwrap_or(d::LISTEN_ADMIN),
        "listen.admin",
        p,
    );
    let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
    for (addr, key) in [(http, "http"), (tcp, "tcp"), (dns, "dns"), (admin, "admin")] {
        if let Some(addr) = addr {
            if let Some((_, other)) = seen.iter().find(|(a, _)| *a == addr) {
                p.add(
                    format!("listen.{key}"),
                    format!("{addr} is already used by listen.{other}"),
                );
            }
            seen.push((addr, key));
        }
    }
    if p.0.len() != before {
        return None;
    }
    Some(Listen {
        http,
        tcp,
        dns,
        admin: admin?,
    })
}

fn availability(text: &str, path: &str, p: &mut Problems) -> Option<f64> {
    let t = text.trim();
    let parsed = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|v| v / 100.0),
        None => t.parse::<f64>().ok(),
    };
    match parsed {
        Some(v) if v > 0.0 && v <= 1.0 => Some(v),
        _ => {
            p.add(
                path,
                format!("expected a percentage such as \"99.999%\", got {text:?}"),
            );
            None
        }
    }
}

fn objectives(raw: &RawObjectives, path: &str, base: &Objectives, p: &mut Problems) -> Objectives {
    Objectives {
        shift_time: duration(
            &raw.shift_time,
            base.shift_time,
            &format!("{path}.shift_time"),
            p,
        ),
        failed_requests: int_in(
            raw.failed_requests,
            base.failed_requests,
            (0, i64::MAX),
            &format!("{path}.failed_requests"),
            p,
        ),
        availability: raw
            .availability
            .as_deref()
            .and_then(|a| availability(a, &format!("{path}.availability"), p))
            .unwrap_or(base.availability),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn sites(
    raw: &[RawSite],
    global: &Objectives,
    tiers: &[(u8, Objectives)],
    p: &mut Problems,
) -> Vec<Site> {
    if raw.len() > d::MAX_SITES {
        p.add(
            "site",
            format!(
                "at most {} sites are supported, got {}",
                d::MAX_SITES,
                raw.len()
            ),
        );
    }
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let path = format!("site[{i}]");
        let name = match s.name.as_deref() {
            None => {
                p.add(format!("{path}.name"), "is required");
                format!("#{i}")
            }
            Some(n) if !valid_name(n) => {
                p.add(format!("{path}.name"), format!("{n:?} is not a valid site name: use 1 to 63 letters, digits, '-', '_' or '.'"));
                n.to_string()
            }
            Some(n) => {
                if !names.insert(n.to_string()) {
                    p.add(format!("{path}.name"), format!("duplicate site name {n:?}"));
                }
                n.to_string()
            }
        };
        let region = s.region.clone().unwrap_or_else(|| d::REGION.to_string());
        if region.is_empty() {
            p.add(format!("{path}.region"), "must not be empty");
        }
        let tier = int_in(s.tier, d::TIER, (0, 255), &format!("{path}.tier"), p);
        let weight = int_in(
            s.weight,
            d::WEIGHT,
            (0, d::MAX_WEIGHT as i64),
            &format!("{path}.weight"),
            p,
        );
        let address = s
            .address
            .as_deref()
            .and_then(|a| match a.trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    p.add(
                        format!("{path}.address"),
                        format!("expected an IP address such as \"192.0.2.10\", got {a:?}"),
                    );
                    None
                }
            });
        if let Some(h) = &s.host {
            if h.is_empty()
                || h.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                p.add(
                    format!("{path}.host"),
                    format!("{h:?} is not a valid Host header value"),
                );
            }
        }
        let mut endpoints = Endpoints::default();
        let e = &s.endpoints;
        for (kind, text) in [
            (EndpointKind::Http, &e.http),
            (EndpointKind::Ws, &e.ws),
            (EndpointKind::Sse, &e.sse),
            (EndpointKind::Tcp, &e.tcp),
        ] {
            if let Some(t) = text {
                if let Some(a) = socket_addr(t, &format!("{path}.endpoints.{}", kind.as_str()), p) {
                    endpoints.set(kind, a);
                }
            }
        }
        if e.http.is_none() && e.ws.is_none() && e.sse.is_none() && e.tcp.is_none() {
            p.add(
                format!("{path}.endpoints"),
                "a site needs at least one endpoint (http, ws, sse or tcp)",
            );
        }
        // A site's own objectives, else its tier's, else the global ones.
        let base = tiers
            .iter()
            .find(|(t, _)| *t == tier)
            .map_or(global, |(_, o)| o);
        let objectives = match &s.objectives {
            Some(o) => objectives(o, &format!("{path}.objectives"), base, p),
            None => base.clone(),
        };
        out.push(Site {
            tls: None, // set by `site_tls`, which knows the global `[tls] ca_file`
            name,
            region,
            tier,
            weight,
            address,
            host: s.host.clone(),
            endpoints,
            objectives,
            max_in_flight: s.max_in_flight.map(|_| {
                int_in(
                    s.max_in_flight,
                    1,
                    (1, i64::from(d::MAX_IN_FLIGHT_MAX)),
                    &format!("{path}.max_in_flight"),
                    p,
                )
            }),
        });
    }
    out
}

fn endpoint_kind(
    text: &Option<String>,
    default: EndpointKind,
    path: &str,
    p: &mut Problems,
) -> EndpointKind {
    match text.as_deref() {
        None => default,
        Some(t) => EndpointKind::parse(t).unwrap_or_else(|| {
            p.add(
                path,
                format!("unknown endpoint {t:?}: expected http, ws, sse or tcp"),
            );
            default
        }),
    }
}

fn some_site_has(sites: &[Site], kind: EndpointKind) -> bool {
    sites.is_empty() || sites.iter().any(|s| s.endpoints.get(kind).is_some())
}

fn routes(raw: &[RawRoute], sites: &[Site], p: &mut Problems) -> Vec<Route> {
    let mut out = Vec::new();
    let mut prefixes = HashSet::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("route[{i}]");
        let prefix = match r.prefix.as_deref() {
            None => {
                p.add(format!("{path}.prefix"), "is required");
                continue;
            }
            Some(pre) if !pre.starts_with('/') => {
                p.add(
                    format!("{path}.prefix"),
                    format!("must start with '/', got {pre:?}"),
                );
                continue;
            }
            Some(pre) => pre.to_string(),
        };
        if !prefixes.insert(prefix.clone()) {
            p.add(
                format!("{path}.prefix"),
                format!("duplicate route prefix {prefix:?}"),
            );
        }
        let endpoint_path = format!("{path}.endpoint");
        if r.endpoint.is_none() {
            p.add(&endpoint_path, "is required");
            continue;
        }
        let endpoint = endpoint_kind(&r.endpoint, EndpointKind::Http, &endpoint_path, p);
        if !some_site_has(sites, endpoint) {
            p.add(
                endpoint_path,
                format!(
                    "routes to the {} endpoint, but no site has one",
                    endpoint.as_str()
                ),
            );
        }
        out.push(Route { prefix, endpoint });
    }
    if raw.is_empty() {
        // Default routing: erlmcp's paths to their transports, everything else to http.
        for (prefix, kind) in [
            ("/mcp/ws", EndpointKind::Ws),
            ("/mcp/sse", EndpointKind::Sse),
            ("/", EndpointKind::Http),
        ] {
            if sites.iter().any(|s| s.endpoints.get(kind).is_some()) {
                out.push(Route {
                    prefix: prefix.to_string(),
                    endpoint: kind,
                });
            }
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    out
}

fn probe_kind(text: &str, path: &str, p: &mut Problems) -> Option<ProbeKind> {
    let kind = match text {
        "tcp" => ProbeKind::Tcp,
        "http" => ProbeKind::Http,
        "mcp" => ProbeKind::Mcp,
        "ws" => ProbeKind::Ws,
        "sse" => ProbeKind::Sse,
        other => {
            p.add(
                path,
                format!("unknown probe kind {other:?}: expected tcp, http, mcp, ws or sse"),
            );
            return None;
        }
    };
    Some(kind)
}

fn probes(raw: &[RawProbe], sites: &[Site], p: &mut Problems) -> Vec<Probe> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("probe[{i}]");
        let Some(kind_text) = r.kind.as_deref() else {
            p.add(
                format!("{path}.kind"),
                "is required: tcp, http, mcp, ws or sse",
            );
            continue;
        };
        let Some(kind) = probe_kind(kind_text, &format!("{path}.kind"), p) else {
            continue;
        };
        let default_endpoint = match kind {
            ProbeKind::Ws => EndpointKind::Ws,
            ProbeKind::Sse => EndpointKind::Sse,
            _ => EndpointKind::Http,
        };
        let endpoint = endpoint_kind(
            &r.endpoint,
            default_endpoint,
            &format!("{path}.endpoint"),
            p,
        );
        if !some_site_has(sites, endpoint) {
            p.add(
                format!("{path}.endpoint"),
                format!(
                    "probes the {} endpoint, but no site has one",
                    endpoint.as_str()
                ),
            );
        }
        let default_path = match kind {
            ProbeKind::Mcp => d::PROBE_MCP_PATH,
            ProbeKind::Ws => d::PROBE_WS_PATH,
            ProbeKind::Sse => d::PROBE_SSE_PATH,
            _ => d::PROBE_HTTP_PATH,
        };
        let probe_path = r.path.clone().unwrap_or_else(|| default_path.to_string());
        if !probe_path.starts_with('/') {
            p.add(
                format!("{path}.path"),
                format!("must start with '/', got {probe_path:?}"),
            );
        }
        let interval = duration(
            &r.interval,
            Duration::from_millis(d::PROBE_INTERVAL_MS),
            &format!("{path}.interval"),
            p,
        );
        if interval < Duration::from_millis(d::PROBE_MIN_INTERVAL_MS) {
            p.add(
                format!("{path}.interval"),
                format!("must be at least {}ms", d::PROBE_MIN_INTERVAL_MS),
            );
        }
        let default_timeout = Duration::from_millis(d::PROBE_TIMEOUT_MS).min(interval * 4 / 5);
        let timeout = duration(&r.timeout, default_timeout, &format!("{path}.timeout"), p);
        if timeout >= interval {
            p.add(
                format!("{path}.timeout"),
                format!(
                    "must be shorter than the interval ({}), got {}",
                    crate::format_duration(interval),
                    crate::format_duration(timeout)
                ),
            );
        }
        if timeout.is_zero() {
            p.add(format!("{path}.timeout"), "must be above zero");
        }
        let jitter = duration(
            &r.jitter,
            interval / d::PROBE_JITTER_DIVISOR,
            &format!("{path}.jitter"),
            p,
        );
        if jitter >= interval {
            p.add(
                format!("{path}.jitter"),
                "must be shorter than the interval",
            );
        }
        let expect_status = match r.expect_status.as_deref() {
            None => d::PROBE_EXPECT_STATUS,
            Some([lo, hi]) if (100..=599).contains(lo) && (100..=599).contains(hi) && lo <= hi => {
                (*lo as u16, *hi as u16)
            }
            Some([code]) if (100..=599).contains(code) => (*code as u16, *code as u16),
            Some(other) => {
                p.add(
                    format!("{path}.expect_status"),
                    format!("expected [LOW, HIGH] status codes between 100 and 599, got {other:?}"),
                );
                d::PROBE_EXPECT_STATUS
            }
        };
        let mcp_protocol = match r.mcp_protocol.as_deref() {
            None | Some("auto") => McpProtocol::Auto,
            Some("2025-11-25") => McpProtocol::Sessions,
            Some("2026-07-28") => McpProtocol::Stateless,
            Some(other) => {
                p.add(
                    format!("{path}.mcp_protocol"),
                    format!("expected \"auto\", \"2025-11-25\" or \"2026-07-28\", got {other:?}"),
                );
                McpProtocol::Auto
            }
        };
        out.push(Probe {
            kind,
            endpoint,
            path: probe_path,
            interval,
            timeout,
            jitter,
            expect_status,
            body_contains: r.body_contains.clone(),
            mcp_protocol,
        });
    }
    if raw.is_empty() {
        out.extend(default_probes(sites));
    }
    out
}

/// With no `[[probe]]`: an http probe of `/health` where sites serve http, else a tcp connect
/// of each site's first endpoint kind.
fn default_probes(sites: &[Site]) -> Vec<Probe> {
    let interval = Duration::from_millis(d::PROBE_INTERVAL_MS);
    let base = |kind, endpoint, path: &str| Probe {
        kind,
        endpoint,
        path: path.to_string(),
        interval,
        timeout: Duration::from_millis(d::PROBE_TIMEOUT_MS),
        jitter: interval / d::PROBE_JITTER_DIVISOR,
        expect_status: d::PROBE_EXPECT_STATUS,
        body_contains: None,
        mcp_protocol: McpProtocol::Auto,
    };
    let mut out = Vec::new();
    if sites
        .iter()
        .any(|s| s.endpoints.get(EndpointKind::Http).is_some())
    {
        out.push(base(
            ProbeKind::Http,
            EndpointKind::Http,
            d::PROBE_HTTP_PATH,
        ));
    }
    for kind in [EndpointKind::Tcp, EndpointKind::Ws, EndpointKind::Sse] {
        let needs = sites.iter().any(|s| {
            s.endpoints.get(EndpointKind::Http).is_none() && s.endpoints.get(kind).is_some()
        });
        if needs {
            out.push(base(ProbeKind::Tcp, kind, "/"));
        }
    }
    out
}

fn health(raw: &RawHealth, p: &mut Problems) -> Health {
    let window = duration(
        &raw.window,
        Duration::from_secs(d::WINDOW_S),
        "health.window",
        p,
    );
    if window < Duration::from_millis(100) {
        p.add("health.window", "must be at least 100ms");
    }
    Health {
        rise: int_in(raw.rise, d::RISE, (1, 100), "health.rise", p),
        fall: int_in(raw.fall, d::FALL, (1, 100), "health.fall", p),
        window,
        ewma_alpha: fraction(raw.ewma_alpha, d::EWMA_ALPHA, true, "health.ewma_alpha", p),
        latency_samples: int_in(
            raw.latency_samples,
            d::LATENCY_SAMPLES,
            (8, 65_536),
            "health.latency_samples",
            p,
        ),
        latency_reference: duration(
            &raw.latency_reference,
            Duration::from_millis(d::LATENCY_REFERENCE_MS),
            "health.latency_reference",
            p,
        )
        .max(Duration::from_micros(1)),
        degraded_latency: duration(
            &raw.degraded_latency,
            Duration::from_millis(d::DEGRADED_LATENCY_MS),
            "health.degraded_latency",
            p,
        ),
        degraded_error_rate: fraction(
            raw.degraded_error_rate,
            d::DEGRADED_ERROR_RATE,
            true,
            "health.degraded_error_rate",
            p,
        ),
        suspect_hold: duration(
            &raw.suspect_hold,
            Duration::from_millis(d::SUSPECT_HOLD_MS),
            "health.suspect_hold",
            p,
        ),
        slow_start: duration(
            &raw.slow_start,
            Duration::from_millis(d::SLOW_START_MS),
            "health.slow_start",
            p,
        ),
    }
}

fn hedge_factor(value: Option<f64>, p: &mut Problems) -> f64 {
    match value {
        None => d::HEDGE_FACTOR,
        Some(v) if v.is_finite() && (1.0..=100.0).contains(&v) => v,
        Some(v) => {
            p.add(
                "proxy.hedge_factor",
                format!("must be at least 1 and at most 100 (times the site's p99), got {v}"),
            );
            d::HEDGE_FACTOR
        }
    }
}

fn proxy(raw: &RawProxy, base_dir: &Path, p: &mut Problems) -> ProxySettings {
    ProxySettings {
        threads: int_in(raw.threads, d::PROXY_THREADS, (1, 256), "proxy.threads", p),
        connect_timeout: duration(
            &raw.connect_timeout,
            Duration::from_millis(d::CONNECT_TIMEOUT_MS),
            "proxy.connect_timeout",
            p,
        ),
        read_timeout: duration(
            &raw.read_timeout,
            Duration::from_secs(d::READ_TIMEOUT_S),
            "proxy.read_timeout",
            p,
        ),
        retries: int_in(raw.retries, d::RETRIES, (0, 16), "proxy.retries", p),
        retry_buffer_bytes: int_in(
            raw.retry_buffer_bytes,
            d::RETRY_BUFFER_BYTES,
            // pingora's retry buffer holds 64 KiB: a body past it cannot be sent again.
            (0, 64 << 10),
            "proxy.retry_buffer_bytes",
            p,
        ),
        hedge_factor: hedge_factor(raw.hedge_factor, p),
        hedge_floor: duration(
            &raw.hedge_floor,
            Duration::from_millis(d::HEDGE_FLOOR_MS),
            "proxy.hedge_floor",
            p,
        ),
        hedge_budget: fraction(
            raw.hedge_budget,
            d::HEDGE_BUDGET,
            false,
            "proxy.hedge_budget",
            p,
        ),
        drain_timeout: duration(
            &raw.drain_timeout,
            Duration::from_secs(d::DRAIN_TIMEOUT_S),
            "proxy.drain_timeout",
            p,
        ),
        close_grace: duration(
            &raw.close_grace,
            Duration::from_millis(d::CLOSE_GRACE_MS),
            "proxy.close_grace",
            p,
        ),
        load_decay: duration_in(
            &raw.load_decay,
            d::LOAD_DECAY_MS,
            (100, 600_000),
            "proxy.load_decay",
            p,
        ),
        queue_timeout: duration_in(
            &raw.queue_timeout,
            d::QUEUE_TIMEOUT_MS,
            (0, 10_000),
            "proxy.queue_timeout",
            p,
        ),
        queue_length: int_in(
            raw.queue_length,
            d::QUEUE_LENGTH,
            (0, 100_000),
            "proxy.queue_length",
            p,
        ),
        upgrade_sock: PathBuf::new(), // set by `upgrade_sock`: its default follows state_file
        // Set by `forwarding` (proxy_protocol needs the listeners).
        trusted_proxies: Default::default(),
        proxy_protocol: Default::default(),
        retry_budget: retry_budget::retry_budget(raw.retry_budget.as_ref(), p),
        session_key_file: anchor(
            base_dir,
            raw.session_key_file
                .as_deref()
                .unwrap_or(d::SESSION_KEY_FILE),
        ),
    }
}

fn dns_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A name as written in `[dns]`: with a trailing dot it is absolute, otherwise relative to
/// `zone`. Returns the fully qualified, lower-case name.
fn dns_fqdn(name: &str, zone: &str, path: &str, p: &mut Problems) -> String {
    let full = if name.ends_with('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.{zone}", name.to_ascii_lowercase())
    };
    if !dns_name_ok(name) || !dns_name_ok(&full) {
        p.add(
            path,
            format!("expected a DNS name such as \"ns1\" or \"ns1.example.net.\", got {name:?}"),
        );
    }
    full
}

fn dns(raw: &RawDns, base_dir: &Path, p: &mut Problems) -> Dns {
    let zone = match raw.zone.as_deref() {
        None => {
            p.add("dns.zone", "is required");
            String::new()
        }
        Some(z) if !z.ends_with('.') || !dns_name_ok(z) => {
            p.add("dns.zone", format!("expected a fully qualified name with a trailing dot such as \"mcp.example.com.\", got {z:?}"));
            z.to_string()
        }
        Some(z) => z.to_ascii_lowercase(),
    };
    let mut seen = HashSet::new();
    for (i, n) in raw.names.iter().enumerate() {
        if n != "@" && (n.ends_with('.') || !dns_name_ok(n)) {
            p.add(
                format!("dns.names[{i}]"),
                format!("expected a name relative to the zone such as \"api\", got {n:?}"),
            );
        }
        if !seen.insert(n.to_ascii_lowercase()) {
            p.add(format!("dns.names[{i}]"), format!("{n:?} is listed twice"));
        }
    }
    let ttl = int_in(raw.ttl, d::DNS_TTL, (0, 86_400), "dns.ttl", p);
    let min_ttl = int_in(
        raw.min_ttl,
        d::DNS_MIN_TTL.min(ttl),
        (0, 86_400),
        "dns.min_ttl",
        p,
    );
    if min_ttl > ttl {
        p.add(
            "dns.min_ttl",
            format!("must not exceed dns.ttl ({ttl}), got {min_ttl}"),
        );
    }
    let udp_threads = int_in(
        raw.udp_threads,
        d::DNS_UDP_THREADS,
        (1, d::DNS_UDP_THREADS_MAX as i64),
        "dns.udp_threads",
        p,
    );
    let s = &raw.soa;
    let secs = |v: Option<i64>, default: u32, key: &str, p: &mut Problems| {
        int_in(
            v,
            default,
            (0, i64::from(i32::MAX)),
            &format!("dns.soa.{key}"),
            p,
        )
    };
    let mname = dns_fqdn(
        s.mname.as_deref().unwrap_or(d::DNS_SOA_MNAME),
        &zone,
        "dns.soa.mname",
        p,
    );
    let soa = Soa {
        rname: dns_fqdn(
            s.rname.as_deref().unwrap_or(d::DNS_SOA_RNAME),
            &zone,
            "dns.soa.rname",
            p,
        ),
        serial: s
            .serial
            .map(|v| int_in(Some(v), 0, (0, i64::from(u32::MAX)), "dns.soa.serial", p)),
        refresh: secs(s.refresh, d::DNS_SOA_REFRESH, "refresh", p),
        retry: secs(s.retry, d::DNS_SOA_RETRY, "retry", p),
        expire: secs(s.expire, d::DNS_SOA_EXPIRE, "expire", p),
        minimum: secs(s.minimum, ttl, "minimum", p),
        mname: mname.clone(),
    };
    let ns = match &raw.ns {
        None => vec![mname],
        Some(list) if list.is_empty() => {
            p.add("dns.ns", "needs at least one name server name");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, n)| dns_fqdn(n, &zone, &format!("dns.ns[{i}]"), p))
            .collect(),
    };
    let geoip = raw.geoip.as_ref().and_then(|g| {
        let Some(db) = g.db.as_deref() else {
            p.add("dns.geoip.db", "is required");
            return None;
        };
        let upper = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                .collect()
        };
        Some(GeoIp {
            db: anchor(base_dir, db),
            countries: upper(&g.countries),
            continents: upper(&g.continents),
        })
    });
    Dns {
        zone,
        ttl,
        min_ttl,
        names: raw.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        ns,
        soa,
        geoip,
        udp_threads,
        ecs_trusted: dns_guard::ecs_trusted(raw.ecs_trusted.as_deref(), p),
    }
}

fn geo(raw: &[RawGeo], p: &mut Problems) -> Vec<Geo> {
    let mut out = Vec::new();
    for (i, g) in raw.iter().enumerate() {
        let path = format!("geo[{i}]");
        let cidr = match g.cidr.as_deref().map(|c| c.trim().parse::<ipnet::IpNet>()) {
            None => {
                p.add(format!("{path}.cidr"), "is required");
                None
            }
            Some(Err(_)) => {
                p.add(
                    format!("{path}.cidr"),
                    format!(
                        "expected a network such as \"198.51.100.0/24\", got {:?}",
                        g.cidr.as_deref().unwrap_or("")
                    ),
                );
                None
            }
            Some(Ok(net)) => Some(net),
        };
        let region = match g.region.as_deref() {
            None | Some("") => {
                p.add(format!("{path}.region"), "is required");
                None
            }
            Some(r) => Some(r.to_string()),
        };
        if let (Some(cidr), Some(region)) = (cidr, region) {
            out.push(Geo { cidr, region });
        }
    }
    out
}

fn cluster(raw: &RawCluster, base_dir: &Path, p: &mut Problems) -> Cluster {
    if raw.etcd.is_empty() {
        p.add("cluster.etcd", "needs at least one etcd endpoint URL");
    }
    for (i, url) in raw.etcd.iter().enumerate() {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let authority = rest.map(|r| r.split('/').next().unwrap_or(""));
        let port_ok = authority
            .and_then(|a| a.rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            p.add(
                format!("cluster.etcd[{i}]"),
                format!("expected a URL with a host and port such as \"http://127.0.0.1:2379\", got {url:?}"),
            );
        }
        if url.starts_with("https://") && raw.ca_file.is_none() {
            p.add(
                "cluster.ca_file",
                format!("cluster.etcd[{i}] is https, so ca_file (the CA that signs etcd's certificate) is required"),
            );
        }
    }
    let mut prefix = raw
        .prefix
        .clone()
        .unwrap_or_else(|| d::CLUSTER_PREFIX.to_string());
    if !prefix.starts_with('/') {
        p.add(
            "cluster.prefix",
            format!("must start with '/', got {prefix:?}"),
        );
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        p.add(
            "cluster.cert_file",
            "cert_file and key_file go together (mutual TLS needs both)",
        );
    }
    if raw.username.is_some() != raw.password_file.is_some() {
        p.add(
            "cluster.username",
            "username and password_file go together (etcd authentication needs both)",
        );
    }
    let lease_ttl = duration(
        &raw.lease_ttl,
        Duration::from_secs(d::CLUSTER_LEASE_TTL_S),
        "cluster.lease_ttl",
        p,
    );
    if lease_ttl < Duration::from_secs(2) || lease_ttl > Duration::from_secs(3600) {
        p.add(
            "cluster.lease_ttl",
            format!(
                "must be between 2s and 1h (etcd leases are whole seconds), got {}",
                crate::duration::format_duration(lease_ttl)
            ),
        );
    }
    if let Some(name) = &raw.instance {
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c == '/' || c.is_control()) {
            p.add(
                "cluster.instance",
                format!(
                    "must be 1 to 200 characters without '/' or control characters, got {name:?}"
                ),
            );
        }
    }
    let file = |f: &Option<String>| f.as_deref().map(|f| anchor(base_dir, f));
    Cluster {
        etcd: raw.etcd.clone(),
        prefix,
        ca_file: file(&raw.ca_file),
        cert_file: file(&raw.cert_file),
        key_file: file(&raw.key_file),
        username: raw.username.clone(),
        password_file: file(&raw.password_file),
        lease_ttl: Duration::from_secs(lease_ttl.as_secs().max(1)),
        instance: raw.instance.clone(),
    }
}

fn webhooks(raw: &[RawWebhook], p: &mut Problems) -> Vec<Webhook> {
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let path = format!("webhook[{i}]");
        let Some(url) = w.url.as_deref() else {
            p.add(format!("{path}.url"), "is required");
            continue;
        };
        let parsed = url.strip_prefix("http://").and_then(|rest| {
            let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let addr = authority.parse::<SocketAddr>().ok()?;
            Some((
                addr,
                if tail.is_empty() {
                    "/".to_string()
                } else {
                    tail.to_string()
                },
            ))
        });
        let Some((addr, url_path)) = parsed else {
            p.add(
                format!("{path}.url"),
                format!("expected http://IP:PORT/path such as \"http://127.0.0.1:9000/hook\", got {url:?}"),
            );
            continue;
        };
        out.push(Webhook {
            url: url.to_string(),
            addr,
            path: url_path,
            timeout: duration(
                &w.timeout,
                Duration::from_millis(d::WEBHOOK_TIMEOUT_MS),
                &format!("{path}.timeout"),
                p,
            ),
            attempts: int_in(
                w.attempts,
                d::WEBHOOK_ATTEMPTS,
                (1, 100),
                &format!("{path}.attempts"),
                p,
            ),
        });
    }
    out
}

fn tier_objectives(
    raw: &[RawTier],
    global: &Objectives,
    p: &mut Problems,
) -> Vec<(u8, Objectives)> {
    let mut out: Vec<(u8, Objectives)> = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let path = format!("tier[{i}]");
        let Some(tier) = t.tier else {
            p.add(format!("{path}.tier"), "is required");
            continue;
        };
        let tier: u8 = int_in(Some(tier), 0, (0, 255), &format!("{path}.tier"), p);
        if out.iter().any(|(n, _)| *n == tier) {
            p.add(
                format!("{path}.tier"),
                format!("tier {tier} is listed twice"),
            );
        }
        let o = RawObjectives {
            shift_time: t.shift_time.clone(),
            failed_requests: t.failed_requests,
            availability: t.availability.clone(),
        };
        out.push((tier, objectives(&o, &path, global, p)));
    }
    out
}

fn drills(raw: &[RawDrill], sites: &[Site], p: &mut Problems) -> Vec<Drill> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("drill[{i}]");
        let site = match r.site.as_deref() {
            None => {
                p.add(format!("{path}.site"), "is required");
                continue;
            }
            Some(s) if !sites.iter().any(|x| x.name == s) => {
                p.add(format!("{path}.site"), format!("no site is called {s:?}"));
                continue;
            }
            Some(s) => s.to_string(),
        };
        let schedule = match r.schedule.as_deref().map(crate::cron::Schedule::parse) {
            None => {
                p.add(
                    format!("{path}.schedule"),
                    "is required, e.g. \"0 3 * * 1\" (Mondays 03:00 UTC)",
                );
                continue;
            }
            Some(Err(e)) => {
                p.add(format!("{path}.schedule"), e);
                continue;
            }
            Some(Ok(s)) => s,
        };
        let mode = match r.mode.as_deref() {
            None => DrillMode::Hang,
            Some(m) => DrillMode::parse(m).unwrap_or_else(|| {
                p.add(
                    format!("{path}.mode"),
                    format!("expected hang, drop, slow, errors, maintenance, kill-probe or blackhole, got {m:?}"),
                );
                DrillMode::Hang
            }),
        };
        let duration = duration(
            &r.duration,
            Duration::from_secs(d::DRILL_DURATION_S),
            &format!("{path}.duration"),
            p,
        );
        if duration < Duration::from_secs(3) {
            p.add(format!("{path}.duration"), "must be at least 3s");
        }
        let rate = int_in(
            r.rate,
            d::DRILL_RATE,
            (1, 10_000),
            &format!("{path}.rate"),
            p,
        );
        out.push(Drill {
            site,
            schedule,
            mode,
            duration,
            rate,
        });
    }
    out
}

fn limits(raw: &RawLimits, p: &mut Problems) -> Limits {
    let positive = |text: &Option<String>, default_ms: u64, key: &str, p: &mut Problems| {
        let path = format!("limits.{key}");
        let value = duration(text, Duration::from_millis(default_ms), &path, p);
        if value.is_zero() {
            p.add(path, "must be above zero");
        }
        value
    };
    let max_header_bytes = int_in(
        raw.max_header_bytes,
        d::MAX_HEADER_BYTES,
        (1024, d::PINGORA_MAX_HEADER_BYTES as i64),
        "limits.max_header_bytes",
        p,
    );
    let max_request_line = int_in(
        raw.max_request_line,
        d::MAX_REQUEST_LINE.min(max_header_bytes),
        (64, d::PINGORA_MAX_HEADER_BYTES as i64),
        "limits.max_request_line",
        p,
    );
    if max_request_line > max_header_bytes {
        p.add(
            "limits.max_request_line",
            format!(
                "must not exceed limits.max_header_bytes ({max_header_bytes}), got {max_request_line}"
            ),
        );
    }
    Limits {
        max_connections: int_in(
            raw.max_connections,
            d::MAX_CONNECTIONS,
            (1, 1_000_000),
            "limits.max_connections",
            p,
        ),
        max_request_line,
        max_header_bytes,
        max_headers: int_in(
            raw.max_headers,
            d::MAX_HEADERS,
            (1, d::PINGORA_MAX_HEADERS as i64),
            "limits.max_headers",
            p,
        ),
        max_body_bytes: int_in(
            raw.max_body_bytes,
            d::MAX_BODY_BYTES,
            (0, 1 << 40),
            "limits.max_body_bytes",
            p,
        ),
        header_timeout: positive(
            &raw.header_timeout,
            d::HEADER_TIMEOUT_MS,
            "header_timeout",
            p,
        ),
        body_timeout: positive(&raw.body_timeout, d::BODY_TIMEOUT_MS, "body_timeout", p),
        keepalive_timeout: positive(
            &raw.keepalive_timeout,
            d::KEEPALIVE_TIMEOUT_MS,
            "keepalive_timeout",
            p,
        ),
        // issue 14, point 8
        stream_idle_timeout: positive(
            &raw.stream_idle_timeout,
            d::STREAM_IDLE_TIMEOUT_MS,
            "stream_idle_timeout",
            p,
        ),
        dns: dns_guard::dns_limits(raw, p),
    }
}

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// `proxy.upgrade_sock`: anchored to the config folder when written, else beside the state
/// file, so that the running process and its successor agree on it.
fn upgrade_sock(
    raw: Option<&str>,
    base_dir: &Path,
    state_file: &Path,
    p: &mut Problems,
) -> PathBuf {
    let path = match raw {
        Some("") => {
            p.add("proxy.upgrade_sock", "must not be empty");
            return PathBuf::new();
        }
        Some(f) => anchor(base_dir, f),
        None => state_file
            .parent()
            .unwrap_or(Path::new("."))
            .join(d::UPGRADE_SOCK),
    };
    let len = path.as_os_str().len();
    if len > MAX_UNIX_SOCKET_PATH {
        p.add(
            "proxy.upgrade_sock",
            format!(
                "{} is {len} bytes long, but a Unix socket path holds at most {MAX_UNIX_SOCKET_PATH}: set proxy.upgrade_sock to a shorter path",
                path.display()
            ),
        );
    }
    path
}

/// `[tls]`: cert_file and key_file together, and the listeners they apply to.
fn tls(raw: Option<&RawTls>, listen: Option<&Listen>, base_dir: &Path, p: &mut Problems) -> Tls {
    let Some(raw) = raw else {
        return Tls::default();
    };
    let file = |f: &Option<String>, key: &str, p: &mut Problems| match f.as_deref() {
        Some("") => {
            p.add(format!("tls.{key}"), "must not be empty");
            None
        }
        other => other.map(|f| anchor(base_dir, f)),
    };
    let cert_file = file(&raw.cert_file, "cert_file", p);
    let key_file = file(&raw.key_file, "key_file", p);
    let ca_file = file(&raw.ca_file, "ca_file", p);
    let listener = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            let (mut http, mut tcp) = (true, true);
            if let Some(names) = &raw.listeners {
                (http, tcp) = (false, false);
                if names.is_empty() {
                    p.add(
                        "tls.listeners",
                        "must name at least one listener (\"http\", \"tcp\"); remove cert_file and key_file for plain listeners",
                    );
                }
                for (i, name) in names.iter().enumerate() {
                    let path = format!("tls.listeners[{i}]");
                    let configured = match name.as_str() {
                        "http" => {
                            http = true;
                            listen.map(|l| l.http.is_some())
                        }
                        "tcp" => {
                            tcp = true;
                            listen.map(|l| l.tcp.is_some())
                        }
                        other => {
                            p.add(
                                path,
                                format!("unknown listener {other:?}: expected \"http\" or \"tcp\""),
                            );
                            continue;
                        }
                    };
                    if configured == Some(false) {
                        p.add(
                            path,
                            format!("listen.{name} is not set, so it cannot speak TLS"),
                        );
                    }
                }
            }
            Some(ListenerTls {
                cert_file,
                key_file,
                http,
                tcp,
            })
        }
        (Some(_), None) => {
            p.add(
                "tls.key_file",
                "is required with tls.cert_file (the listeners need the certificate's private key)",
            );
            None
        }
        (None, Some(_)) => {
            p.add(
                "tls.cert_file",
                "is required with tls.key_file (the listeners need the certificate for the key)",
            );
            None
        }
        (None, None) => {
            if raw.listeners.is_some() {
                p.add(
                    "tls.listeners",
                    "needs tls.cert_file and tls.key_file (the certificate the listeners present)",
                );
            }
            None
        }
    };
    Tls { listener, ca_file }
}

/// `[site.tls]`: the server name and the CA each TLS site is verified against.
fn site_tls(raw: &[RawSite], sites: &mut [Site], tls: &Tls, base_dir: &Path, p: &mut Problems) {
    for (i, (r, site)) in raw.iter().zip(sites.iter_mut()).enumerate() {
        let Some(t) = &r.tls else {
            continue;
        };
        let path = format!("site[{i}].tls");
        if let Some(sni) = &t.sni {
            if !(dns_name_ok(sni) || sni.parse::<IpAddr>().is_ok()) {
                p.add(
                    format!("{path}.sni"),
                    format!("expected a DNS name such as \"mcp.example.com\" or an IP address, got {sni:?}"),
                );
            }
        }
        let ca_file = match (t.ca_file.as_deref(), &tls.ca_file) {
            (Some(""), _) => {
                p.add(format!("{path}.ca_file"), "must not be empty");
                continue;
            }
            (Some(f), _) => anchor(base_dir, f),
            (None, Some(global)) => global.clone(),
            (None, None) => {
                p.add(
                    format!("{path}.ca_file"),
                    "is required, or set tls.ca_file: sitesteer verifies every upstream certificate against a CA you name",
                );
                continue;
            }
        };
        site.tls = Some(SiteTls {
            sni: t.sni.clone(),
            ca_file,
        });
    }
}
