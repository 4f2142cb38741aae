//! The file as written: serde types that mirror the TOML tables one to one. Unknown keys are
//! refused here; values that need checking (addresses, durations, names) stay as written and
//! are checked by `validate`, which turns this into [`crate::Config`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub admin: RawAdmin,
    pub state_file: Option<String>,
    #[serde(default)]
    pub site: Vec<RawSite>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub probe: Vec<RawProbe>,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub objectives: RawObjectives,
    pub dns: Option<RawDns>,
    #[serde(default)]
    pub geo: Vec<RawGeo>,
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
    #[serde(default)]
    pub tier: Vec<RawTier>,
    #[serde(default)]
    pub drill: Vec<RawDrill>,
    #[serde(default)]
    pub limits: RawLimits,
    pub tls: Option<RawTls>,
    /// Whether the file has a `site` key at all (entries that fail to read are dropped).
    #[serde(skip)]
    pub site_declared: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub dns: Option<String>,
    pub admin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub token_file: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub name: Option<String>,
    pub region: Option<String>,
    pub tier: Option<i64>,
    pub weight: Option<i64>,
    pub address: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub endpoints: RawEndpoints,
    pub objectives: Option<RawObjectives>,
    pub tls: Option<RawSiteTls>,
    // Concurrency cap.
    pub max_in_flight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoints {
    pub http: Option<String>,
    pub ws: Option<String>,
    pub sse: Option<String>,
    pub tcp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub kind: Option<String>,
    pub endpoint: Option<String>,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub expect_status: Option<Vec<i64>>,
    pub body_contains: Option<String>,
    pub mcp_protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub window: Option<String>,
    pub ewma_alpha: Option<f64>,
    pub latency_samples: Option<i64>,
    pub latency_reference: Option<String>,
    pub degraded_latency: Option<String>,
    pub degraded_error_rate: Option<f64>,
    pub suspect_hold: Option<String>,
    pub slow_start: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub threads: Option<i64>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub retries: Option<i64>,
    pub retry_buffer_bytes: Option<i64>,
    pub hedge_factor: Option<f64>,
    pub hedge_floor: Option<String>,
    pub hedge_budget: Option<f64>,
    pub drain_timeout: Option<String>,
    // Load-aware choice and shedding.
    pub load_decay: Option<String>,
    pub queue_timeout: Option<String>,
    pub queue_length: Option<i64>,
    pub close_grace: Option<String>,
    pub session_key_file: Option<String>,
    pub upgrade_sock: Option<String>,
    // Forwarded client addresses (`crate::forwarding`).
    pub trusted_proxies: Option<Vec<String>>,
    pub proxy_protocol: Option<Vec<String>>,
    // The fleet-wide retry budget (`validate/retry_budget.rs`).
    pub retry_budget: Option<RawRetryBudget>,
}

/// `[proxy.retry_budget]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBudget {
    pub ratio: Option<f64>,
    pub min_per_second: Option<i64>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawObjectives {
    pub shift_time: Option<String>,
    pub failed_requests: Option<i64>,
    pub availability: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub zone: Option<String>,
    pub ttl: Option<i64>,
    pub min_ttl: Option<i64>,
    pub udp_threads: Option<i64>,
    #[serde(default)]
    pub names: Vec<String>,
    pub ns: Option<Vec<String>>,
    #[serde(default)]
    pub soa: RawSoa,
    pub geoip: Option<RawGeoIp>,
    /// Resolvers whose EDNS client-subnet is honoured (`validate/dns_guard.rs`).
    pub ecs_trusted: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSoa {
    pub mname: Option<String>,
    pub rname: Option<String>,
    pub serial: Option<i64>,
    pub refresh: Option<i64>,
    pub retry: Option<i64>,
    pub expire: Option<i64>,
    pub minimum: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeoIp {
    pub db: Option<String>,
    #[serde(default)]
    pub countries: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub continents: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeo {
    pub cidr: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    #[serde(default)]
    pub etcd: Vec<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub lease_ttl: Option<String>,
    pub instance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub attempts: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub tier: Option<i64>,
    pub shift_time: Option<String>,
    pub failed_requests: Option<i64>,
    pub availability: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDrill {
    pub site: Option<String>,
    pub schedule: Option<String>,
    pub mode: Option<String>,
    pub duration: Option<String>,
    pub rate: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_connections: Option<i64>,
    pub max_request_line: Option<i64>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    // issue 14, point 8
    pub stream_idle_timeout: Option<String>,
    // The DNS listener's limits (`validate/dns_guard.rs`).
    pub dns_tcp_max_connections: Option<i64>,
    pub dns_tcp_idle_timeout: Option<String>,
    pub dns_rrl_rate: Option<i64>,
    pub dns_rrl_burst: Option<i64>,
    pub dns_rrl_slip: Option<i64>,
    pub dns_rrl_ipv4_prefix: Option<i64>,
    pub dns_rrl_ipv6_prefix: Option<i64>,
}

/// `[tls]`: the listeners' certificate and the default CA of upstream sites.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub listeners: Option<Vec<String>>,
    pub ca_file: Option<String>,
}

/// `[site.tls]`: the site speaks TLS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSiteTls {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
}
