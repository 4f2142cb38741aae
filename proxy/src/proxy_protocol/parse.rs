//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) as bytes: where it ends and
//! the client address it carries. Pure and bounded: at most [`MAX_V1`] bytes of a v1 line
//! and [`MAX_V2`] bytes of a v2 header are ever looked at, and no input panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes that open a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What opens a v1 header.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, `\r\n` included (the spec's 107 bytes).
pub const MAX_V1: usize = 107;
/// The longest v2 header accepted: the 16-byte fixed part and at most this much more
/// (addresses are at most 216 bytes; the rest is TLVs, which are skipped).
pub const MAX_V2_PAYLOAD: usize = 1024;
/// The longest v2 header accepted, fixed part included.
pub const MAX_V2: usize = 16 + MAX_V2_PAYLOAD;
/// The most bytes the parser needs to see before it decides.
pub const MAX_HEADER: usize = if MAX_V1 > MAX_V2 { MAX_V1 } else { MAX_V2 };

/// Whether bytes open with a PROXY header, as far as they go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// Too few bytes to tell (a prefix of a signature, or nothing).
    Unknown,
    /// A v1 or v2 signature.
    Proxy,
    /// Anything else.
    NotProxy,
}

/// The protocol version of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

impl Version {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// A complete header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: what follows is the client's stream.
    pub len: usize,
    /// Its version.
    pub version: Version,
    /// The client's address; `None` for a v1 `UNKNOWN`, a v2 `LOCAL` (the balancer's own
    /// health check) or an address family other than TCP over IPv4 or IPv6: the connection
    /// keeps its socket's peer address.
    pub source: Option<SocketAddr>,
}

/// What [`parse`] made of the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header may follow: read more (never past [`MAX_HEADER`] bytes in all).
    Incomplete,
    /// A header.
    Header(Header),
    /// Not a PROXY header at all.
    NotProxy,
    /// A PROXY signature, but a broken header: why.
    Invalid(&'static str),
}

/// Whether `buf` opens with a PROXY signature.
pub fn signature(buf: &[u8]) -> Signature {
    let matches = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf.get(..n) == sig.get(..n)
    };
    if buf.len() >= V2_SIGNATURE.len() && buf.starts_with(&V2_SIGNATURE)
        || buf.len() >= V1_PREFIX.len() && buf.starts_with(V1_PREFIX)
    {
        Signature::Proxy
    } else if matches(&V2_SIGNATURE) || matches(V1_PREFIX) {
        Signature::Unknown
    } else {
        Signature::NotProxy
    }
}

/// Parses the header at the start of `buf` (everything read so far).
pub fn parse(buf: &[u8]) -> Parsed {
    match signature(buf) {
        Signature::Unknown => Parsed::Incomplete,
        Signature::NotProxy => Parsed::NotProxy,
        Signature::Proxy if buf.starts_with(V1_PREFIX) => v1(buf),
        Signature::Proxy => v2(buf),
    }
}

fn v1(buf: &[u8]) -> Parsed {
    let window = buf.get(..buf.len().min(MAX_V1)).unwrap_or_default();
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1 {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let Some(line) = window.get(..end).and_then(|l| l.strip_suffix(b"\r")) else {
        return Parsed::Invalid("v1 header not ended by CRLF");
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Parsed::Invalid("v1 header not ASCII");
    };
    let rest = line.get(V1_PREFIX.len()..).unwrap_or_default();
    let header = |source| {
        Parsed::Header(Header {
            len: end + 1,
            version: Version::V1,
            source,
        })
    };
    if rest == "UNKNOWN" || rest.starts_with("UNKNOWN ") {
        // The rest of an UNKNOWN line is to be ignored.
        return header(None);
    }
    let fields: Vec<&str> = rest.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields.as_slice() else {
        return Parsed::Invalid("v1 header without exactly five fields");
    };
    let (src, dst) = match *proto {
        "TCP4" => match (src.parse::<Ipv4Addr>(), dst.parse::<Ipv4Addr>()) {
            (Ok(s), Ok(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
            _ => return Parsed::Invalid("v1 TCP4 header with a bad IPv4 address"),
        },
        "TCP6" => match (src.parse::<Ipv6Addr>(), dst.parse::<Ipv6Addr>()) {
            (Ok(s), Ok(d)) => (IpAddr::V6(s), IpAddr::V6(d)),
            _ => return Parsed::Invalid("v1 TCP6 header with a bad IPv6 address"),
        },
        _ => return Parsed::Invalid("v1 header with a protocol other than TCP4, TCP6, UNKNOWN"),
    };
    let _ = dst;
    match (port(sport), port(dport)) {
        (Some(sport), Some(_)) => header(Some(SocketAddr::new(src, sport))),
        _ => Parsed::Invalid("v1 header with a bad port"),
    }
}

/// A v1 port: 1 to 5 decimal digits, no sign, no leading zero, at most 65535.
fn port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits && !leading_zero)
        .then(|| text.parse().ok())
        .flatten()
}

fn v2(buf: &[u8]) -> Parsed {
    let Some(fixed) = buf.get(..16) else {
        return Parsed::Incomplete;
    };
    let (ver_cmd, family) = (fixed[12], fixed[13]);
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("v2 header with a version other than 2");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("v2 header with a command other than LOCAL or PROXY"),
    };
    if len > MAX_V2_PAYLOAD {
        return Parsed::Invalid("v2 header longer than sitesteer accepts");
    }
    let Some(payload) = buf.get(16..16 + len) else {
        return Parsed::Incomplete;
    };
    let header = |source| {
        Parsed::Header(Header {
            len: 16 + len,
            version: Version::V2,
            source,
        })
    };
    if local {
        return header(None);
    }
    // Address family (high nibble) and transport (low nibble): only TCP (STREAM) over
    // IPv4 or IPv6 names a client; UNSPEC, UNIX and UDP keep the socket's peer.
    match family {
        0x11 => {
            let Some(a) = payload.get(..12) else {
                return Parsed::Invalid("v2 TCP over IPv4 header shorter than its addresses");
            };
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            header(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        0x21 => {
            let Some(a) = payload.get(..36) else {
                return Parsed::Invalid("v2 TCP over IPv6 header shorter than its addresses");
            };
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            header(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => header(None),
        _ => Parsed::Invalid("v2 header with an unknown address family or transport"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2_header(cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn v1_lines_name_the_client() {
        let line = b"PROXY TCP4 203.0.113.9 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header(Header {
                len: 43,
                version: Version::V1,
                source: addr("203.0.113.9:56324")
            })
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        match parse(six) {
            Parsed::Header(h) => {
                assert_eq!(h.source, addr("[2001:db8::1]:1"));
                assert_eq!(h.len, six.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Parsed::Header(Header { source: None, .. })
        ));
    }

    #[test]
    fn broken_v1_lines_are_invalid() {
        for bad in [
            &b"PROXY TCP4 203.0.113.9 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 203.0.113.9 10.0.0.1 56324 443 extra\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 203.0.113.9 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 +1 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 01 443\r\n",
            b"PROXY TCP4  203.0.113.9 10.0.0.1 1 443\r\n",
            b"PROXY TCP4 203.0.113.9 10.0.0.1 1 443\n",
            b"PROXY UDP4 203.0.113.9 10.0.0.1 1 443\r\n",
            b"PROXY TCP4 203.0.113.\xff 10.0.0.1 1 443\r\n",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
        assert!(matches!(parse(long.as_bytes()), Parsed::Invalid(_)));
        // 107 bytes with the CRLF is the most.
        let at_limit = format!("PROXY UNKNOWN {}\r\n", "x".repeat(MAX_V1 - 16));
        assert_eq!(at_limit.len(), MAX_V1);
        assert!(matches!(parse(at_limit.as_bytes()), Parsed::Header(_)));
        let over = format!("PROXY UNKNOWN {}\r\n", "x".repeat(MAX_V1 - 15));
        assert!(matches!(parse(over.as_bytes()), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers_name_the_client() {
        let mut four = vec![203, 0, 113, 9, 10, 0, 0, 1];
        four.extend_from_slice(&56324u16.to_be_bytes());
        four.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses is skipped.
        four.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]);
        let h = v2_header(1, 0x11, &four);
        let mut with_data = h.clone();
        with_data.extend_from_slice(b"{\"jsonrpc\"");
        assert_eq!(
            parse(&with_data),
            Parsed::Header(Header {
                len: h.len(),
                version: Version::V2,
                source: addr("203.0.113.9:56324")
            })
        );
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
        assert!(matches!(
            parse(&v2_header(1, 0x21, &six)),
            Parsed::Header(Header { source: Some(a), .. }) if a == addr("[2001:db8::9]:4660").unwrap()
        ));
        // LOCAL (a health check) and UNSPEC keep the socket's peer.
        assert!(matches!(
            parse(&v2_header(0, 0x11, &four)),
            Parsed::Header(Header { source: None, .. })
        ));
        assert!(matches!(
            parse(&v2_header(1, 0x00, &[])),
            Parsed::Header(Header { source: None, .. })
        ));
    }

    #[test]
    fn broken_v2_headers_are_invalid() {
        let four = [0u8; 12];
        let mut wrong_version = v2_header(1, 0x11, &four);
        wrong_version[12] = 0x11;
        let mut wrong_command = v2_header(1, 0x11, &four);
        wrong_command[12] = 0x2f;
        let mut too_long = v2_header(1, 0x11, &four);
        too_long[14..16].copy_from_slice(&((MAX_V2_PAYLOAD + 1) as u16).to_be_bytes());
        for bad in [
            wrong_version,
            wrong_command,
            too_long,
            v2_header(1, 0x11, &four[..11]),
            v2_header(1, 0x21, &[0u8; 35]),
            v2_header(1, 0x41, &four),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_wait_and_anything_else_is_not_proxy() {
        assert_eq!(parse(b""), Parsed::Incomplete);
        assert_eq!(parse(b"PROX"), Parsed::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Parsed::Incomplete);
        assert_eq!(parse(&V2_SIGNATURE[..5]), Parsed::Incomplete);
        assert_eq!(parse(&V2_SIGNATURE), Parsed::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"PROXZ"), Parsed::NotProxy);
        assert_eq!(parse(b"\r\n\r\nX"), Parsed::NotProxy);
        assert_eq!(
            parse(b"\x16\x03\x01"),
            Parsed::NotProxy,
            "a TLS ClientHello"
        );
        assert_eq!(signature(b"{\"jsonrpc\""), Signature::NotProxy);
        assert_eq!(signature(b"PROXY "), Signature::Proxy);
        assert_eq!(signature(b"P"), Signature::Unknown);
    }

    /// Every outcome is decided within MAX_HEADER bytes, and the header found lies inside
    /// the bytes given; parsing in two pieces agrees with parsing at once.
    fn check(bytes: &[u8], cut: usize) -> Result<(), TestCaseError> {
        let whole = parse(bytes);
        if bytes.len() >= MAX_HEADER {
            prop_assert!(
                whole != Parsed::Incomplete,
                "undecided after {} bytes",
                bytes.len()
            );
        }
        if let Parsed::Header(h) = whole {
            prop_assert!(h.len <= bytes.len() && h.len <= MAX_HEADER);
        }
        let cut = cut.min(bytes.len());
        let first = parse(&bytes[..cut]);
        match first {
            Parsed::Incomplete => {}
            // A decision on a prefix stands.
            decided => prop_assert_eq!(decided, whole),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_bytes_are_decided_boundedly(bytes in proptest::collection::vec(any::<u8>(), 0..1200), cut in 0usize..1200) {
            check(&bytes, cut)?;
        }

        #[test]
        fn near_headers_are_decided_boundedly(
            v2 in any::<bool>(),
            body in proptest::collection::vec(prop_oneof![
                Just(b' '), Just(b'\r'), Just(b'\n'), Just(b'1'), Just(b'.'), Just(b':'),
                Just(0x21u8), Just(0x11u8), Just(0u8), Just(0x0cu8), any::<u8>(),
            ], 0..1100),
            words in proptest::collection::vec(prop_oneof![
                Just("TCP4 "), Just("TCP6 "), Just("UNKNOWN"), Just("1.2.3.4 "), Just("::1 "), Just("80 "), Just("\r\n"),
            ], 0..8),
            cut in 0usize..1200,
        ) {
            let mut bytes = if v2 { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            if !v2 {
                bytes.extend(words.concat().into_bytes());
            }
            bytes.extend(body);
            check(&bytes, cut)?;
        }
    }
}
