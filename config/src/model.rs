//! The validated, typed configuration. Everything here has been checked: addresses are
//! socket addresses, durations are `Duration`s, names are unique and cross-references resolve.
//! Construct it only through [`crate::parse`] or [`crate::load`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::defaults as d;

/// The kinds of endpoint a site serves, one per transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    /// Plain HTTP and MCP Streamable HTTP.
    Http,
    /// WebSocket (erlmcp `/mcp/ws`).
    Ws,
    /// Server-sent events (erlmcp `/mcp/sse`).
    Sse,
    /// Raw TCP, newline-delimited JSON-RPC.
    Tcp,
}

impl EndpointKind {
    /// Every kind, in a fixed order (the index used by [`Endpoints`]).
    pub const ALL: [EndpointKind; 4] = [Self::Http, Self::Ws, Self::Sse, Self::Tcp];

    /// The name used in the config file and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ws => "ws",
            Self::Sse => "sse",
            Self::Tcp => "tcp",
        }
    }

    /// Parses a config-file name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Position in [`EndpointKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One address per transport a site serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints([Option<SocketAddr>; 4]);

impl Endpoints {
    /// The address of `kind`, if the site serves it.
    pub fn get(&self, kind: EndpointKind) -> Option<SocketAddr> {
        self.0[kind.index()]
    }

    /// Sets the address of `kind`.
    pub fn set(&mut self, kind: EndpointKind, addr: SocketAddr) {
        self.0[kind.index()] = Some(addr);
    }

    /// Every (kind, address) pair the site serves.
    pub fn iter(&self) -> impl Iterator<Item = (EndpointKind, SocketAddr)> + '_ {
        EndpointKind::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|a| (k, a)))
    }
}

/// Addresses the process listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// HTTP, MCP Streamable HTTP, WebSocket and SSE. Default `0.0.0.0:8080`.
    pub http: Option<SocketAddr>,
    /// Raw TCP (newline-delimited JSON-RPC). Default: off.
    pub tcp: Option<SocketAddr>,
    /// Authoritative DNS over UDP and TCP. Default: off.
    pub dns: Option<SocketAddr>,
    /// Admin API, `/metrics` and the status page. Default `127.0.0.1:9900`.
    pub admin: SocketAddr,
}

/// Admin API settings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Admin {
    /// File holding the bearer token that writes must present. Required when the admin
    /// listener is not on loopback.
    pub token_file: Option<PathBuf>,
    /// Host names (no port) the admin listener answers to, besides IP addresses and
    /// `localhost`: a request whose `Host` is any other name is refused with 403 (DNS
    /// rebinding). Lowercase. Default: none.
    pub allowed_hosts: Vec<String>,
}

/// Recovery objectives: what a failover may cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Objectives {
    /// Longest time from a fault to traffic moved. Default 500ms.
    pub shift_time: Duration,
    /// Requests allowed to fail in one failover. Default 0.
    pub failed_requests: u64,
    /// Availability target as a fraction (0.99999 for "99.999%"). Default 0.99999.
    pub availability: f64,
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            shift_time: Duration::from_millis(500),
            failed_requests: 0,
            availability: 0.99999,
        }
    }
}

/// One site: a deployment of the MCP service.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// Unique name, used in the admin API, metrics and the `x-sitesteer-site` header.
    pub name: String,
    /// Region for geo-steering. Default `"default"`.
    pub region: String,
    /// Preference tier; lower is preferred. Default 0.
    pub tier: u8,
    /// Share of traffic within a tier. Default 100.
    pub weight: u32,
    /// What DNS hands out for this site.
    pub address: Option<IpAddr>,
    /// `Host` header sent upstream (some MCP servers refuse unexpected hosts). Default: the
    /// client's `Host`.
    pub host: Option<String>,
    /// The site's endpoints, one per transport.
    pub endpoints: Endpoints,
    /// Objectives for this site; default: the global `[objectives]`.
    pub objectives: Objectives,
    /// `[site.tls]`: the site's endpoints speak TLS. Default: plain TCP.
    pub tls: Option<SiteTls>,

    // Concurrency cap (`max_in_flight`).
    /// The most requests in flight at this site at once; past it a request goes to the
    /// next site, and when every site is at its cap it waits in the queue
    /// (`proxy.queue_timeout`) and is then shed with a 503. In [1, 1000000]. Default: none.
    pub max_in_flight: Option<u32>,
}

impl Site {
    /// The TLS server name (SNI, and the name the certificate must carry) for `addr`, one
    /// of this site's endpoints: `tls.sni`, else `host` without its port, else the
    /// endpoint's IP. `None` when the site does not speak TLS.
    pub fn tls_server_name(&self, addr: SocketAddr) -> Option<String> {
        let tls = self.tls.as_ref()?;
        if let Some(sni) = &tls.sni {
            return Some(sni.clone());
        }
        if let Some(host) = &self.host {
            return Some(host_without_port(host).to_string());
        }
        Some(addr.ip().to_string())
    }
}

/// `host` of a `Host` header value without its port (and without the brackets of an IPv6
/// literal).
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// `[site.tls]`: how sitesteer speaks TLS to a site (probes, HTTP, WebSocket, SSE and TCP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteTls {
    /// Server name sent as SNI and checked against the certificate. Default: the site's
    /// `host` without its port, else the endpoint's IP.
    pub sni: Option<String>,
    /// CA bundle (PEM) the site's certificate must chain to: `[site.tls] ca_file`, else
    /// `[tls] ca_file`.
    pub ca_file: PathBuf,
}

/// `[tls]`: the listeners' certificate and the default CA for upstream sites.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tls {
    /// The certificate the listeners present; `None` means they speak plain TCP.
    pub listener: Option<ListenerTls>,
    /// Default CA bundle (PEM) for sites with `[site.tls]` and no `ca_file` of their own.
    pub ca_file: Option<PathBuf>,
}

/// TLS termination on the listeners: TLS 1.2 and 1.3 only, the certificate and key read
/// again on every config reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: PathBuf,
    /// Whether `listen.http` speaks TLS. Default true.
    pub http: bool,
    /// Whether `listen.tcp` speaks TLS. Default true.
    pub tcp: bool,
}

/// HTTP routing: a path prefix goes to an endpoint kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Request path prefix, starting with `/`.
    pub prefix: String,
    /// The site endpoint that serves it.
    pub endpoint: EndpointKind,
}

/// What a probe does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET, checks the status and optionally the body.
    Http,
    /// MCP JSON-RPC over HTTP (initialize, ping, DELETE; or server/discover).
    Mcp,
    /// WebSocket handshake and one JSON-RPC ping.
    Ws,
    /// SSE stream opens and an event or comment arrives.
    Sse,
}

impl ProbeKind {
    /// The config-file name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Mcp => "mcp",
            Self::Ws => "ws",
            Self::Sse => "sse",
        }
    }
}

/// Which MCP protocol an `mcp` probe speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum McpProtocol {
    /// Try 2026-07-28 `server/discover` first, fall back to 2025-11-25 sessions.
    Auto,
    /// 2025-11-25: initialize, ping, DELETE.
    Sessions,
    /// 2026-07-28: stateless `server/discover`.
    Stateless,
}

/// One probe, run against every site that has its endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// What the probe does.
    pub kind: ProbeKind,
    /// Which endpoint of each site it targets.
    pub endpoint: EndpointKind,
    /// Request path for http, mcp, ws and sse probes.
    pub path: String,
    /// Time between probes. Default 100ms, at least 20ms.
    pub interval: Duration,
    /// A probe that takes longer fails. Default 80ms; must be below `interval`.
    pub timeout: Duration,
    /// Random extra delay added to each interval, up to this much. Default interval / 10.
    pub jitter: Duration,
    /// Accepted HTTP status range (inclusive) for http probes. Default 200..=399.
    pub expect_status: (u16, u16),
    /// The body must contain this text (http probes).
    pub body_contains: Option<String>,
    /// The MCP protocol an mcp probe speaks. Default auto.
    pub mcp_protocol: McpProtocol,
}

/// How observations become a score and a state.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// Consecutive successes that bring a down site back. Default 2.
    pub rise: u32,
    /// Consecutive failures that take a site down. Default 2.
    pub fall: u32,
    /// Sliding window for availability and error rate. Default 10s.
    pub window: Duration,
    /// Weight of a new latency sample in the EWMA, in (0, 1]. Default 0.3.
    pub ewma_alpha: f64,
    /// Latency samples kept for p99. Default 256.
    pub latency_samples: usize,
    /// Latency at which the latency factor of the score is one half. Default 100ms.
    pub latency_reference: Duration,
    /// EWMA latency above which a site is degraded. Default 1s.
    pub degraded_latency: Duration,
    /// Error rate (0..1) above which a site is degraded. Default 0.2.
    pub degraded_error_rate: f64,
    /// How long a passive connect failure keeps a site suspect (degraded) unless a probe
    /// succeeds `rise` times. Default 2s.
    pub suspect_hold: Duration,
    /// How long a site that came back from `down` takes to grow from a twentieth of its
    /// share of traffic to all of it, so that a cold site is not flooded (HAProxy's
    /// `slowstart`). 0 turns it off. Default 0s.
    pub slow_start: Duration,
}

/// Data-plane settings of the proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxySettings {
    /// Worker threads for the proxy. Default 2.
    pub threads: usize,
    /// Upstream connect timeout: the most a connect may take. A site whose connects were
    /// measured gets a few times what they take (`hedge_factor`, at least `hedge_floor`).
    /// Default 1s.
    pub connect_timeout: Duration,
    /// Upstream read timeout (time to first byte and between bytes). Default 30s.
    pub read_timeout: Duration,
    /// How often one request may be retried on another site. Default 2.
    pub retries: usize,
    /// Largest JSON-RPC request body held so that a checked exchange can send it to another
    /// site after a wrong answer (0: none). At most, and by default, 64 KiB.
    pub retry_buffer_bytes: usize,
    /// A request that is safe to repeat (a checked exchange) and still has no answer after
    /// its site's probe latency p99 times this is hedged: sent to another site as well, and
    /// the first right answer wins. In [1, 100]. Default 3.
    pub hedge_factor: f64,
    /// No hedge is sent before this, however fast the site normally is; `read_timeout` is
    /// the ceiling. Default 50ms.
    pub hedge_floor: Duration,
    /// The share of safe requests that may be hedged, so that a slow fleet is not flooded
    /// (0 turns hedging off). Default 0.1.
    pub hedge_budget: f64,
    /// How long connections to a drained site may finish. Default 30s.
    pub drain_timeout: Duration,

    // Load-aware choice and shedding (`steer::load`, `steer::queue`).
    /// How fast a site's peak-EWMA latency forgets: the time constant of its decay. In
    /// [100ms, 10min]. Default 10s.
    pub load_decay: Duration,
    /// How long a request waits for a slot when every site is at `max_in_flight` before it
    /// is shed with a 503 and `Retry-After`. At most 10s. Default 100ms.
    pub queue_timeout: Duration,
    /// How many requests may wait for a slot at once; past it a request is shed at once.
    /// In [0, 100000]. Default 256.
    pub queue_length: usize,
    /// How soon open WebSocket, SSE and TCP connections of a site that went down or into
    /// maintenance are closed. Default 100ms.
    pub close_grace: Duration,
    /// Key that signs MCP session ids (so a session stays on its site across restarts and
    /// instances). Created with a random key when missing. Default `sitesteer.session.key`
    /// beside the config file; every instance of a fleet needs the same file.
    pub session_key_file: PathBuf,
    /// Unix socket through which a new process (`sitesteer run --upgrade`) takes over the
    /// listening sockets of the running one on `SIGQUIT`. Both must use the same path.
    /// Default `sitesteer.upgrade.sock` beside the state file.
    pub upgrade_sock: PathBuf,

    // Forwarded client addresses (`crate::forwarding`).
    /// Peers whose `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` are kept and
    /// appended to (from anyone else they are replaced), and whose PROXY protocol headers
    /// are believed. Default: none.
    pub trusted_proxies: crate::TrustedProxies,
    /// Listeners on which trusted peers must send a PROXY protocol (v1 or v2) header before
    /// anything else. Default: none.
    pub proxy_protocol: crate::ProxyProtocol,

    // The fleet-wide retry budget (`validate/retry_budget.rs`).
    /// How many retries (and hedges and rescues) the whole proxy may send, whatever
    /// `retries` allows one request (`[proxy.retry_budget]`).
    pub retry_budget: RetryBudget,
}

/// `[proxy.retry_budget]`: the fleet-wide retry budget, linkerd's and Finagle's model. Over
/// any `ttl`, the proxy sends at most `ratio` × the requests it started plus
/// `min_per_second` × `ttl` seconds of further attempts (retries, hedges and rescues, a
/// failed connect's retry included), so a fleet that fails everywhere gets about
/// `1 + ratio` attempts per request instead of `1 + retries`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// Further attempts allowed per request started, in [0, 1]. Default 0.2.
    pub ratio: f64,
    /// Further attempts allowed per second whatever the traffic, so that light traffic can
    /// always retry, in [0, 1000000]. Default 10.
    pub min_per_second: u32,
    /// How long a request started counts towards the budget (and a retry against it), in
    /// [1s, 60s]. Default 10s.
    pub ttl: Duration,
}

/// `[limits]`: what one client may send and hold open. Every limit answers with a clear
/// error (a status code, a JSON-RPC error line, or a close) and leaves the proxy serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per listener (HTTP and TCP each); the excess is refused at once
    /// (`503` on HTTP, a JSON-RPC error line on TCP). Default 10000.
    pub max_connections: usize,
    /// Longest request line (method, target, version), bytes; longer is `414`. Default 8 KiB.
    pub max_request_line: usize,
    /// Largest request head (request line and headers), bytes; larger is `431`. Default
    /// 64 KiB, at most 1048575 (pingora's own limit).
    pub max_header_bytes: usize,
    /// Most header fields in one request; more is `431`. Default 100, at most 256
    /// (pingora's own limit).
    pub max_headers: usize,
    /// Largest request body, bytes; larger is `413`. Default 10 MiB.
    pub max_body_bytes: u64,
    /// From a request's first byte (a connection's accept, for its first request) to the
    /// end of its head; slower is `408` and a close. Default 10s.
    pub header_timeout: Duration,
    /// Longest pause between two reads of a request body; longer ends the request
    /// (`408` when nothing was answered yet). Default 30s.
    pub body_timeout: Duration,
    /// How long an idle connection waits for its next request before it is closed.
    /// Default 60s.
    pub keepalive_timeout: Duration,
    // --- issue 14, point 8: idle long-lived connections ---
    /// A raw TCP connection, upgraded WebSocket or SSE stream that moves no byte in either
    /// direction this long is closed on both sides (HAProxy's `timeout tunnel`). Default 1h.
    pub stream_idle_timeout: Duration,
    /// The DNS listener's limits (the `dns_*` keys).
    pub dns: DnsLimits,
}

/// The `dns_*` keys of `[limits]`: what one client may hold open over DNS-over-TCP and how
/// many answers over UDP one client network gets (response rate limiting, RRL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsLimits {
    /// Open DNS-over-TCP connections (`dns_tcp_max_connections`); the excess is closed at
    /// once. Default 1000.
    pub tcp_max_connections: usize,
    /// How long a DNS-over-TCP connection may take to send its next whole query, or to
    /// take its answers, before it is closed (`dns_tcp_idle_timeout`). Default 10s.
    pub tcp_idle_timeout: Duration,
    /// Response rate limiting over UDP.
    pub rrl: Rrl,
}

/// Response rate limiting of DNS over UDP (the `dns_rrl_*` keys), per client network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rrl {
    /// Answers per second to one client network (`dns_rrl_rate`); 0 turns the limit off.
    /// Default 500.
    pub rate: u32,
    /// Answers a client network may get at once above the rate (`dns_rrl_burst`). Default
    /// 1000, at least 1.
    pub burst: u32,
    /// Past the limit, every `slip`th answer is a truncated (TC) answer, which sends a real
    /// resolver to TCP; the others are dropped (`dns_rrl_slip`). 0 drops them all. Default 2.
    pub slip: u32,
    /// Length of the IPv4 network clients are counted by (`dns_rrl_ipv4_prefix`). Default 24.
    pub ipv4_prefix: u8,
    /// Length of the IPv6 network clients are counted by (`dns_rrl_ipv6_prefix`). Default 56.
    pub ipv6_prefix: u8,
}

impl Default for DnsLimits {
    fn default() -> Self {
        Self {
            tcp_max_connections: d::DNS_TCP_MAX_CONNECTIONS,
            tcp_idle_timeout: Duration::from_millis(d::DNS_TCP_IDLE_TIMEOUT_MS),
            rrl: Rrl {
                rate: d::DNS_RRL_RATE,
                burst: d::DNS_RRL_BURST,
                slip: d::DNS_RRL_SLIP,
                ipv4_prefix: d::DNS_RRL_IPV4_PREFIX,
                ipv6_prefix: d::DNS_RRL_IPV6_PREFIX,
            },
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: d::MAX_CONNECTIONS,
            max_request_line: d::MAX_REQUEST_LINE,
            max_header_bytes: d::MAX_HEADER_BYTES,
            max_headers: d::MAX_HEADERS,
            max_body_bytes: d::MAX_BODY_BYTES,
            header_timeout: Duration::from_millis(d::HEADER_TIMEOUT_MS),
            body_timeout: Duration::from_millis(d::BODY_TIMEOUT_MS),
            keepalive_timeout: Duration::from_millis(d::KEEPALIVE_TIMEOUT_MS),
            stream_idle_timeout: Duration::from_millis(d::STREAM_IDLE_TIMEOUT_MS),
            dns: DnsLimits::default(),
        }
    }
}

/// `[dns]`: the authoritative zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Dns {
    /// Zone apex, fully qualified with a trailing dot.
    pub zone: String,
    /// TTL of answers, seconds: the upper bound. Default 5.
    pub ttl: u32,
    /// Lowest TTL when the TTL is lowered toward the next possible state change. Default 1;
    /// set it equal to `ttl` for a fixed TTL.
    pub min_ttl: u32,
    /// Names served, relative to the zone (`@` is the apex).
    pub names: Vec<String>,
    /// NS names of the zone, fully qualified. Default: the SOA `mname`.
    pub ns: Vec<String>,
    /// The zone's SOA record.
    pub soa: Soa,
    /// Optional MaxMind-format database that maps client networks to regions.
    pub geoip: Option<GeoIp>,
    /// Threads answering DNS over UDP, each with its own socket on `listen.dns`
    /// (`SO_REUSEPORT` when more than one). Default 1, at most 64. Read at start: a change
    /// needs a restart or an upgrade, like `listen.dns`.
    pub udp_threads: usize,
    /// Resolvers whose EDNS client-subnet option is honoured; from any other source the
    /// client is placed by its own address. Default every address (`0.0.0.0/0`, `::/0`);
    /// an empty list honours no ECS at all.
    pub ecs_trusted: Vec<ipnet::IpNet>,
}

/// `[dns.soa]`: the SOA record at the apex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soa {
    /// Primary name server, fully qualified. Default `ns1.<zone>`.
    pub mname: String,
    /// Mailbox of the zone's operator as a name, fully qualified. Default `hostmaster.<zone>`.
    pub rname: String,
    /// Serial; `None` means the time the zone was loaded, in seconds since the Unix epoch.
    pub serial: Option<u32>,
    /// Seconds. Default 3600.
    pub refresh: u32,
    /// Seconds. Default 600.
    pub retry: u32,
    /// Seconds. Default 86400.
    pub expire: u32,
    /// TTL of negative answers (NXDOMAIN, NODATA), seconds. Default: `ttl`.
    pub minimum: u32,
}

/// `[dns.geoip]`: a MaxMind-format database (GeoLite2/GeoIP2 Country or City) and how its
/// codes map to regions. `[[geo]]` entries win over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoIp {
    /// The `.mmdb` file.
    pub db: PathBuf,
    /// ISO 3166 country code (`country.iso_code`, upper case) to region.
    pub countries: std::collections::BTreeMap<String, String>,
    /// Continent code (`continent.code`, upper case) to region; used when the country has
    /// no entry.
    pub continents: std::collections::BTreeMap<String, String>,
}

/// `[[geo]]`: a client network and its region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geo {
    /// Client network.
    pub cidr: ipnet::IpNet,
    /// Region name (matches `site.region`).
    pub region: String,
}

/// `[cluster]`: shared operator state through etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// etcd endpoints (URLs, `http://` or `https://`).
    pub etcd: Vec<String>,
    /// Key prefix, always ending in `/`. Default `/sitesteer/`.
    pub prefix: String,
    /// CA bundle (PEM) that signs the etcd servers' certificates; required for `https://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// etcd user, when etcd has authentication enabled; needs `password_file`.
    pub username: Option<String>,
    /// File holding the etcd user's password.
    pub password_file: Option<PathBuf>,
    /// TTL of the lease under which this instance publishes its view. Default 5s.
    pub lease_ttl: Duration,
    /// This instance's name in the fleet. Default: the host name and the admin port.
    pub instance: Option<String>,
}

/// How a drill takes its site out, always through sitesteer (never by touching the site).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrillMode {
    /// Every connection of sitesteer to the site (probes and traffic) hangs, as on a real
    /// hang: sitesteer must detect it by timeouts. The default.
    Hang,
    /// New connections of sitesteer to the site time out, as when its packets are dropped.
    Drop,
    /// The site's answers reach sitesteer 200 ms late.
    Slow,
    /// Every request of sitesteer to the site gets HTTP 500 and a JSON-RPC error.
    Errors,
    /// The site goes into maintenance.
    Maintenance,
    /// sitesteer's probes of the site fail.
    KillProbe,
    /// sitesteer treats the site as unreachable (probes and connects fail).
    Blackhole,
}

impl DrillMode {
    /// The config and CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hang => "hang",
            Self::Drop => "drop",
            Self::Slow => "slow",
            Self::Errors => "errors",
            Self::Maintenance => "maintenance",
            Self::KillProbe => "kill-probe",
            Self::Blackhole => "blackhole",
        }
    }

    /// Parses a config or CLI name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Hang,
            Self::Drop,
            Self::Slow,
            Self::Errors,
            Self::Maintenance,
            Self::KillProbe,
            Self::Blackhole,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }
}

/// `[[drill]]`: a failover drill run by sitesteer itself on a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drill {
    /// The site taken out.
    pub site: String,
    /// When, in UTC (five cron fields).
    pub schedule: crate::cron::Schedule,
    /// How the site is taken out. Default hang.
    pub mode: DrillMode,
    /// Whole drill duration (a third before the fault, a third out, a third after). Default 9s.
    pub duration: Duration,
    /// Synthetic MCP requests per second during the drill. Default 50.
    pub rate: u32,
}

/// `[[webhook]]`: where every event is POSTed as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as written (`http://IP:PORT/path`).
    pub url: String,
    /// The address to connect to.
    pub addr: SocketAddr,
    /// Request path (with query).
    pub path: String,
    /// Timeout of one delivery attempt. Default 2s.
    pub timeout: Duration,
    /// Attempts before an event is given up, with exponential backoff. Default 5.
    pub attempts: u32,
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Listeners.
    pub listen: Listen,
    /// Admin API settings.
    pub admin: Admin,
    /// Where operator overrides are persisted. Default `sitesteer.state.json` beside the
    /// config file.
    pub state_file: PathBuf,
    /// The sites, in file order.
    pub sites: Vec<Site>,
    /// HTTP routes, longest prefix first.
    pub routes: Vec<Route>,
    /// Probes run against every site.
    pub probes: Vec<Probe>,
    /// Scoring and state-machine settings.
    pub health: Health,
    /// Proxy data-plane settings.
    pub proxy: ProxySettings,
    /// Global recovery objectives.
    pub objectives: Objectives,
    /// The DNS zone, if DNS is served.
    pub dns: Option<Dns>,
    /// Client networks to regions.
    pub geo: Vec<Geo>,
    /// Fleet settings.
    pub cluster: Option<Cluster>,
    /// Event webhooks.
    pub webhooks: Vec<Webhook>,
    /// Scheduled drills.
    pub drills: Vec<Drill>,
    /// What one client may send and hold (sizes, timeouts, connections).
    pub limits: Limits,
    /// TLS of the listeners and the default CA of upstream sites.
    pub tls: Tls,
}

impl Config {
    /// The route whose prefix is the longest match for `path`.
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }
}
