//! Golden and refusal tests for the configuration.

use super::*;
use std::path::Path;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../examples/sitesteer.toml");

const MINIMAL: &str = r#"
[[site]]
name = "a"
[site.endpoints]
http = "127.0.0.1:1001"
"#;

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, "<test>", Path::new("/etc/sitesteer"))
}

fn errors(text: &str) -> Vec<ConfigError> {
    parse_str(text)
        .expect_err("config should be refused")
        .errors
}

#[test]
fn the_shipped_example_is_valid() {
    let c = parse_str(EXAMPLE).expect("example parses");
    assert_eq!(c.sites.len(), 3);
    assert_eq!(c.sites[2].tier, 1);
    assert_eq!(c.routes[0].prefix.len(), "/mcp/sse".len());
    assert_eq!(c.probes.len(), 2);
    assert_eq!(
        c.state_file,
        Path::new("/etc/sitesteer/sitesteer.state.json")
    );
    assert!((c.objectives.availability - 0.99999).abs() < 1e-12);
}

#[test]
fn defaults_fill_everything_but_names_and_endpoints() {
    let c = parse_str(MINIMAL).expect("minimal parses");
    assert_eq!(c.listen.http, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(c.listen.admin, "127.0.0.1:9900".parse().unwrap());
    assert_eq!(c.sites[0].weight, WEIGHT);
    assert_eq!(c.sites[0].region, "default");
    assert_eq!(c.probes.len(), 1);
    assert_eq!(c.probes[0].interval, Duration::from_millis(100));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(
        c.route_for("/mcp").map(|r| r.endpoint),
        Some(EndpointKind::Http)
    );
}

#[test]
fn every_table_refuses_an_unknown_key() {
    let tables = [
        "[listen]",
        "[admin]",
        "[health]",
        "[proxy]",
        "[objectives]",
        "[dns]\nzone = \"a.b.\"",
        "[cluster]\netcd = [\"http://127.0.0.1:2379\"]",
        "[[route]]\nprefix=\"/\"\nendpoint=\"http\"",
        "[[probe]]\nkind=\"http\"",
        "[[geo]]\ncidr=\"10.0.0.0/8\"\nregion=\"x\"",
    ];
    for table in tables {
        let text = format!("{MINIMAL}\n{table}\nbogus_key = 1\n");
        let errs = errors(&text);
        assert!(
            errs.iter()
                .any(|e| e.path.ends_with("bogus_key") && e.line.is_some()),
            "{table}: {errs:?}"
        );
    }
    let errs = errors(&format!("bogus = 1\n{MINIMAL}"));
    assert_eq!(errs[0].path, "bogus");
    assert_eq!(errs[0].line, Some(1));
    let errs = errors(
        "[[site]]\nname = \"a\"\nbogus = 2\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\nfoo = 3\n",
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "site[0].bogus" && e.line == Some(3)),
        "{errs:?}"
    );
}

#[test]
fn reports_every_error_at_once_with_path_and_line() {
    let text = r#"
[listen]
http = "not an address"

[[site]]
name = "a"
[site.endpoints]
http = "127.0.0.1:1001"

[[site]]
name = "a"
weight = -1
[site.endpoints]
http = "localhost"

[[route]]
prefix = "/mcp/ws"
endpoint = "ws"

[[probe]]
kind = "http"
interval = "100ms"
timeout = "200ms"
"#;
    let errs = errors(text);
    let find = |path: &str| {
        errs.iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error for {path}: {errs:?}"))
    };
    assert_eq!(find("listen.http").line, Some(3));
    assert_eq!(find("site[1].name").line, Some(11));
    assert!(find("site[1].name").message.contains("duplicate"));
    assert_eq!(find("site[1].weight").line, Some(12));
    assert_eq!(find("site[1].endpoints.http").line, Some(14));
    assert!(find("route[0].endpoint").message.contains("no site has"));
    assert!(find("probe[0].timeout")
        .message
        .contains("shorter than the interval"));
    assert_eq!(errs.len(), 6, "{errs:?}");
}

#[test]
fn bad_durations_and_syntax_are_refused() {
    let errs = errors(&format!(
        "{MINIMAL}\n[[probe]]\nkind = \"tcp\"\ninterval = \"soon\"\n"
    ));
    assert_eq!(errs[0].path, "probe[0].interval");
    let errs = errors("[[site]\nname = 1");
    assert!(errs[0].message.starts_with("not valid TOML"));
    assert_eq!(errs[0].line, Some(1));
    let errs = errors(&format!("{MINIMAL}\n[[probe]]\nkind = \"smoke\"\n"));
    assert_eq!(errs[0].path, "probe[0].kind");
    let errs = errors(&format!(
        "{MINIMAL}\n[[probe]]\nkind = \"http\"\ninterval = \"5ms\"\ntimeout = \"1ms\"\n"
    ));
    assert_eq!(errs[0].path, "probe[0].interval");
}

#[test]
fn a_non_loopback_admin_needs_a_token() {
    let errs = errors(&format!("[listen]\nadmin = \"0.0.0.0:9900\"\n{MINIMAL}"));
    assert_eq!(errs[0].path, "admin.token_file");
    let ok = format!("[listen]\nadmin = \"0.0.0.0:9900\"\n[admin]\ntoken_file = \"t\"\n{MINIMAL}");
    assert!(parse_str(&ok).is_ok());
}

#[test]
fn admin_allowed_hosts_are_dns_names_without_ports() {
    let ok = parse_str(&format!(
        "[admin]\nallowed_hosts = [\"Admin.Example.com.\", \"lb-1\"]\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(ok.admin.allowed_hosts, ["admin.example.com", "lb-1"]);
    for bad in [
        "admin.example.com:9900",
        "",
        "a..b",
        "evil example",
        "*.example.com",
    ] {
        let errs = errors(&format!("[admin]\nallowed_hosts = [{bad:?}]\n{MINIMAL}"));
        assert_eq!(errs[0].path, "admin.allowed_hosts[0]", "{bad:?}");
    }
}

#[test]
fn wrong_types_name_their_key() {
    let errs = errors(
        "[[site]]\nname = \"a\"\ntier = \"zero\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n",
    );
    assert_eq!(errs[0].path, "site[0].tier");
    assert_eq!(errs[0].line, Some(3));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_any_text(text in ".{0,400}") {
            let _ = parse_str(&text);
        }

        #[test]
        fn never_panics_on_mangled_example(cut in 0usize..4000, insert in "[\\[\\]=\"a-z0-9 \n.]{0,20}") {
            let mut text = EXAMPLE.to_string();
            let at = cut.min(text.len());
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.insert_str(at, &insert);
            let _ = parse_str(&text);
        }
    }
}

#[test]
fn cluster_keys_have_defaults_and_are_checked() {
    let c = parse_str(&format!(
        "{MINIMAL}\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/fleet\"\n"
    ))
    .expect("cluster parses");
    let cluster = c.cluster.expect("cluster section");
    assert_eq!(
        cluster.prefix, "/fleet/",
        "the prefix gets its trailing slash"
    );
    assert_eq!(cluster.lease_ttl, Duration::from_secs(5));
    assert_eq!(cluster.instance, None);
    let c = parse_str(&format!(
        "{MINIMAL}\n[cluster]\netcd = [\"https://etcd.example:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nusername = \"u\"\npassword_file = \"pw\"\nlease_ttl = \"10s\"\ninstance = \"fra-1\"\n"
    ))
    .expect("full cluster parses");
    let cluster = c.cluster.expect("cluster section");
    assert_eq!(
        cluster.ca_file.as_deref(),
        Some(Path::new("/etc/sitesteer/ca.pem"))
    );
    assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
    assert_eq!(cluster.instance.as_deref(), Some("fra-1"));
    let errs = errors(&format!(
        "{MINIMAL}\n[cluster]\netcd = [\"https://x:1\", \"127.0.0.1:2379\"]\ncert_file = \"c\"\nusername = \"u\"\nlease_ttl = \"1s\"\ninstance = \"a/b\"\n"
    ));
    for path in [
        "cluster.ca_file",
        "cluster.etcd[1]",
        "cluster.cert_file",
        "cluster.username",
        "cluster.lease_ttl",
        "cluster.instance",
    ] {
        assert!(errs.iter().any(|e| e.path == path), "{path}: {errs:?}");
    }
}

#[test]
fn dns_udp_threads_default_to_one_and_are_bounded() {
    let dns = |extra: &str| {
        format!("[listen]\ndns = \"127.0.0.1:5353\"\n{MINIMAL}\n[dns]\nzone = \"a.b.\"\n{extra}")
    };
    let c = parse_str(&dns("")).expect("parses");
    assert_eq!(c.dns.map(|d| d.udp_threads), Some(DNS_UDP_THREADS));
    let c = parse_str(&dns("udp_threads = 4\n")).expect("parses");
    assert_eq!(c.dns.map(|d| d.udp_threads), Some(4));
    for bad in ["0", "65", "-1"] {
        let errs = errors(&dns(&format!("udp_threads = {bad}\n")));
        assert!(
            errs.iter().any(|e| e.path == "dns.udp_threads"),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn hedging_keys_have_defaults_and_are_checked() {
    let c = parse_str(MINIMAL).expect("minimal parses");
    assert_eq!(c.proxy.hedge_factor, HEDGE_FACTOR);
    assert_eq!(c.proxy.hedge_floor, Duration::from_millis(HEDGE_FLOOR_MS));
    assert_eq!(c.proxy.hedge_budget, HEDGE_BUDGET);
    let with = |extra: &str| format!("[proxy]\n{extra}\n{MINIMAL}");
    let c = parse_str(&with(
        "hedge_budget = 0\nhedge_factor = 1.5\nhedge_floor = \"5ms\"",
    ))
    .expect("parses");
    assert_eq!(c.proxy.hedge_budget, 0.0);
    assert_eq!(c.proxy.hedge_factor, 1.5);
    assert_eq!(c.proxy.hedge_floor, Duration::from_millis(5));
    for (bad, key) in [
        ("hedge_factor = 0.5", "proxy.hedge_factor"),
        ("hedge_factor = 101.0", "proxy.hedge_factor"),
        ("hedge_budget = 1.5", "proxy.hedge_budget"),
        ("hedge_budget = -0.1", "proxy.hedge_budget"),
        ("hedge_floor = \"soon\"", "proxy.hedge_floor"),
    ] {
        let errs = errors(&with(bad));
        assert!(errs.iter().any(|e| e.path == key), "{bad}: {errs:?}");
    }
}

#[test]
fn load_and_shedding_keys_have_defaults_and_are_checked() {
    let c = parse_str(MINIMAL).expect("minimal parses");
    assert_eq!(c.proxy.load_decay, Duration::from_millis(LOAD_DECAY_MS));
    assert_eq!(
        c.proxy.queue_timeout,
        Duration::from_millis(QUEUE_TIMEOUT_MS)
    );
    assert_eq!(c.proxy.queue_length, QUEUE_LENGTH);
    assert!(c.sites.iter().all(|s| s.max_in_flight.is_none()));
    let proxy = |extra: &str| format!("[proxy]\n{extra}\n{MINIMAL}");
    let c = parse_str(&proxy(
        "load_decay = \"2s\"\nqueue_timeout = \"0s\"\nqueue_length = 0",
    ))
    .expect("parses");
    assert_eq!(c.proxy.load_decay, Duration::from_secs(2));
    assert_eq!(c.proxy.queue_timeout, Duration::ZERO);
    assert_eq!(c.proxy.queue_length, 0);
    let site = |cap: &str| {
        MINIMAL.replace(
            "[site.endpoints]",
            &format!("max_in_flight = {cap}\n[site.endpoints]"),
        )
    };
    let c = parse_str(&site("8")).expect("parses");
    assert_eq!(c.sites[0].max_in_flight, Some(8));
    for (bad, key) in [
        (proxy("load_decay = \"1ms\""), "proxy.load_decay"),
        (proxy("load_decay = \"11m\""), "proxy.load_decay"),
        (proxy("queue_timeout = \"11s\""), "proxy.queue_timeout"),
        (proxy("queue_timeout = \"never\""), "proxy.queue_timeout"),
        (proxy("queue_length = -1"), "proxy.queue_length"),
        (proxy("queue_length = 100001"), "proxy.queue_length"),
        (site("0"), "site[0].max_in_flight"),
        (site("-3"), "site[0].max_in_flight"),
        (site("1000001"), "site[0].max_in_flight"),
    ] {
        let errs = errors(&bad);
        assert!(errs.iter().any(|e| e.path == key), "{bad}: {errs:?}");
    }
}
