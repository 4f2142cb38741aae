//! The client's region for the HTTP and TCP data planes: `[[geo]]` as a longest-prefix-match
//! table, built once per config generation (with the first [`super::Published`] of that
//! generation) and shared by every Snapshot of it, so a lookup costs one hash probe per
//! distinct prefix length in the table and allocates nothing.
//!
//! The rule is DNS's (`crate::dns`): the most specific `[[geo]]` network holding the client
//! wins (two entries for the same network: the first in the file); an IPv4-mapped IPv6
//! client (`::ffff:a.b.c.d`, as a dual-stack listener reports an IPv4 peer) is looked up as
//! its IPv4 address; no entry holding the client gives no region. `[dns.geoip]` places DNS
//! clients only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sitesteer_config::Geo;

/// The networks of one prefix length, by their network address.
#[derive(Debug)]
struct Length<K> {
    prefix: u8,
    nets: HashMap<K, Arc<str>>,
}

/// `[[geo]]` as a lookup table: per address family, the prefix lengths present, longest
/// first, each with its networks.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    v4: Vec<Length<u32>>,
    v6: Vec<Length<u128>>,
}

/// `bits` with only its first `prefix` bits kept (of `width`).
fn masked<K>(bits: K, prefix: u8, width: u8) -> K
where
    K: Copy
        + std::ops::Shl<u32, Output = K>
        + std::ops::BitAnd<Output = K>
        + std::ops::Not<Output = K>
        + From<u8>,
{
    if prefix == 0 {
        return K::from(0);
    }
    let ones = !K::from(0);
    bits & (ones << u32::from(width - prefix))
}

/// Adds `net` of `prefix` bits to `lengths` under `region`, unless an earlier entry holds
/// the same network.
fn add<K: std::hash::Hash + Eq>(lengths: &mut Vec<Length<K>>, prefix: u8, net: K, region: &str) {
    let at = match lengths.iter().position(|l| l.prefix == prefix) {
        Some(at) => at,
        None => {
            lengths.push(Length {
                prefix,
                nets: HashMap::new(),
            });
            lengths.len() - 1
        }
    };
    lengths[at]
        .nets
        .entry(net)
        .or_insert_with(|| Arc::from(region));
}

impl Regions {
    /// The table of `entries` (`[[geo]]`, in file order).
    pub(crate) fn new(entries: &[Geo]) -> Self {
        let mut table = Self::default();
        for entry in entries {
            match entry.cidr.trunc() {
                IpNet::V4(net) => add(
                    &mut table.v4,
                    net.prefix_len(),
                    u32::from(net.network()),
                    &entry.region,
                ),
                IpNet::V6(net) => add(
                    &mut table.v6,
                    net.prefix_len(),
                    u128::from(net.network()),
                    &entry.region,
                ),
            }
        }
        table.v4.sort_by_key(|l| std::cmp::Reverse(l.prefix));
        table.v6.sort_by_key(|l| std::cmp::Reverse(l.prefix));
        table
    }

    /// Whether no client has a region.
    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The region of a client at `ip`: the most specific network holding it, if any.
    pub(crate) fn locate(&self, ip: IpAddr) -> Option<&Arc<str>> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4
                    .iter()
                    .find_map(|l| l.nets.get(&masked(bits, l.prefix, 32)))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6
                    .iter()
                    .find_map(|l| l.nets.get(&masked(bits, l.prefix, 128)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(entries: &[(&str, &str)]) -> Regions {
        let entries: Vec<Geo> = entries
            .iter()
            .map(|(cidr, region)| Geo {
                cidr: cidr.parse().expect("cidr"),
                region: region.to_string(),
            })
            .collect();
        Regions::new(&entries)
    }

    fn at<'a>(table: &'a Regions, ip: &str) -> Option<&'a str> {
        table.locate(ip.parse().expect("ip")).map(|r| &**r)
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order() {
        let table = regions(&[
            ("10.0.0.0/8", "wide"),
            ("10.1.2.0/24", "narrow"),
            ("10.1.0.0/16", "middle"),
            ("0.0.0.0/0", "anywhere"),
        ]);
        assert_eq!(at(&table, "10.1.2.3"), Some("narrow"));
        assert_eq!(at(&table, "10.1.3.3"), Some("middle"));
        assert_eq!(at(&table, "10.2.0.1"), Some("wide"));
        assert_eq!(at(&table, "192.0.2.1"), Some("anywhere"));
        // A host route and a network written with host bits set.
        let table = regions(&[("127.0.0.9/24", "eu"), ("127.0.0.1/32", "us")]);
        assert_eq!(at(&table, "127.0.0.1"), Some("us"));
        assert_eq!(at(&table, "127.0.0.2"), Some("eu"));
        assert_eq!(at(&table, "127.0.1.1"), None);
    }

    #[test]
    fn the_same_network_twice_keeps_the_first() {
        let table = regions(&[("10.0.0.0/8", "first"), ("10.0.0.0/8", "second")]);
        assert_eq!(at(&table, "10.9.9.9"), Some("first"));
    }

    #[test]
    fn an_ipv4_mapped_client_is_looked_up_as_ipv4() {
        let table = regions(&[("127.0.0.0/24", "eu"), ("2001:db8::/32", "us")]);
        assert_eq!(at(&table, "::ffff:127.0.0.1"), Some("eu"));
        assert_eq!(at(&table, "::ffff:127.0.1.1"), None);
        assert_eq!(at(&table, "2001:db8:1::5"), Some("us"));
        assert_eq!(at(&table, "2001:db9::5"), None);
        // The families never mix: an IPv4 client is not in an IPv6 ::/0, nor the reverse.
        let table = regions(&[("::/0", "six"), ("0.0.0.0/0", "four")]);
        assert_eq!(at(&table, "192.0.2.1"), Some("four"));
        assert_eq!(at(&table, "::ffff:192.0.2.1"), Some("four"));
        assert_eq!(at(&table, "2001:db8::1"), Some("six"));
    }

    #[test]
    fn no_entry_holding_the_client_gives_no_region() {
        let table = regions(&[]);
        assert!(table.is_empty());
        assert_eq!(at(&table, "10.0.0.1"), None);
        assert_eq!(at(&table, "::1"), None);
        let table = regions(&[("198.51.100.0/24", "us")]);
        assert!(!table.is_empty());
        assert_eq!(at(&table, "198.51.101.1"), None);
        assert_eq!(at(&table, "::1"), None);
    }
}
