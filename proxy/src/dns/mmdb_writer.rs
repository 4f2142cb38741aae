//! Test support: writes a tiny MaxMind DB (IPv4, 24-bit records) so that the GeoIP path is
//! tested against the real `maxminddb` reader without shipping a database.

use std::net::Ipv4Addr;

#[derive(Clone, Copy)]
enum Rec {
    Node(usize),
    Empty,
    Data(usize),
}

fn string(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 29, "short strings only");
    out.push((2 << 5) | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn map_header(out: &mut Vec<u8>, pairs: u8) {
    out.push((7 << 5) | pairs);
}

fn uint(out: &mut Vec<u8>, kind: u8, value: u64, bytes: usize) {
    let be = value.to_be_bytes();
    match kind {
        5 | 6 => out.push((kind << 5) | bytes as u8),
        extended => {
            out.push(bytes as u8);
            out.push(extended - 7);
        }
    }
    out.extend_from_slice(&be[8 - bytes..]);
}

/// One network and the record it maps to: `(key, field, code)`, e.g.
/// `("country", "iso_code", "US")`.
pub(super) struct Entry {
    /// Network address.
    pub net: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Top-level key.
    pub key: &'static str,
    /// Field inside it.
    pub field: &'static str,
    /// The code.
    pub code: &'static str,
}

/// The bytes of a database holding `entries` (non-overlapping networks).
pub(super) fn build(entries: &[Entry]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for e in entries {
        let offset = data.len();
        map_header(&mut data, 1);
        string(&mut data, e.key);
        map_header(&mut data, 1);
        string(&mut data, e.field);
        string(&mut data, e.code);
        let bits = u32::from(e.net);
        let mut node = 0;
        for i in 0..e.prefix {
            let bit = ((bits >> (31 - i)) & 1) as usize;
            if i + 1 == e.prefix {
                nodes[node][bit] = Rec::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Rec::Node(n) => n,
                _ => {
                    nodes.push([Rec::Empty, Rec::Empty]);
                    let n = nodes.len() - 1;
                    nodes[node][bit] = Rec::Node(n);
                    n
                }
            };
        }
    }
    let count = nodes.len();
    let value = |r: Rec| match r {
        Rec::Node(n) => n,
        Rec::Empty => count,
        Rec::Data(off) => count + 16 + off,
    };
    let mut out = Vec::new();
    for [l, r] in nodes {
        out.extend_from_slice(&(value(l) as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&(value(r) as u32).to_be_bytes()[1..]);
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map_header(&mut out, 9);
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0, 2);
    string(&mut out, "build_epoch");
    uint(&mut out, 9, 1_700_000_000, 8);
    string(&mut out, "database_type");
    string(&mut out, "sitesteer-test");
    string(&mut out, "description");
    map_header(&mut out, 0);
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4, 2);
    string(&mut out, "languages");
    out.push(0); // array of 0 elements: extended type 11
    out.push(11 - 7);
    string(&mut out, "node_count");
    uint(&mut out, 6, count as u64, 4);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24, 2);
    out
}
