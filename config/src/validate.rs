//! Turns a [`RawConfig`] into a [`Config`], collecting every error with its key path.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::defaults as d;
use crate::duration::parse_duration;
use crate::model::*;
use crate::raw::*;

/// Collects errors as (key path, message); lines are added by the caller.
#[derive(Default)]
pub struct Problems(pub Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }
}

/// Validates `raw`; `base_dir` is where relative paths in the file are anchored.
pub fn validate(raw: RawConfig, base_dir: &Path, p: &mut Problems) -> Option<Config> {
    let listen = listen(&raw.listen, p);
    let admin = Admin {
        token_file: raw.admin.token_file.as_deref().map(|f| anchor(base_dir, f)),
    };
    let state_file = anchor(base_dir, raw.state_file.as_deref().unwrap_or(d::STATE_FILE));
    let objectives = objectives(&raw.objectives, "objectives", &Objectives::default(), p);
    if !raw.site_declared {
        p.add("site", "at least one [[site]] is required");
    }
    let sites = sites(&raw.site, &objectives, p);
    let routes = routes(&raw.route, &sites, p);
    let probes = probes(&raw.probe, &sites, p);
    let health = health(&raw.health, p);
    let proxy = proxy(&raw.proxy, base_dir, p);
    let dns = raw.dns.as_ref().map(|r| dns(r, p));
    let geo = geo(&raw.geo, p);
    let cluster = raw.cluster.as_ref().map(|r| cluster(r, p));
    let webhooks = webhooks(&raw.webhook, p);

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
    for (addr, key) in [(http, "http"), (tcp, "tcp"), (admin, "admin")] {
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

fn sites(raw: &[RawSite], global: &Objectives, p: &mut Problems) -> Vec<Site> {
    if raw.len() > d::MAX_SITES {
        p.add("site", format!("at most {} sites are supported, got {}", d::MAX_SITES, raw.len()));
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
        let objectives = match &s.objectives {
            Some(o) => objectives(o, &format!("{path}.objectives"), global, p),
            None => global.clone(),
        };
        out.push(Site {
            name,
            region,
            tier,
            weight,
            address,
            host: s.host.clone(),
            endpoints,
            objectives,
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
            (0, 16 << 20),
            "proxy.retry_buffer_bytes",
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

fn dns(raw: &RawDns, p: &mut Problems) -> Dns {
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
    for (i, n) in raw.names.iter().enumerate() {
        if n != "@" && (n.ends_with('.') || !dns_name_ok(n)) {
            p.add(
                format!("dns.names[{i}]"),
                format!("expected a name relative to the zone such as \"api\", got {n:?}"),
            );
        }
    }
    Dns {
        zone,
        ttl: int_in(raw.ttl, d::DNS_TTL, (0, 86_400), "dns.ttl", p),
        names: raw.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
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

fn cluster(raw: &RawCluster, p: &mut Problems) -> Cluster {
    if raw.etcd.is_empty() {
        p.add("cluster.etcd", "needs at least one etcd endpoint URL");
    }
    for (i, url) in raw.etcd.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            p.add(
                format!("cluster.etcd[{i}]"),
                format!("expected a URL such as \"http://127.0.0.1:2379\", got {url:?}"),
            );
        }
    }
    let prefix = raw
        .prefix
        .clone()
        .unwrap_or_else(|| d::CLUSTER_PREFIX.to_string());
    if !prefix.starts_with('/') {
        p.add(
            "cluster.prefix",
            format!("must start with '/', got {prefix:?}"),
        );
    }
    Cluster {
        etcd: raw.etcd.clone(),
        prefix,
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
