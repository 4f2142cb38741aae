//! The DNS listener's guards in the config: the `dns_*` keys of `[limits]` and
//! `dns.ecs_trusted`, their defaults and their refusals.

use super::*;
use std::path::Path;
use std::time::Duration;

const BASE: &str = "[listen]\ndns = \"127.0.0.1:5353\"\n\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1001\"\n\n";

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, "<test>", Path::new("/etc/sitesteer"))
}

fn refused_at(text: &str, path: &str) {
    let errs = parse_str(text).expect_err("refused").errors;
    assert!(errs.iter().any(|e| e.path == path), "{path}: {errs:?}");
}

#[test]
fn the_dns_limits_have_defaults_and_are_checked() {
    let rrl = |d: &DnsLimits| {
        let r = d.rrl;
        (r.rate, r.burst, r.slip, r.ipv4_prefix, r.ipv6_prefix)
    };
    let c = parse_str(BASE).expect("parses");
    let d = &c.limits.dns;
    assert_eq!(d.tcp_max_connections, DNS_TCP_MAX_CONNECTIONS);
    assert_eq!(
        d.tcp_idle_timeout,
        Duration::from_millis(DNS_TCP_IDLE_TIMEOUT_MS)
    );
    assert_eq!(rrl(d), (500, 1000, 2, 24, 56));
    let c = parse_str(&format!(
        "{BASE}[limits]\ndns_tcp_max_connections = 7\ndns_tcp_idle_timeout = \"250ms\"\n\
         dns_rrl_rate = 0\ndns_rrl_burst = 3\ndns_rrl_slip = 0\ndns_rrl_ipv4_prefix = 32\ndns_rrl_ipv6_prefix = 64\n"
    ))
    .expect("parses");
    let d = &c.limits.dns;
    assert_eq!(d.tcp_max_connections, 7);
    assert_eq!(d.tcp_idle_timeout, Duration::from_millis(250));
    assert_eq!(rrl(d), (0, 3, 0, 32, 64));
    for (line, path) in [
        (
            "dns_tcp_max_connections = 0",
            "limits.dns_tcp_max_connections",
        ),
        (
            "dns_tcp_idle_timeout = \"0s\"",
            "limits.dns_tcp_idle_timeout",
        ),
        ("dns_tcp_idle_timeout = 10", "limits.dns_tcp_idle_timeout"),
        (
            "dns_tcp_idle_timeout = \"soon\"",
            "limits.dns_tcp_idle_timeout",
        ),
        ("dns_rrl_rate = -1", "limits.dns_rrl_rate"),
        ("dns_rrl_burst = 0", "limits.dns_rrl_burst"),
        ("dns_rrl_slip = 101", "limits.dns_rrl_slip"),
        ("dns_rrl_ipv4_prefix = 33", "limits.dns_rrl_ipv4_prefix"),
        ("dns_rrl_ipv4_prefix = 4", "limits.dns_rrl_ipv4_prefix"),
        ("dns_rrl_ipv6_prefix = 129", "limits.dns_rrl_ipv6_prefix"),
        ("dns_rrl = 5", "limits.dns_rrl"),
    ] {
        refused_at(&format!("{BASE}[limits]\n{line}\n"), path);
    }
}

#[test]
fn ecs_is_trusted_from_everyone_unless_listed() {
    let dns = |extra: &str| format!("{BASE}[dns]\nzone = \"a.b.\"\n{extra}");
    let trusted = |text: &str| -> Vec<String> {
        let c = parse_str(text).expect("parses");
        let nets = c.dns.expect("dns").ecs_trusted;
        nets.iter().map(|n| n.to_string()).collect()
    };
    let nets = trusted(&dns(""));
    assert_eq!(nets, ["0.0.0.0/0", "::/0"]);
    let nets = trusted(&dns(
        "ecs_trusted = [\"192.0.2.7/24\", \"2001:db8::53\", \" 198.51.100.1 \"]\n",
    ));
    assert_eq!(
        nets,
        ["192.0.2.0/24", "2001:db8::53/128", "198.51.100.1/32"]
    );
    assert!(
        trusted(&dns("ecs_trusted = []\n")).is_empty(),
        "an empty list trusts no one"
    );
    for bad in ["\"10.0.0.0/33\"", "\"resolver.example\"", "\"\""] {
        refused_at(
            &dns(&format!("ecs_trusted = [\"192.0.2.1\", {bad}]\n")),
            "dns.ecs_trusted[1]",
        );
    }
    refused_at(&dns("ecs_trusted = \"192.0.2.1\"\n"), "dns.ecs_trusted");
}
