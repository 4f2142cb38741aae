//! Who the client is, told to the site: `X-Forwarded-For`, `Forwarded` (RFC 7239) and
//! `X-Forwarded-Proto` on every request sitesteer sends on. From a peer in
//! `proxy.trusted_proxies` the incoming values are kept and the peer's address appended
//! (`X-Forwarded-Proto` is kept when the trusted proxy set it); from anyone else every
//! incoming value is dropped and replaced by the peer's own address, so no client can make
//! a site believe it comes from elsewhere. The peer is the connection's client address:
//! the one a PROXY protocol header carried, if any (`crate::proxy_protocol`).
//!
//! [`client_ip`] is who the client is for steering by region (`[[geo]]`): the peer, or, from
//! a trusted peer, the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy
//! (nginx's `real_ip_recursive on`).

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

/// Most `X-Forwarded-For` hops [`client_ip`] walks, right to left, before it settles for
/// the last trusted one.
const MAX_HOPS: usize = 32;

/// One `X-Forwarded-For` hop: an address, with a port or in brackets as some proxies write
/// it; `None` for anything else (`unknown`, an obfuscated name, garbage).
fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// The client's address for steering, from a connection whose client is `peer`: `peer`
/// itself unless it is in `trusted`; from a trusted peer, the `X-Forwarded-For` hops of
/// `req` walked right to left (the last header first), skipping trusted proxies, and the
/// first hop that is not trusted is the client. The walk stops at a hop that is not an
/// address, or after [`MAX_HOPS`], and the last trusted address reached (the peer or a hop)
/// is the client then, as it is when every hop is trusted: nothing left of an address
/// no trusted proxy vouched for is believed.
pub fn client_ip(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let mut client = peer?.to_canonical();
    if !trusted.contains(client) {
        return Some(client);
    }
    let hops = req
        .headers
        .get_all(XFF)
        .iter()
        .rev()
        // A value that is not text is no address: the walk stops there.
        .flat_map(|v| v.to_str().unwrap_or("?").rsplit(','))
        .filter(|h| !h.trim().is_empty())
        .take(MAX_HOPS);
    for text in hops {
        let Some(ip) = hop(text) else { break };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    Some(client)
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

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_trusted() {
        let forged = req(&[(XFF, "10.9.9.9, 198.51.100.7")]);
        assert_eq!(
            client_ip(&forged, ip("203.0.113.9"), &trusted()),
            ip("203.0.113.9"),
            "an untrusted peer's X-Forwarded-For is ignored"
        );
        assert_eq!(
            client_ip(&forged, ip("::ffff:203.0.113.9"), &trusted()),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(&forged, None, &trusted()), None);
        let nobody = TrustedProxies::default();
        assert_eq!(client_ip(&forged, ip("10.1.1.1"), &nobody), ip("10.1.1.1"));
    }

    #[test]
    fn from_a_trusted_peer_the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted();
        let peer = ip("10.1.1.1");
        // The rightmost hop that is not a trusted proxy; what is left of it is the client's
        // own claim and not believed.
        let r = req(&[(XFF, "6.6.6.6, 198.51.100.7, 10.2.2.2")]);
        assert_eq!(client_ip(&r, peer, &t), ip("198.51.100.7"));
        // Several headers are one list, the last header last.
        let r = req(&[
            (XFF, "6.6.6.6"),
            (XFF, "198.51.100.7"),
            (XFF, "10.3.3.3,10.2.2.2"),
        ]);
        assert_eq!(client_ip(&r, peer, &t), ip("198.51.100.7"));
        // Ports, brackets, mapped addresses and empty hops.
        let r = req(&[(XFF, "198.51.100.8:4000, , [::ffff:10.2.2.2]:80")]);
        assert_eq!(client_ip(&r, peer, &t), ip("198.51.100.8"));
        let r = req(&[(XFF, "[2001:db8::7]")]);
        assert_eq!(client_ip(&r, peer, &t), ip("2001:db8::7"));
        let r = req(&[(XFF, "2001:db8::8")]);
        assert_eq!(client_ip(&r, peer, &t), ip("2001:db8::8"));
        // Every hop trusted: the leftmost; no header: the peer.
        let r = req(&[(XFF, "10.4.4.4, 10.2.2.2")]);
        assert_eq!(client_ip(&r, peer, &t), ip("10.4.4.4"));
        assert_eq!(client_ip(&req(&[]), peer, &t), peer);
    }

    #[test]
    fn a_hop_that_is_no_address_stops_the_walk_at_the_last_trusted_one() {
        let t = trusted();
        let peer = ip("10.1.1.1");
        let r = req(&[(XFF, "198.51.100.7, unknown, 10.2.2.2")]);
        assert_eq!(client_ip(&r, peer, &t), ip("10.2.2.2"));
        let r = req(&[(XFF, "198.51.100.7, 1.2.3.4.5")]);
        assert_eq!(client_ip(&r, peer, &t), peer);
        let mut r = req(&[(XFF, "198.51.100.7")]);
        r.append_header(XFF, http::HeaderValue::from_bytes(b"\xff10.2.2.2").unwrap())
            .unwrap();
        assert_eq!(client_ip(&r, peer, &t), peer, "a value that is not text");
        // A chain of trusted hops longer than the walk: the last one walked.
        let chain: Vec<String> = (0..100).map(|i| format!("10.0.0.{i}")).collect();
        let r = req(&[(XFF, &format!("198.51.100.7, {}", chain.join(", ")))]);
        assert_eq!(
            client_ip(&r, peer, &t),
            ip(&format!("10.0.0.{}", 100 - MAX_HOPS))
        );
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
