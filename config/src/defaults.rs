//! Every default of the configuration, in one place. The example config documents each.

/// `listen.http`.
pub const LISTEN_HTTP: &str = "0.0.0.0:8080";
/// `listen.admin`.
pub const LISTEN_ADMIN: &str = "127.0.0.1:9900";
/// `state_file`, relative to the config file's folder.
pub const STATE_FILE: &str = "sitesteer.state.json";
/// `site.region`.
pub const REGION: &str = "default";
/// `site.tier`.
pub const TIER: u8 = 0;
/// `site.weight`.
pub const WEIGHT: u32 = 100;
/// Largest `site.weight`.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// `probe.interval`, milliseconds.
pub const PROBE_INTERVAL_MS: u64 = 100;
/// Shortest `probe.interval`, milliseconds.
pub const PROBE_MIN_INTERVAL_MS: u64 = 20;
/// `probe.timeout`, milliseconds.
pub const PROBE_TIMEOUT_MS: u64 = 80;
/// `probe.jitter`, as a divisor of the interval.
pub const PROBE_JITTER_DIVISOR: u32 = 10;
/// `probe.expect_status`.
pub const PROBE_EXPECT_STATUS: (u16, u16) = (200, 399);
/// `probe.path` for http probes.
pub const PROBE_HTTP_PATH: &str = "/health";
/// `probe.path` for mcp probes.
pub const PROBE_MCP_PATH: &str = "/mcp";
/// `probe.path` for ws probes.
pub const PROBE_WS_PATH: &str = "/mcp/ws";
/// `probe.path` for sse probes.
pub const PROBE_SSE_PATH: &str = "/mcp/sse";
/// `health.rise`.
pub const RISE: u32 = 2;
/// `health.fall`.
pub const FALL: u32 = 2;
/// `health.window`, seconds.
pub const WINDOW_S: u64 = 10;
/// `health.ewma_alpha`.
pub const EWMA_ALPHA: f64 = 0.3;
/// `health.latency_samples`.
pub const LATENCY_SAMPLES: usize = 256;
/// `health.latency_reference`, milliseconds.
pub const LATENCY_REFERENCE_MS: u64 = 100;
/// `health.degraded_latency`, milliseconds.
pub const DEGRADED_LATENCY_MS: u64 = 1000;
/// `health.degraded_error_rate`.
pub const DEGRADED_ERROR_RATE: f64 = 0.2;
/// `health.slow_start`, milliseconds: off.
pub const SLOW_START_MS: u64 = 0;
/// `health.suspect_hold`, milliseconds.
pub const SUSPECT_HOLD_MS: u64 = 2000;
/// `proxy.threads`.
pub const PROXY_THREADS: usize = 2;
/// `proxy.connect_timeout`, milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1000;
/// `proxy.read_timeout`, seconds.
pub const READ_TIMEOUT_S: u64 = 30;
/// `proxy.retries`.
pub const RETRIES: usize = 2;
/// `proxy.retry_buffer_bytes`.
pub const RETRY_BUFFER_BYTES: usize = 64 * 1024;
/// `proxy.hedge_factor`: a safe request is hedged after its site's p99 times this.
pub const HEDGE_FACTOR: f64 = 3.0;
/// `proxy.hedge_floor`, milliseconds: no hedge before this, however fast the site.
pub const HEDGE_FLOOR_MS: u64 = 50;
/// `proxy.hedge_budget`: the share of safe requests that may be hedged.
pub const HEDGE_BUDGET: f64 = 0.1;
/// `proxy.retry_budget.ratio`: further attempts allowed per request started.
pub const RETRY_BUDGET_RATIO: f64 = 0.2;
/// `proxy.retry_budget.min_per_second`: further attempts allowed per second at any traffic.
pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
/// `proxy.retry_budget.ttl`, seconds: how long a request counts towards the budget.
pub const RETRY_BUDGET_TTL_S: u64 = 10;
/// `proxy.drain_timeout`, seconds.
pub const DRAIN_TIMEOUT_S: u64 = 30;

// Load-aware choice and shedding.
/// `proxy.load_decay`, milliseconds: the time constant of a site's peak-EWMA latency.
pub const LOAD_DECAY_MS: u64 = 1_000;
/// `proxy.queue_timeout`, milliseconds: the longest wait for a slot at a capped site.
pub const QUEUE_TIMEOUT_MS: u64 = 100;
/// `proxy.queue_length`: how many requests may wait for a slot at once.
pub const QUEUE_LENGTH: usize = 256;
/// Upper bound of `[[site]] max_in_flight`.
pub const MAX_IN_FLIGHT_MAX: u32 = 1_000_000;
/// `dns.ttl`, seconds.
pub const DNS_TTL: u32 = 5;
/// `dns.min_ttl`, seconds.
pub const DNS_MIN_TTL: u32 = 1;
/// `dns.udp_threads`: threads answering DNS over UDP.
pub const DNS_UDP_THREADS: usize = 1;
/// Upper bound of `dns.udp_threads`.
pub const DNS_UDP_THREADS_MAX: usize = 64;
/// `dns.soa.mname`, prefixed to the zone.
pub const DNS_SOA_MNAME: &str = "ns1";
/// `dns.soa.rname`, prefixed to the zone.
pub const DNS_SOA_RNAME: &str = "hostmaster";
/// `dns.soa.refresh`, seconds.
pub const DNS_SOA_REFRESH: u32 = 3600;
/// `dns.soa.retry`, seconds.
pub const DNS_SOA_RETRY: u32 = 600;
/// `dns.soa.expire`, seconds.
pub const DNS_SOA_EXPIRE: u32 = 86_400;
/// `cluster.prefix`.
pub const CLUSTER_PREFIX: &str = "/sitesteer/";
/// `cluster.lease_ttl`, seconds.
pub const CLUSTER_LEASE_TTL_S: u64 = 5;
/// `proxy.close_grace`, milliseconds.
pub const CLOSE_GRACE_MS: u64 = 100;
/// `proxy.session_key_file`, relative to the config file's folder.
pub const SESSION_KEY_FILE: &str = "sitesteer.session.key";
/// `webhook.timeout`, milliseconds.
pub const WEBHOOK_TIMEOUT_MS: u64 = 2000;
/// `webhook.attempts`.
pub const WEBHOOK_ATTEMPTS: u32 = 5;
/// Most `[[site]]` entries (steering tracks tried sites in a fixed bitset of this size).
pub const MAX_SITES: usize = 256;
/// `drill.duration`, seconds.
pub const DRILL_DURATION_S: u64 = 9;
/// `drill.rate`, requests per second.
pub const DRILL_RATE: u32 = 50;
/// `limits.max_connections`: open connections per listener (HTTP and TCP each).
pub const MAX_CONNECTIONS: usize = 10_000;
/// `limits.max_request_line`, bytes (method, target and version).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// `limits.max_header_bytes`: the whole request head (request line and headers), bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest `limits.max_header_bytes`: pingora refuses larger heads itself (its fixed
/// `MAX_HEADER_SIZE`).
pub const PINGORA_MAX_HEADER_BYTES: usize = 1_048_575;
/// `limits.max_headers`: header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Largest `limits.max_headers`: pingora parses at most 256 (its fixed `MAX_HEADERS`).
pub const PINGORA_MAX_HEADERS: usize = 256;
/// `limits.max_body_bytes`: one request body, bytes.
pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// `limits.header_timeout`, milliseconds: from a request's first byte (a connection's
/// accept, for its first request) to the end of its head.
pub const HEADER_TIMEOUT_MS: u64 = 10_000;
/// `limits.body_timeout`, milliseconds: the longest pause between two reads of a body.
pub const BODY_TIMEOUT_MS: u64 = 30_000;
/// `limits.keepalive_timeout`, milliseconds: how long an idle connection waits for its
/// next request.
pub const KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
/// `limits.stream_idle_timeout`, milliseconds: a long-lived connection (raw TCP, WebSocket,
/// SSE) that moves no byte in either direction this long is closed (HAProxy's `timeout
/// tunnel`). An hour: SSE servers send keep-alive comments and WebSocket clients ping far
/// more often, so only a dead or abandoned connection stays silent that long.
pub const STREAM_IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// `proxy.upgrade_sock`, beside the state file.
pub const UPGRADE_SOCK: &str = "sitesteer.upgrade.sock";

// The DNS listener's limits (`[limits]` dns_*) and `dns.ecs_trusted`.

/// `limits.dns_tcp_max_connections`: open DNS-over-TCP connections; the excess is closed at
/// once.
pub const DNS_TCP_MAX_CONNECTIONS: usize = 1000;
/// `limits.dns_tcp_idle_timeout`, milliseconds: how long a DNS-over-TCP connection may take to
/// send its next whole query (or to read its answers) before it is closed.
pub const DNS_TCP_IDLE_TIMEOUT_MS: u64 = 10_000;
/// `limits.dns_rrl_rate`: DNS answers over UDP per second to one client prefix (0: no limit).
pub const DNS_RRL_RATE: u32 = 500;
/// `limits.dns_rrl_burst`: answers one client prefix may get at once above the rate.
pub const DNS_RRL_BURST: u32 = 1000;
/// `limits.dns_rrl_slip`: every Nth answer past the limit is a truncated (TC) answer that
/// sends the client to TCP; the others are dropped (0: drop them all).
pub const DNS_RRL_SLIP: u32 = 2;
/// `limits.dns_rrl_ipv4_prefix`: IPv4 clients are counted per network of this length.
pub const DNS_RRL_IPV4_PREFIX: u8 = 24;
/// `limits.dns_rrl_ipv6_prefix`: IPv6 clients are counted per network of this length.
pub const DNS_RRL_IPV6_PREFIX: u8 = 56;
/// `dns.ecs_trusted`: every resolver (today's behaviour; restrict it, see docs/dns.md).
pub const DNS_ECS_TRUSTED: [&str; 2] = ["0.0.0.0/0", "::/0"];
