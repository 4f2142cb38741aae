// The table of broken configs: (what is wrong, the whole file, a key path the refusal must
// name). Shared by `config/tests/broken.rs` (through `parse`) and the e2e suite (through
// `sitesteer check`), so both the library and the command prove every row.

/// A valid `[listen]` and one site; rows append to it.
macro_rules! base {
    () => {
        "[listen]\nhttp = \"127.0.0.1:18080\"\nadmin = \"127.0.0.1:19900\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:18081\"\n\n"
    };
}

/// Every row must be refused, with an error whose key path contains the third column.
pub(super) const BROKEN: &[(&str, &str, &str)] = &[
    // [listen]
    ("listen address of the wrong type", "[listen]\nhttp = 8080\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "listen.http"),
    ("listen address without a port", "[listen]\nadmin = \"localhost\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "listen.admin"),
    ("two listeners on one address", "[listen]\nhttp = \"127.0.0.1:18080\"\ntcp = \"127.0.0.1:18080\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\ntcp = \"127.0.0.1:2\"\n", "listen.tcp"),
    ("unknown listener", "[listen]\nhttps = \"127.0.0.1:8443\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "listen.https"),
    // [admin]
    ("admin off loopback without a token", "[listen]\nadmin = \"0.0.0.0:19900\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "admin.token_file"),
    ("admin key misspelt", concat!(base!(), "[admin]\ntokenfile = \"t\"\n"), "admin.tokenfile"),
    // top level
    ("state_file of the wrong type", concat!("state_file = 5\n", base!()), "state_file"),
    ("unknown top-level key", concat!("sites = 1\n", base!()), "sites"),
    ("no site at all", "[listen]\nhttp = \"127.0.0.1:18080\"\n", "site"),
    ("site as a table, not an array of tables", "[site]\nname = \"a\"\n", "site"),
    // [[site]]
    ("site without a name", "[[site]]\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "site[0].name"),
    ("site name with spaces", "[[site]]\nname = \"bad name!\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "site[0].name"),
    ("duplicate site names", concat!(base!(), "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:2\"\n"), "site[1].name"),
    ("tier out of range", "[[site]]\nname = \"a\"\ntier = 300\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "site[0].tier"),
    ("negative weight", "[[site]]\nname = \"a\"\nweight = -1\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "site[0].weight"),
    ("site address not an IP", "[[site]]\nname = \"a\"\naddress = \"example.com\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "site[0].address"),
    ("host header with a space", "[[site]]\nname = \"a\"\nhost = \"a b\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n", "site[0].host"),
    ("site without endpoints", "[[site]]\nname = \"a\"\n", "site[0].endpoints"),
    ("endpoint without a port", "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1\"\n", "site[0].endpoints.http"),
    ("unknown endpoint kind", "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\ngrpc = \"127.0.0.1:2\"\n", "site[0].endpoints.grpc"),
    ("site availability over 100%", "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n[site.objectives]\navailability = \"120%\"\n", "site[0].objectives.availability"),
    // [[route]]
    ("route prefix without a slash", concat!(base!(), "[[route]]\nprefix = \"mcp\"\nendpoint = \"http\"\n"), "route[0].prefix"),
    ("route to an endpoint no site has", concat!(base!(), "[[route]]\nprefix = \"/ws\"\nendpoint = \"ws\"\n"), "route[0].endpoint"),
    ("duplicate route prefixes", concat!(base!(), "[[route]]\nprefix = \"/\"\nendpoint = \"http\"\n[[route]]\nprefix = \"/\"\nendpoint = \"http\"\n"), "route[1].prefix"),
    ("route without an endpoint", concat!(base!(), "[[route]]\nprefix = \"/\"\n"), "route[0].endpoint"),
    // [[probe]]
    ("unknown probe kind", concat!(base!(), "[[probe]]\nkind = \"icmp\"\n"), "probe[0].kind"),
    ("probe without a kind", concat!(base!(), "[[probe]]\npath = \"/health\"\n"), "probe[0].kind"),
    ("probe timeout not shorter than the interval", concat!(base!(), "[[probe]]\nkind = \"http\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n"), "probe[0].timeout"),
    ("probe interval too short", concat!(base!(), "[[probe]]\nkind = \"http\"\ninterval = \"5ms\"\ntimeout = \"1ms\"\n"), "probe[0].interval"),
    ("probe interval not a duration", concat!(base!(), "[[probe]]\nkind = \"http\"\ninterval = \"soon\"\n"), "probe[0].interval"),
    ("status code out of range", concat!(base!(), "[[probe]]\nkind = \"http\"\nexpect_status = [600]\n"), "probe[0].expect_status"),
    ("unknown MCP protocol", concat!(base!(), "[[probe]]\nkind = \"mcp\"\nmcp_protocol = \"2024-01-01\"\n"), "probe[0].mcp_protocol"),
    ("probe path without a slash", concat!(base!(), "[[probe]]\nkind = \"http\"\npath = \"health\"\n"), "probe[0].path"),
    // [health]
    ("ewma_alpha of zero", concat!(base!(), "[health]\newma_alpha = 0.0\n"), "health.ewma_alpha"),
    ("rise of zero", concat!(base!(), "[health]\nrise = 0\n"), "health.rise"),
    ("window without a unit", concat!(base!(), "[health]\nwindow = \"10\"\n"), "health.window"),
    ("error rate above 1", concat!(base!(), "[health]\ndegraded_error_rate = 1.5\n"), "health.degraded_error_rate"),
    // [proxy]
    ("zero proxy threads", concat!(base!(), "[proxy]\nthreads = 0\n"), "proxy.threads"),
    ("retries as a string", concat!(base!(), "[proxy]\nretries = \"two\"\n"), "proxy.retries"),
    ("connect_timeout in parsecs", concat!(base!(), "[proxy]\nconnect_timeout = \"1 parsec\"\n"), "proxy.connect_timeout"),
    ("retry buffer over 64 KiB", concat!(base!(), "[proxy]\nretry_buffer_bytes = 65537\n"), "proxy.retry_buffer_bytes"),
    // [objectives] and [[tier]]
    ("availability not a percentage", concat!(base!(), "[objectives]\navailability = \"most\"\n"), "objectives.availability"),
    ("negative failed_requests", concat!(base!(), "[objectives]\nfailed_requests = -3\n"), "objectives.failed_requests"),
    ("tier listed twice", concat!(base!(), "[[tier]]\ntier = 1\n[[tier]]\ntier = 1\n"), "tier[1].tier"),
    ("tier without its number", concat!(base!(), "[[tier]]\nshift_time = \"1s\"\n"), "tier[0].tier"),
    // [dns]
    ("dns zone without the trailing dot", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"mcp.example.com\"\n", "dns.zone"),
    ("dns without listen.dns", concat!(base!(), "[dns]\nzone = \"mcp.example.com.\"\n"), "listen.dns"),
    ("dns without a zone", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nttl = 5\n", "dns.zone"),
    ("negative dns ttl", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\nttl = -1\n", "dns.ttl"),
    ("dns min_ttl above ttl", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\nttl = 5\nmin_ttl = 9\n", "dns.min_ttl"),
    ("dns name listed twice", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\nnames = [\"api\", \"API\"]\n", "dns.names[1]"),
    ("dns soa refresh as a duration string", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\n[dns.soa]\nrefresh = \"1h\"\n", "dns.soa.refresh"),
    ("dns ecs_trusted not a network", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\necs_trusted = [\"resolver.example\"]\n", "dns.ecs_trusted[0]"),
    ("dns udp_threads of zero", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\nudp_threads = 0\n", "dns.udp_threads"),
    ("geoip without its database", "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n\n[dns]\nzone = \"a.b.\"\n[dns.geoip]\ncountries = { US = \"a\" }\n", "dns.geoip.db"),
    // [[geo]]
    ("geo cidr that is not a network", concat!(base!(), "[[geo]]\ncidr = \"10.0.0.0/33\"\nregion = \"x\"\n"), "geo[0].cidr"),
    ("geo without a region", concat!(base!(), "[[geo]]\ncidr = \"10.0.0.0/8\"\n"), "geo[0].region"),
    // [cluster]
    ("cluster without etcd", concat!(base!(), "[cluster]\nprefix = \"/x/\"\n"), "cluster.etcd"),
    ("https etcd without a CA", concat!(base!(), "[cluster]\netcd = [\"https://127.0.0.1:2379\"]\n"), "cluster.ca_file"),
    ("etcd URL without a port", concat!(base!(), "[cluster]\netcd = [\"http://etcd\"]\n"), "cluster.etcd[0]"),
    ("lease shorter than 2s", concat!(base!(), "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"1s\"\n"), "cluster.lease_ttl"),
    ("client cert without its key", concat!(base!(), "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\ncert_file = \"c.pem\"\n"), "cluster.cert_file"),
    // [[webhook]]
    ("https webhook", concat!(base!(), "[[webhook]]\nurl = \"https://127.0.0.1:9000/hook\"\n"), "webhook[0].url"),
    ("webhook with zero attempts", concat!(base!(), "[[webhook]]\nurl = \"http://127.0.0.1:9000/hook\"\nattempts = 0\n"), "webhook[0].attempts"),
    // [[drill]]
    ("drill of an unknown site", concat!(base!(), "[[drill]]\nsite = \"zz\"\nschedule = \"0 3 * * 1\"\n"), "drill[0].site"),
    ("drill schedule with a bad minute", concat!(base!(), "[[drill]]\nsite = \"a\"\nschedule = \"61 * * * *\"\n"), "drill[0].schedule"),
    ("drill shorter than 3s", concat!(base!(), "[[drill]]\nsite = \"a\"\nschedule = \"0 3 * * 1\"\nduration = \"1s\"\n"), "drill[0].duration"),
    ("unknown drill mode", concat!(base!(), "[[drill]]\nsite = \"a\"\nschedule = \"0 3 * * 1\"\nmode = \"explode\"\n"), "drill[0].mode"),
    // [tls] and [site.tls]
    ("listener certificate without its key", concat!(base!(), "[tls]\ncert_file = \"c.pem\"\n"), "tls.key_file"),
    ("TLS on an unknown listener", concat!(base!(), "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nlisteners = [\"https\"]\n"), "tls.listeners[0]"),
    ("TLS on a listener that is not set", concat!(base!(), "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nlisteners = [\"tcp\"]\n"), "tls.listeners[0]"),
    ("TLS site without a CA", "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n[site.tls]\nsni = \"mcp.example.com\"\n", "site[0].tls.ca_file"),
    ("TLS site with a bad server name", "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n[site.tls]\nsni = \"not a name\"\nca_file = \"ca.pem\"\n", "site[0].tls.sni"),
    // [limits]
    ("more headers than pingora parses", concat!(base!(), "[limits]\nmax_headers = 1000\n"), "limits.max_headers"),
    ("head larger than pingora reads", concat!(base!(), "[limits]\nmax_header_bytes = 2000000\n"), "limits.max_header_bytes"),
    ("request line longer than the head", concat!(base!(), "[limits]\nmax_header_bytes = 4096\nmax_request_line = 8192\n"), "limits.max_request_line"),
    ("zero header timeout", concat!(base!(), "[limits]\nheader_timeout = \"0s\"\n"), "limits.header_timeout"),
    ("zero stream idle timeout", concat!(base!(), "[limits]\nstream_idle_timeout = \"0s\"\n"), "limits.stream_idle_timeout"),
    ("negative body limit", concat!(base!(), "[limits]\nmax_body_bytes = -1\n"), "limits.max_body_bytes"),
    ("zero connections", concat!(base!(), "[limits]\nmax_connections = 0\n"), "limits.max_connections"),
    ("body timeout as a number", concat!(base!(), "[limits]\nbody_timeout = 30\n"), "limits.body_timeout"),
    ("limits key misspelt", concat!(base!(), "[limits]\nmax_body = 1\n"), "limits.max_body"),
    ("zero dns tcp connections", concat!(base!(), "[limits]\ndns_tcp_max_connections = 0\n"), "limits.dns_tcp_max_connections"),
    ("dns rrl ipv4 prefix over 32", concat!(base!(), "[limits]\ndns_rrl_ipv4_prefix = 33\n"), "limits.dns_rrl_ipv4_prefix"),
];
