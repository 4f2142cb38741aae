//! Who the client is, told to the site: `X-Forwarded-For`, `Forwarded` (RFC 7239) and
//! `X-Forwarded-Proto` on every request sitesteer sends on. From a peer in
//! `proxy.trusted_proxies` the incoming values are kept and the peer's address appended
//! (`X-Forwarded-Proto` is kept when the trusted proxy set it); from anyone else every
//! incoming value is dropped and replaced by the peer's own address, so no client can make
//! a site believe it comes from elsewhere. The peer is the connection's client address:
//! the one a PROXY protocol header carried, if any (`crate::proxy_protocol`).

use std::net::{IpAddr, SocketAddr};

use pingora::http::RequestHeader;
use pingora::Result;
use sitesteer_config::TrustedProxies;

/// `X-Forwarded-For`.
pub const XFF: &str = "x-forwarded-for";
/// `Forwarded` (RFC 7239).
pub const FORWARDED: &str = "forwarded";
/// `X-Forwarded-Proto`.
pub const XFP: &str = "x-forwarded-proto";

/// A `Forwarded` node (RFC 7239 §6): an IPv4 address as it is, an IPv6 address quoted and
/// in brackets, `unknown` when there is none.
fn node(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => format!("\"[{v6}]\""),
        None => "unknown".to_string(),
    }
}

/// Every value of header `name`, in order, joined into one list (empty values skipped).
fn joined(req: &RequestHeader, name: &str) -> String {
    let mut out = String::new();
    for value in req.headers.get_all(name) {
        let Ok(text) = value.to_str() else { continue };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(text);
    }
    out
}

fn appended(prior: String, hop: &str) -> String {
    if prior.is_empty() {
        hop.to_string()
    } else {
        format!("{prior}, {hop}")
    }
}

/// Sets the forwarded headers of `req`, from a connection whose client is `client` (over
/// TLS when `tls`), trusting the incoming values only from `trusted` peers.
pub fn apply(
    req: &mut RequestHeader,
    client: Option<SocketAddr>,
    tls: bool,
    trusted: &TrustedProxies,
) -> Result<()> {
    let ip = client.map(|c| c.ip().to_canonical());
    let believed = ip.is_some_and(|ip| trusted.contains(ip));
    let proto = if tls { "https" } else { "http" };
    let (prior_xff, prior_fwd, prior_proto) = if believed {
        (joined(req, XFF), joined(req, FORWARDED), joined(req, XFP))
    } else {
        (String::new(), String::new(), String::new())
    };
    req.remove_header(XFF);
    req.remove_header(FORWARDED);
    req.remove_header(XFP);
    if let Some(ip) = ip {
        req.insert_header(XFF, appended(prior_xff, &ip.to_string()))?;
    }
    let element = format!("for={};proto={proto}", node(ip));
    req.insert_header(FORWARDED, appended(prior_fwd, &element))?;
    let proto = if prior_proto.is_empty() {
        proto.to_string()
    } else {
        prior_proto
    };
    req.insert_header(XFP, proto)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()])
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn all(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_untrusted_client_s_values_are_replaced_by_its_address() {
        let mut r = req(&[
            (XFF, "1.2.3.4"),
            (XFF, "5.6.7.8"),
            (FORWARDED, "for=1.2.3.4"),
            (XFP, "https"),
        ]);
        let client = "203.0.113.9:5000".parse().ok();
        apply(&mut r, client, false, &trusted()).unwrap();
        assert_eq!(all(&r, XFF), ["203.0.113.9"]);
        assert_eq!(all(&r, FORWARDED), ["for=203.0.113.9;proto=http"]);
        assert_eq!(all(&r, XFP), ["http"]);
    }

    #[test]
    fn a_trusted_proxy_s_chain_is_kept_and_extended() {
        let mut r = req(&[
            (XFF, "198.51.100.1"),
            (XFF, "198.51.100.2, 198.51.100.3"),
            (FORWARDED, "for=198.51.100.1;proto=https"),
            (XFP, "https"),
        ]);
        let client = "[::ffff:10.1.1.1]:5000".parse().ok();
        apply(&mut r, client, false, &trusted()).unwrap();
        assert_eq!(
            all(&r, XFF),
            ["198.51.100.1, 198.51.100.2, 198.51.100.3, 10.1.1.1"]
        );
        assert_eq!(
            all(&r, FORWARDED),
            ["for=198.51.100.1;proto=https, for=10.1.1.1;proto=http"]
        );
        assert_eq!(
            all(&r, XFP),
            ["https"],
            "the proxy in front knows the scheme"
        );
        // Without a prior X-Forwarded-Proto, the hop's own scheme.
        let mut r = req(&[]);
        apply(&mut r, client, true, &trusted()).unwrap();
        assert_eq!(all(&r, XFF), ["10.1.1.1"]);
        assert_eq!(all(&r, XFP), ["https"]);
    }

    #[test]
    fn ipv6_nodes_are_quoted_and_bracketed() {
        let mut r = req(&[]);
        let client = "[2001:db8::17]:443".parse().ok();
        apply(&mut r, client, true, &trusted()).unwrap();
        assert_eq!(all(&r, XFF), ["2001:db8::17"]);
        assert_eq!(all(&r, FORWARDED), ["for=\"[2001:db8::17]\";proto=https"]);
        let mut r = req(&[(XFF, "1.1.1.1")]);
        apply(&mut r, None, false, &trusted()).unwrap();
        assert!(all(&r, XFF).is_empty());
        assert_eq!(all(&r, FORWARDED), ["for=unknown;proto=http"]);
    }
}
