//! `proxy.trusted_proxies` and `proxy.proxy_protocol`: which peers may tell sitesteer who the
//! client is (by `X-Forwarded-For` / `Forwarded` headers or a PROXY protocol header), and on
//! which listeners a PROXY header is expected. Raw strings from `RawProxy` become a
//! [`TrustedProxies`] list of networks and a [`ProxyProtocol`] set of listeners here.

use std::net::IpAddr;

use ipnet::IpNet;

/// Where a problem is reported: its key path and message (`validate` collects them).
pub(crate) type Report<'a> = &'a mut dyn FnMut(String, String);

/// The networks of `proxy.trusted_proxies`: peers whose forwarded headers are kept (and
/// appended to) and whose PROXY protocol headers are believed. Default: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A list of `nets` (already checked).
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address) is trusted.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether no peer is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as written.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// `proxy.proxy_protocol`: the listeners on which trusted peers must open every connection
/// with a PROXY protocol (v1 or v2) header. Default: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// `listen.http` expects it (`"http"`).
    pub http: bool,
    /// `listen.tcp` expects it (`"tcp"`).
    pub tcp: bool,
}

/// `proxy.trusted_proxies`: each entry a network (`"10.0.0.0/8"`) or one address.
pub(crate) fn trusted_proxies(raw: Option<&[String]>, p: Report<'_>) -> TrustedProxies {
    let mut nets = Vec::new();
    for (i, text) in raw.unwrap_or_default().iter().enumerate() {
        let t = text.trim();
        let net = t
            .parse::<IpNet>()
            .ok()
            .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            // A mapped IPv6 network would never match: peers are compared as IPv4.
            Some(IpNet::V6(v6)) if v6.addr().to_ipv4_mapped().is_some() => p(
                format!("proxy.trusted_proxies[{i}]"),
                format!("{text:?} is an IPv4-mapped IPv6 network: write it as IPv4"),
            ),
            Some(net) => nets.push(net.trunc()),
            None => p(
                format!("proxy.trusted_proxies[{i}]"),
                format!("expected a network such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address, got {text:?}"),
            ),
        }
    }
    TrustedProxies(nets)
}

/// `proxy.proxy_protocol`: `"http"` and/or `"tcp"`, each a configured listener (`listen`
/// says whether `listen.http` and `listen.tcp` are set, when `[listen]` is valid), and only
/// with someone trusted to send the header.
pub(crate) fn proxy_protocol(
    raw: Option<&[String]>,
    listen: Option<(bool, bool)>,
    trusted: &TrustedProxies,
    p: Report<'_>,
) -> ProxyProtocol {
    let mut on = ProxyProtocol::default();
    let names = raw.unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let path = format!("proxy.proxy_protocol[{i}]");
        let configured = match name.as_str() {
            "http" => {
                on.http = true;
                listen.map(|(http, _)| http)
            }
            "tcp" => {
                on.tcp = true;
                listen.map(|(_, tcp)| tcp)
            }
            other => {
                p(
                    path,
                    format!("unknown listener {other:?}: expected \"http\" or \"tcp\""),
                );
                continue;
            }
        };
        if configured == Some(false) {
            p(
                path,
                format!("listen.{name} is not set, so it cannot accept the PROXY protocol"),
            );
        }
    }
    if !names.is_empty() && trusted.is_empty() {
        p(
            "proxy.proxy_protocol".to_string(),
            "needs proxy.trusted_proxies: only the load balancers listed there may send a PROXY header".to_string(),
        );
    }
    on
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const SITE: &str = "[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n";

    fn parse(extra: &str) -> Result<crate::Config, Vec<String>> {
        crate::parse(&format!("{SITE}{extra}"), "test", Path::new(".")).map_err(|e| {
            e.errors
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        })
    }

    #[test]
    fn nobody_is_trusted_and_no_listener_expects_proxy_headers_by_default() {
        let c = parse("").expect("valid");
        assert!(c.proxy.trusted_proxies.is_empty());
        assert_eq!(c.proxy.proxy_protocol, super::ProxyProtocol::default());
    }

    #[test]
    fn networks_and_single_addresses_are_trusted() {
        let c = parse("[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\nproxy_protocol = [\"http\"]\n")
            .expect("valid");
        let t = &c.proxy.trusted_proxies;
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(
            t.contains("::ffff:10.1.2.3".parse().unwrap()),
            "mapped IPv4"
        );
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert!(t.contains("2001:db8::1".parse().unwrap()));
        assert!(!t.contains("2001:db9::1".parse().unwrap()));
        assert!(c.proxy.proxy_protocol.http && !c.proxy.proxy_protocol.tcp);
    }

    #[test]
    fn bad_entries_are_refused_with_their_key_paths() {
        let errors = parse(
            "[proxy]\ntrusted_proxies = [\"10.0.0.0/33\", \"nope\", \"::ffff:10.0.0.0/104\"]\n",
        )
        .expect_err("invalid");
        let paths: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "proxy.trusted_proxies[0]",
                "proxy.trusted_proxies[1]",
                "proxy.trusted_proxies[2]"
            ],
            "{errors:?}"
        );
        let errors = parse(
            "[proxy]\ntrusted_proxies = [\"10.0.0.1\"]\nproxy_protocol = [\"tcp\", \"udp\"]\n",
        )
        .expect_err("invalid");
        assert!(
            errors[0].starts_with("proxy.proxy_protocol[0]: listen.tcp is not set"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("proxy.proxy_protocol[1]: unknown listener"),
            "{errors:?}"
        );
        let errors = parse("[proxy]\nproxy_protocol = [\"http\"]\n").expect_err("invalid");
        assert!(
            errors[0].starts_with("proxy.proxy_protocol: needs proxy.trusted_proxies"),
            "{errors:?}"
        );
    }
}
