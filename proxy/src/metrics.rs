//! Prometheus metrics. The registry is built once and passed in; names are constants
//! prefixed `sitesteer_`; per-site series carry `site` (and `transport`, `code`).

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use sitesteer_probes::{SiteState, Snapshot};

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Proxied requests by site, transport and status code.
    pub requests: IntCounterVec,
    /// MCP requests by site and method (`Mcp-Method` or the JSON-RPC body).
    pub mcp_requests: IntCounterVec,
    /// Open long-lived connections by site and transport.
    pub open_connections: IntGaugeVec,
    /// Requests retried on another site, by the site that failed.
    pub retries: IntCounterVec,
    /// Requests that failed to their clients, by the last site tried.
    pub failed_requests: IntCounterVec,
    /// Requests that no site could take.
    pub unroutable: IntCounter,
    /// Safe requests also sent to another site because their site was too slow, by that site.
    pub hedges: IntCounterVec,
    /// Safe requests sent to another site because their site was judged down, put in
    /// maintenance or turned suspect while they were on it, by that site.
    pub rescues: IntCounterVec,
    /// Requests refused a further attempt (retry, hedge or rescue), by reason (`budget`:
    /// the fleet-wide `proxy.retry_budget`).
    pub retries_refused: IntCounterVec,
    /// Decisions taken in panic mode.
    pub panic_decisions: IntCounter,
    /// Requests in flight by site (written by `steer::load` only).
    pub site_in_flight: IntGaugeVec,
    /// Requests and TCP connections shed at `max_in_flight`, by listener (written by
    /// `steer::queue` only).
    pub shed: IntCounterVec,
    /// 1 while the published Snapshot is in panic mode (written by the publish hook only).
    pub panic_mode: IntGauge,
    /// Upstream latency of proxied requests, by site.
    pub upstream_latency: HistogramVec,
    /// Sites leaving service, by site and kind (`automatic` or `manual`).
    pub failovers: IntCounterVec,
    /// Config reloads by result (`ok`, `refused`).
    pub reloads: IntCounterVec,
    /// Probe latency by site and probe kind.
    pub probe_latency: HistogramVec,
    /// Failed probes by site and reason.
    pub probe_failures: IntCounterVec,
    /// Passive failures that found the observation channel full and were counted instead.
    pub observations_dropped: IntGauge,
    /// Webhook deliveries by result (`ok`, `retry`, `failed`, `dropped`).
    pub webhook_deliveries: IntCounterVec,
    /// DNS queries by name (configured names, `@`, else `other`), qtype, rcode and client
    /// region (`none` when unplaced).
    pub dns_queries: IntCounterVec,
    /// DNS answers sent with TC over UDP because they did not fit.
    pub dns_truncated: IntCounter,
    /// HTTP requests and TCP connections by listener (`http`, `tcp`) and the client's
    /// `[[geo]]` region (`none` when no entry holds the client).
    pub client_regions: IntCounterVec,
    /// DNS queries over UDP past their network's rate (`[limits]` `dns_rrl_*`), by action
    /// (`slip`: a truncated answer; `drop`: none).
    pub dns_rate_limited: IntCounterVec,
    /// `[cluster]`: 1 while the cluster store (etcd) answers, 0 while this instance serves
    /// from its last known state. Registered only with `[cluster]`.
    pub cluster_connected: IntGauge,
    /// `[cluster]`: writes to the cluster store by result (`ok`, `conflict`, `failed`).
    pub cluster_writes: IntCounterVec,
    /// `[cluster]`: changes of the fleet's overrides applied from the cluster store.
    pub cluster_updates: IntCounter,
    /// Requests and connections refused by `[limits]`, by listener and reason.
    pub refused: IntCounterVec,
    /// Tools whose annotations are known, by site (at most `tools::MAX_TOOLS_PER_SITE`).
    pub learned_tools: IntGaugeVec,
    /// Open client connections by listener (`http`, `tcp`), as of the last accept.
    pub listener_connections: IntGaugeVec,
    /// PROXY protocol headers accepted from trusted proxies, by listener and version
    /// (`v1`, `v2`).
    pub proxy_protocol: IntCounterVec,
    // --- issue 14, points 6 to 8: streams ---
    /// Long-lived connections closed by `limits.stream_idle_timeout`, by site and transport.
    pub idle_closed: IntCounterVec,
    /// SSE streams whose `endpoint` event was passed on without a stream token, by reason
    /// (`too_long`, `not_found`, `unusable`).
    pub sse_endpoint_unrewritten: IntCounterVec,
    /// Valid SSE stream tokens that did not pin their request, by reason (`target`,
    /// `ended`, `no_new_sessions`).
    pub sse_token_unpinned: IntCounterVec,
    site_availability_window: GaugeVec,
    /// Recovery objectives by site and objective (`shift_time_seconds`, `failed_requests`,
    /// `availability`): the target, the last measured value and whether it was met.
    pub objectives: GaugeVec,
    site_state: IntGaugeVec,
    site_score: GaugeVec,
    site_weight: IntGaugeVec,
    site_latency: GaugeVec,
    site_availability: GaugeVec,
    snapshot_version: IntGauge,
    site_handles: ArcSwapOption<SiteHandles>,
}

/// `transport` labels of `sitesteer_requests_total` with cached series.
const TRANSPORTS: [&str; 4] = ["http", "ws", "sse", "tcp"];
/// `code` labels of `sitesteer_requests_total` with cached series; others are looked up.
const CODES: [u16; 26] = [
    0, 101, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409,
    413, 429, 500, 501, 502, 503, 504,
];

/// The per-request series of every site of one config generation, so that the data plane
/// neither hashes label values nor allocates per request. Built by
/// [`Metrics::site_handles`] for each new generation; each series is created on its first
/// use, so `/metrics` shows exactly the series it showed without the cache.
pub struct SiteHandles {
    generation: u64,
    sites: Vec<SiteHandle>,
}

/// One site's cached series and its `x-sitesteer-site` header value.
pub struct SiteHandle {
    name: String,
    header: Option<http::HeaderValue>,
    upstream_latency: OnceLock<Histogram>,
    /// `TRANSPORTS.len() × CODES.len()`.
    requests: Box<[OnceLock<IntCounter>]>,
}

impl SiteHandles {
    /// The config generation the site ids refer to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Site `id`.
    pub fn get(&self, id: usize) -> Option<&SiteHandle> {
        self.sites.get(id)
    }
}

impl SiteHandle {
    /// The site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The site's name as a header value (`None` if it cannot be one).
    pub fn header(&self) -> Option<&http::HeaderValue> {
        self.header.as_ref()
    }

    /// Counts one request in `sitesteer_requests_total{site, transport, code}`.
    pub fn count_request(&self, metrics: &Metrics, transport: &str, code: u16) {
        let t = TRANSPORTS.iter().position(|t| *t == transport);
        let c = CODES.iter().position(|c| *c == code);
        let lookup = || {
            let mut buf = itoa::Buffer::new();
            metrics
                .requests
                .with_label_values(&[self.name.as_str(), transport, buf.format(code)])
        };
        match (t, c) {
            (Some(t), Some(c)) => self.requests[t * CODES.len() + c].get_or_init(lookup).inc(),
            _ => lookup().inc(),
        }
    }

    /// Observes one upstream latency in `sitesteer_upstream_latency_seconds{site}`.
    pub fn observe_upstream_latency(&self, metrics: &Metrics, seconds: f64) {
        self.upstream_latency
            .get_or_init(|| {
                metrics
                    .upstream_latency
                    .with_label_values(&[self.name.as_str()])
            })
            .observe(seconds);
    }
}

fn build<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are constants and unique, so registration only fails on a programming error,
    // which the unit test below catches.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let info = IntGaugeVec::new(
            Opts::new("sitesteer_build_info", "Build information."),
            &["version"],
        )
        .expect("valid metric");
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        build(r, info);
        Self {
            requests: build(r, IntCounterVec::new(Opts::new("sitesteer_requests_total", "Proxied requests by site, transport and status code."), &["site", "transport", "code"]).expect("valid metric")),
            mcp_requests: build(r, IntCounterVec::new(Opts::new("sitesteer_mcp_requests_total", "MCP requests by site and JSON-RPC method (other for unknown methods)."), &["site", "method"]).expect("valid metric")),
            open_connections: build(r, IntGaugeVec::new(Opts::new("sitesteer_open_connections", "Open long-lived connections by site and transport."), &["site", "transport"]).expect("valid metric")),
            retries: build(r, IntCounterVec::new(Opts::new("sitesteer_retries_total", "Requests retried on another site, by the site that failed."), &["site"]).expect("valid metric")),
            failed_requests: build(r, IntCounterVec::new(Opts::new("sitesteer_failed_requests_total", "Requests that failed to their clients, by the last site tried."), &["site"]).expect("valid metric")),
            unroutable: build(r, IntCounter::new("sitesteer_unroutable_requests_total", "Requests that no site could take.").expect("valid metric")),
            hedges: build(r, IntCounterVec::new(Opts::new("sitesteer_hedges_total", "Safe requests also sent to another site because their site was slower than its p99 times proxy.hedge_factor, by that site."), &["site"]).expect("valid metric")),
            rescues: build(r, IntCounterVec::new(Opts::new("sitesteer_rescues_total", "Safe requests sent to another site because their site went down, into maintenance or suspect while they were on it, by that site."), &["site"]).expect("valid metric")),
            retries_refused: build(r, IntCounterVec::new(Opts::new("sitesteer_retries_refused_total", "Requests refused a further attempt (a retry, hedge or rescue), by reason: budget when proxy.retry_budget was spent; the site's own answer, if any, was passed on."), &["reason"]).expect("valid metric")),
            panic_decisions: build(r, IntCounter::new("sitesteer_panic_decisions_total", "Steering decisions taken in panic mode (no up or degraded site).").expect("valid metric")),
            site_in_flight: build(r, IntGaugeVec::new(Opts::new(crate::steer::load_names::SITE_IN_FLIGHT, crate::steer::load_names::SITE_IN_FLIGHT_HELP), &["site"]).expect("valid metric")),
            shed: build(r, IntCounterVec::new(Opts::new(crate::steer::load_names::SHED, crate::steer::load_names::SHED_HELP), &["listener"]).expect("valid metric")),
            panic_mode: build(r, IntGauge::new("sitesteer_panic_mode", "1 when no site is up or degraded and traffic spreads over every site not in maintenance.").expect("valid metric")),
            upstream_latency: build(r, HistogramVec::new(HistogramOpts::new("sitesteer_upstream_latency_seconds", "Time from request to upstream response header, by site.").buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]), &["site"]).expect("valid metric")),
            failovers: build(r, IntCounterVec::new(Opts::new("sitesteer_failovers_total", "Sites leaving service (down or manual failover), by site and kind."), &["site", "kind"]).expect("valid metric")),
            reloads: build(r, IntCounterVec::new(Opts::new("sitesteer_reloads_total", "Config reloads by result."), &["result"]).expect("valid metric")),
            probe_latency: build(r, HistogramVec::new(HistogramOpts::new("sitesteer_probe_latency_seconds", "Latency of successful probes, by site and probe kind.").buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]), &["site", "probe"]).expect("valid metric")),
            probe_failures: build(r, IntCounterVec::new(Opts::new("sitesteer_probe_failures_total", "Failed probes by site and reason."), &["site", "reason"]).expect("valid metric")),
            observations_dropped: build(r, IntGauge::new("sitesteer_observations_dropped", "Passive failures that found the health owner behind (its channel full) and were counted instead, to be folded on its next tick: none is lost.").expect("valid metric")),
            webhook_deliveries: build(r, IntCounterVec::new(Opts::new("sitesteer_webhook_deliveries_total", "Webhook deliveries by result."), &["result"]).expect("valid metric")),
            dns_queries: build(r, IntCounterVec::new(Opts::new("sitesteer_dns_queries_total", "DNS queries by name (other for unknown names), query type, response code and client region."), &["name", "qtype", "rcode", "region"]).expect("valid metric")),
            dns_truncated: build(r, IntCounter::new("sitesteer_dns_truncated_total", "DNS answers truncated (TC) over UDP.").expect("valid metric")),
            client_regions: build(r, IntCounterVec::new(Opts::new("sitesteer_client_regions_total", "HTTP requests and TCP connections by listener and the client's [[geo]] region (none when no entry holds the client)."), &["listener", "region"]).expect("valid metric")),
            dns_rate_limited: build(r, IntCounterVec::new(Opts::new("sitesteer_dns_rate_limited_total", "DNS queries over UDP past their client network's rate (limits.dns_rrl_*), by action: slip (a truncated answer that sends the client to TCP) or drop."), &["action"]).expect("valid metric")),
            cluster_connected: IntGauge::new("sitesteer_cluster_connected", "1 while the cluster store (etcd) answers; 0 while serving the last known operator state.").expect("valid metric"),
            cluster_writes: IntCounterVec::new(Opts::new("sitesteer_cluster_writes_total", "Writes of operator overrides to the cluster store, by result."), &["result"]).expect("valid metric"),
            cluster_updates: IntCounter::new("sitesteer_cluster_updates_total", "Changes of the fleet's operator overrides applied from the cluster store.").expect("valid metric"),
            refused: build(r, IntCounterVec::new(Opts::new("sitesteer_refused_total", "Requests and connections refused by [limits], for a malformed request head or by the PROXY protocol rules, by listener and reason."), &["listener", "reason"]).expect("valid metric")),
            learned_tools: build(r, IntGaugeVec::new(Opts::new("sitesteer_learned_tools", "Tools whose annotations sitesteer learned from tools/list answers, by site (capped per site)."), &["site"]).expect("valid metric")),
            listener_connections: build(r, IntGaugeVec::new(Opts::new("sitesteer_listener_connections", "Open client connections by listener, as of the last accept."), &["listener"]).expect("valid metric")),
            proxy_protocol: build(r, IntCounterVec::new(Opts::new("sitesteer_proxy_protocol_headers_total", "PROXY protocol headers accepted from proxy.trusted_proxies, by listener and version."), &["listener", "version"]).expect("valid metric")),
            idle_closed: build(r, IntCounterVec::new(Opts::new("sitesteer_idle_closed_total", "Long-lived connections (tcp, ws, sse) closed after limits.stream_idle_timeout without a byte either way, by site and transport."), &["site", "transport"]).expect("valid metric")),
            sse_endpoint_unrewritten: build(r, IntCounterVec::new(Opts::new("sitesteer_sse_endpoint_unrewritten_total", "SSE streams whose endpoint event passed without a stream token, by reason."), &["reason"]).expect("valid metric")),
            sse_token_unpinned: build(r, IntCounterVec::new(Opts::new("sitesteer_sse_token_unpinned_total", "Valid SSE stream tokens that did not pin their request to a site, by reason."), &["reason"]).expect("valid metric")),
            objectives: build(r, GaugeVec::new(Opts::new("sitesteer_objective", "Recovery objectives per site: target, measured (last incident, or 1d availability) and met (1/0)."), &["site", "objective", "value"]).expect("valid metric")),
            site_availability_window: build(r, GaugeVec::new(Opts::new("sitesteer_site_availability_ratio", "Share of successful probes over 5m, 1h and 1d windows (the SLO figure)."), &["site", "window"]).expect("valid metric")),
            site_state: build(r, IntGaugeVec::new(Opts::new("sitesteer_site_state", "1 for the state the site is in."), &["site", "state"]).expect("valid metric")),
            site_score: build(r, GaugeVec::new(Opts::new("sitesteer_site_score", "Site score in [0, 1]."), &["site"]).expect("valid metric")),
            site_weight: build(r, IntGaugeVec::new(Opts::new("sitesteer_site_weight", "Site weight, configured and effective."), &["site", "kind"]).expect("valid metric")),
            site_latency: build(r, GaugeVec::new(Opts::new("sitesteer_site_probe_latency_ms", "Probe latency EWMA and p99, milliseconds."), &["site", "stat"]).expect("valid metric")),
            site_availability: build(r, GaugeVec::new(Opts::new("sitesteer_site_availability", "Fraction of successful probes over the health window."), &["site"]).expect("valid metric")),
            snapshot_version: build(r, IntGauge::new("sitesteer_snapshot_version", "Version of the published health snapshot.").expect("valid metric")),
            site_handles: ArcSwapOption::empty(),
            registry,
        }
    }

    /// Registers the `[cluster]` metrics (a single instance does not show them).
    pub fn register_cluster(&self) {
        let r = &self.registry;
        build(r, self.cluster_connected.clone());
        build(r, self.cluster_writes.clone());
        build(r, self.cluster_updates.clone());
    }

    /// The cached per-request series of the sites of `snap`'s generation (built once per
    /// generation; see [`SiteHandles`]).
    pub fn site_handles(&self, snap: &Snapshot) -> Arc<SiteHandles> {
        if let Some(h) = self.site_handles.load_full() {
            if h.generation == snap.generation && h.sites.len() == snap.sites.len() {
                return h;
            }
        }
        let slots = TRANSPORTS.len() * CODES.len();
        let built = Arc::new(SiteHandles {
            generation: snap.generation,
            sites: snap
                .sites
                .iter()
                .map(|s| SiteHandle {
                    name: s.name.clone(),
                    header: http::HeaderValue::from_str(&s.name).ok(),
                    upstream_latency: OnceLock::new(),
                    requests: (0..slots).map(|_| OnceLock::new()).collect(),
                })
                .collect(),
        });
        self.site_handles.store(Some(built.clone()));
        built
    }

    /// Sets the long-window availability of `site`.
    pub fn set_availability(&self, site: &str, window: &str, ratio: f64) {
        self.site_availability_window
            .with_label_values(&[site, window])
            .set(ratio);
    }

    /// Copies the per-site gauges from a snapshot (called on scrape).
    pub fn observe_snapshot(&self, snap: &Snapshot) {
        self.snapshot_version.set(snap.version as i64);
        for s in &snap.sites {
            for state in SiteState::ALL {
                self.site_state
                    .with_label_values(&[s.name.as_str(), state.as_str()])
                    .set(i64::from(s.state == state));
            }
            self.site_score
                .with_label_values(&[s.name.as_str()])
                .set(s.score);
            self.site_weight
                .with_label_values(&[s.name.as_str(), "configured"])
                .set(i64::from(s.configured_weight));
            self.site_weight
                .with_label_values(&[s.name.as_str(), "effective"])
                .set(i64::from(s.effective_weight));
            self.site_latency
                .with_label_values(&[s.name.as_str(), "ewma"])
                .set(s.latency_ewma_ms);
            self.site_latency
                .with_label_values(&[s.name.as_str(), "p99"])
                .set(s.latency_p99_ms);
            self.site_availability
                .with_label_values(&[s.name.as_str()])
                .set(s.availability);
        }
    }

    /// Proxied requests (and TCP connections) per site so far.
    pub fn requests_by_site(&self) -> std::collections::HashMap<String, u64> {
        use prometheus::core::Collector;
        let mut out = std::collections::HashMap::new();
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let site = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "site")
                    .map(|l| l.value().to_string());
                if let Some(site) = site {
                    *out.entry(site).or_insert(0) += m.get_counter().get_value() as u64;
                }
            }
        }
        out
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let m = Metrics::new();
        m.requests.with_label_values(&["a", "http", "200"]).inc();
        m.unroutable.inc();
        let text = m.render();
        assert!(
            text.contains("sitesteer_requests_total{code=\"200\",site=\"a\",transport=\"http\"} 1"),
            "{text}"
        );
        assert!(text.contains("sitesteer_build_info"));
        assert!(!text.contains("sitesteer_upstream_latency_seconds_count"));
        assert!(text.contains("sitesteer_unroutable_requests_total 1"));
        assert!(!text.contains("sitesteer_cluster_connected"));
        m.register_cluster();
        m.register_cluster();
        assert!(m.render().contains("sitesteer_cluster_connected 0"));
    }

    #[tokio::test]
    async fn cached_site_series_count_like_labelled_lookups() {
        let text = "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n";
        let config = sitesteer_config::parse(text, "t", std::path::Path::new(".")).unwrap();
        let now = tokio::time::Instant::now();
        let mut table = sitesteer_probes::HealthTable::new(
            Arc::new(config),
            sitesteer_probes::Overrides::default(),
            now,
        );
        let snap = table.snapshot(now);
        let m = Metrics::new();
        let handles = m.site_handles(&snap);
        assert!(Arc::ptr_eq(&handles, &m.site_handles(&snap)), "built once");
        let a = handles.get(0).unwrap();
        assert_eq!(a.header().map(|v| v.as_bytes()), Some(&b"a"[..]));
        a.count_request(&m, "http", 200);
        a.count_request(&m, "http", 200);
        a.count_request(&m, "sse", 299); // not cached: looked up
        a.observe_upstream_latency(&m, 0.002);
        let text = m.render();
        for line in [
            "sitesteer_requests_total{code=\"200\",site=\"a\",transport=\"http\"} 2",
            "sitesteer_requests_total{code=\"299\",site=\"a\",transport=\"sse\"} 1",
            "sitesteer_upstream_latency_seconds_count{site=\"a\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(handles.get(1).is_none());
    }
}
