//! The DNS listener's guards in the config: the `dns_*` keys of `[limits]` (the DNS-over-TCP
//! connection cap and idle timeout, response rate limiting over UDP) and `dns.ecs_trusted`.

use std::time::Duration;

use ipnet::IpNet;

use super::{duration, int_in, Problems};
use crate::defaults as d;
use crate::model::{DnsLimits, Rrl};
use crate::raw::RawLimits;

/// The `dns_*` keys of `[limits]`.
pub(super) fn dns_limits(raw: &RawLimits, p: &mut Problems) -> DnsLimits {
    let idle = duration(
        &raw.dns_tcp_idle_timeout,
        Duration::from_millis(d::DNS_TCP_IDLE_TIMEOUT_MS),
        "limits.dns_tcp_idle_timeout",
        p,
    );
    if idle.is_zero() {
        p.add("limits.dns_tcp_idle_timeout", "must be above zero");
    }
    DnsLimits {
        tcp_max_connections: int_in(
            raw.dns_tcp_max_connections,
            d::DNS_TCP_MAX_CONNECTIONS,
            (1, 1_000_000),
            "limits.dns_tcp_max_connections",
            p,
        ),
        tcp_idle_timeout: idle,
        rrl: Rrl {
            rate: int_in(
                raw.dns_rrl_rate,
                d::DNS_RRL_RATE,
                (0, 10_000_000),
                "limits.dns_rrl_rate",
                p,
            ),
            burst: int_in(
                raw.dns_rrl_burst,
                d::DNS_RRL_BURST,
                (1, 10_000_000),
                "limits.dns_rrl_burst",
                p,
            ),
            slip: int_in(
                raw.dns_rrl_slip,
                d::DNS_RRL_SLIP,
                (0, 100),
                "limits.dns_rrl_slip",
                p,
            ),
            ipv4_prefix: int_in(
                raw.dns_rrl_ipv4_prefix,
                d::DNS_RRL_IPV4_PREFIX,
                (8, 32),
                "limits.dns_rrl_ipv4_prefix",
                p,
            ),
            ipv6_prefix: int_in(
                raw.dns_rrl_ipv6_prefix,
                d::DNS_RRL_IPV6_PREFIX,
                (16, 128),
                "limits.dns_rrl_ipv6_prefix",
                p,
            ),
        },
    }
}

/// `dns.ecs_trusted`: networks such as `"192.0.2.0/24"` (a bare address is one host);
/// absent means every address.
pub(super) fn ecs_trusted(raw: Option<&[String]>, p: &mut Problems) -> Vec<IpNet> {
    let Some(list) = raw else {
        return d::DNS_ECS_TRUSTED
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let text = text.trim();
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => p.add(
                format!("dns.ecs_trusted[{i}]"),
                format!("expected a network such as \"192.0.2.0/24\" or an address, got {text:?}"),
            ),
        }
    }
    out
}
