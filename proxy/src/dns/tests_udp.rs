//! Unit tests of the UDP path: a replayed answer is byte for byte the full path's answer for
//! the same seed (every query shape: addresses, ECS, EDNS sizes, truncation, negative answers),
//! ECS counts only from trusted resolvers (and the cache keeps their answers apart), malformed
//! packets are dropped or get FORMERR and never panic, and the UDP threads answer
//! real packets on loopback and stop.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};
use proptest::prelude::*;

use crate::metrics::Metrics;

use super::geo::GeoMap;
use super::replay::Responder;
use super::tests::{config, snapshot_of, Site};
use super::udp::UdpServer;
use super::zone::Zone;
use super::{Current, Shared};

const GEO: &str = "[[geo]]\ncidr = \"10.1.0.0/16\"\nregion = \"eu\"\n[[geo]]\ncidr = \"10.2.0.0/16\"\nregion = \"us\"\n";
const ZONE: &str =
    "[dns]\nzone = \"mcp.example.com.\"\nnames = [\"api\", \"@\", \"x.deep\"]\nns = [\"ns1\", \"ns2.example.net.\"]\n";

fn current_of(sites: &[Site<'_>]) -> Arc<Current> {
    let snap = snapshot_of(config(sites, &format!("{ZONE}{GEO}")));
    let geo = GeoMap::new(&snap.config.geo, None);
    let zone = Zone::build(&snap.config, geo).expect("zone");
    Arc::new(Current::new(zone.map(Arc::new), &snap))
}

fn mixed() -> Arc<Current> {
    current_of(&[
        ("eu", 0, 100, "eu", "192.0.2.1", "http"),
        ("us", 0, 300, "us", "192.0.2.2", "http"),
        ("v6", 0, 100, "us", "2001:db8::1", "http"),
        ("v6b", 0, 200, "eu", "2001:db8::2", "http"),
        ("dr", 1, 100, "us", "192.0.2.3", "http"),
    ])
}

fn many(n: usize) -> Arc<Current> {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let addrs: Vec<String> = (0..n).map(|i| format!("198.51.100.{}", i + 1)).collect();
    let sites: Vec<Site<'_>> = (0..n)
        .map(|i| (names[i].as_str(), 0, 100, "x", addrs[i].as_str(), "http"))
        .collect();
    current_of(&sites)
}

/// EDNS of a query: the UDP size and an optional client subnet.
type EdnsOf = Option<(u16, Option<(&'static str, u8)>)>;

fn query(id: u16, name: &str, qtype: RecordType, edns: EdnsOf) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
    if let Some((size, subnet)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        if let Some((ip, prefix)) = subnet {
            let ip: IpAddr = ip.parse().expect("ip");
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
        }
        m.set_edns(e);
    }
    m.to_vec().expect("query encodes")
}

fn src(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn responder() -> (Responder, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (Responder::new(metrics.clone()), metrics)
}

/// Answers `packet` twice with `warm` (the second time from its cache) and once with a fresh
/// responder, both with `seed`; returns (replayed, full).
fn replay_and_full(
    current: &Arc<Current>,
    warm: &mut Responder,
    packet: &[u8],
    from: SocketAddr,
    seed: u64,
) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    assert!(warm.answer_seeded(current, packet, from, &mut out, seed ^ 0x5555));
    let before = warm.replayed();
    let mut replayed = Vec::new();
    assert!(warm.answer_seeded(current, packet, from, &mut replayed, seed));
    assert_eq!(warm.replayed(), before + 1, "answered from the cache");
    let (mut cold, _) = responder();
    let mut full = Vec::new();
    assert!(cold.answer_seeded(current, packet, from, &mut full, seed));
    (replayed, full)
}

#[test]
fn a_replay_is_the_full_answer_for_the_same_seed() {
    let cur = mixed();
    let api = "api.mcp.example.com.";
    let apex = "mcp.example.com.";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (query(1, api, RecordType::A, None), "10.1.2.3:5353"),
        (query(2, api, RecordType::A, None), "10.2.9.9:5353"),
        (query(3, api, RecordType::A, None), "127.0.0.1:5353"),
        (
            query(4, api, RecordType::AAAA, Some((4096, None))),
            "10.1.2.3:53",
        ),
        (
            query(5, "API.Mcp.Example.COM.", RecordType::A, None),
            "10.1.2.3:53",
        ),
        (
            query(6, api, RecordType::A, Some((1232, Some(("10.2.0.0", 24))))),
            "10.1.2.3:53",
        ),
        (
            query(7, api, RecordType::A, Some((512, Some(("10.1.7.0", 24))))),
            "192.0.2.9:53",
        ),
        (
            query(8, apex, RecordType::ANY, Some((1232, None))),
            "10.1.2.3:53",
        ),
        (query(9, apex, RecordType::SOA, None), "10.1.2.3:53"),
        (query(10, apex, RecordType::NS, None), "10.1.2.3:53"),
        (
            query(11, "nope.mcp.example.com.", RecordType::A, None),
            "10.1.2.3:53",
        ),
        (query(12, api, RecordType::TXT, None), "10.1.2.3:53"),
        (
            query(13, "deep.mcp.example.com.", RecordType::A, None),
            "10.1.2.3:53",
        ),
        (
            query(14, "x.deep.mcp.example.com.", RecordType::AAAA, None),
            "10.1.2.3:53",
        ),
        (
            query(15, "example.org.", RecordType::A, None),
            "10.1.2.3:53",
        ),
        (query(16, apex, RecordType::AXFR, None), "10.1.2.3:53"),
        (
            query(
                17,
                api,
                RecordType::A,
                Some((4096, Some(("2001:db8::", 48)))),
            ),
            "[2001:db8::9]:53",
        ),
    ];
    let (mut warm, _) = responder();
    for (packet, from) in &cases {
        for seed in 0..40u64 {
            let (replayed, full) = replay_and_full(&cur, &mut warm, packet, src(from), seed);
            assert_eq!(
                replayed,
                full,
                "query {:?} from {from}, seed {seed}",
                &packet[..2]
            );
            assert_eq!(replayed[..2], packet[..2], "the id is the query's");
        }
    }
    // Different seeds give different orders (the shuffle is per query, not per cache entry).
    let packet = query(1, api, RecordType::A, None);
    let mut orders = std::collections::HashSet::new();
    for seed in 0..200u64 {
        let mut out = Vec::new();
        warm.answer_seeded(&cur, &packet, src("127.0.0.1:5353"), &mut out, seed);
        let m = Message::from_vec(&out).expect("answer decodes");
        orders.insert(format!("{:?}", m.answers));
    }
    assert_eq!(orders.len(), 2, "both orders of eu and us");
}

/// The A records of `answer` and the scope of its ECS option.
fn addresses_and_scope(answer: &[u8]) -> (String, Option<u8>) {
    let m = Message::from_vec(answer).expect("answer decodes");
    let scope = m
        .edns
        .as_ref()
        .and_then(|e| e.option(hickory_server::proto::rr::rdata::opt::EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(s) => Some(s.scope_prefix()),
            _ => None,
        });
    (format!("{:?}", m.answers), scope)
}

#[test]
fn ecs_counts_only_from_trusted_resolvers_and_the_cache_keeps_them_apart() {
    let sites = [
        ("eu", 0, 100, "eu", "192.0.2.1", "http"),
        ("us", 0, 100, "us", "192.0.2.2", "http"),
    ];
    let snap = snapshot_of(config(
        &sites,
        &format!("{ZONE}ecs_trusted = [\"10.9.0.0/16\"]\n{GEO}"),
    ));
    let zone = Zone::build(&snap.config, GeoMap::new(&snap.config.geo, None)).expect("zone");
    let cur = Arc::new(Current::new(zone.map(Arc::new), &snap));
    let api = "api.mcp.example.com.";
    let claims_eu = query(1, api, RecordType::A, Some((1232, Some(("10.1.2.0", 24)))));
    let plain = query(1, api, RecordType::A, Some((1232, None)));
    let (trusted, untrusted, eu_host) =
        (src("10.9.0.1:53"), src("10.8.0.1:53"), src("10.1.0.7:53"));
    let (mut warm, _) = responder();
    for seed in 0..20u64 {
        let answer = |r: &mut Responder, packet: &[u8], from| {
            let mut out = Vec::new();
            assert!(r.answer_seeded(&cur, packet, from, &mut out, seed));
            addresses_and_scope(&out)
        };
        let (mut cold, _) = responder();
        // One warm responder answers both sources, twice each (the second from its cache);
        // neither source has a region of its own, so only the trust keeps their answers apart.
        for _ in 0..2 {
            let from_trusted = answer(&mut warm, &claims_eu, trusted);
            let from_untrusted = answer(&mut warm, &claims_eu, untrusted);
            assert_eq!(
                from_trusted.0,
                answer(&mut cold, &plain, eu_host).0,
                "trusted: the subnet's region"
            );
            assert_eq!(
                from_untrusted.0,
                answer(&mut cold, &plain, untrusted).0,
                "untrusted: placed by its own address"
            );
            assert_eq!((from_trusted.1, from_untrusted.1), (Some(16), Some(0)));
        }
    }
}

#[test]
fn truncated_answers_replay_and_count() {
    let cur = many(40);
    let (mut warm, metrics) = responder();
    let api = "api.mcp.example.com.";
    for (packet, tc) in [
        (query(1, api, RecordType::A, None), true),
        (query(2, api, RecordType::A, Some((512, None))), true),
        (query(3, api, RecordType::A, Some((4096, None))), false),
    ] {
        for seed in 0..10 {
            let (replayed, full) =
                replay_and_full(&cur, &mut warm, &packet, src("127.0.0.1:9"), seed);
            assert_eq!(replayed, full);
            let m = Message::from_vec(&replayed).expect("decodes");
            assert_eq!(m.metadata.truncation, tc, "{m:?}");
            assert!(replayed.len() <= if tc { 512 } else { 1232 });
            if !tc {
                assert_eq!(m.answers.len(), 40);
            }
        }
    }
    // 2 truncated shapes × 10 seeds × 2 answers each (warm-up, replay; the full answer
    // counts into another registry).
    assert_eq!(metrics.dns_truncated.get(), 40);
    let counted = metrics
        .dns_queries
        .with_label_values(&["api", "A", "NOERROR", "none"])
        .get();
    assert_eq!(counted, 60, "replays are counted like full answers");
}

#[test]
fn a_new_snapshot_empties_the_cache() {
    let (mut warm, _) = responder();
    let packet = query(1, "api.mcp.example.com.", RecordType::A, None);
    let mut out = Vec::new();
    let first = mixed();
    warm.answer_seeded(&first, &packet, src("10.1.2.3:53"), &mut out, 1);
    assert_eq!(warm.cached(), 1);
    let second = current_of(&[("only", 0, 100, "eu", "192.0.2.77", "http")]);
    warm.answer_seeded(&second, &packet, src("10.1.2.3:53"), &mut out, 1);
    assert_eq!(warm.replayed(), 0);
    let m = Message::from_vec(&out).expect("decodes");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.77");
}

fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

#[test]
fn malformed_packets_are_dropped_or_get_formerr() {
    let cur = mixed();
    let (mut r, _) = responder();
    let mut out = Vec::new();
    let from = src("127.0.0.1:4000");
    assert!(!r.answer(&cur, b"\x00\x01junk", from, &mut out), "a runt");
    assert!(!r.answer(&cur, b"", from, &mut out));
    let mut response = query(7, "api.mcp.example.com.", RecordType::A, None);
    response[2] |= 0x80;
    assert!(!r.answer(&cur, &response, from, &mut out), "a response");
    let ok = query(7, "api.mcp.example.com.", RecordType::A, None);
    assert!(!r.answer(&cur, &ok, src("127.0.0.1:0"), &mut out), "port 0");
    assert!(!r.answer(&cur, &ok, src("0.0.0.0:53"), &mut out));
    let truncated = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03ap";
    assert!(r.answer(&cur, truncated, from, &mut out));
    assert_eq!((&out[..2], rcode(&out)), (&b"\xbe\xef"[..], 1), "FORMERR");
    assert_eq!(out.len(), 12, "just the header");
    let mut two = b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..2 {
        two.extend_from_slice(b"\x03api\x03mcp\x07example\x03com\x00\x00\x01\x00\x01");
    }
    for _ in 0..2 {
        assert!(r.answer(&cur, &two, from, &mut out));
        assert_eq!(rcode(&out), 1, "FORMERR for two questions");
    }
    let mut notify = query(9, "api.mcp.example.com.", RecordType::A, None);
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    assert!(r.answer(&cur, &notify, from, &mut out));
    assert_eq!(rcode(&out), 4, "NOTIMP");
    let mut v1 = query(
        10,
        "api.mcp.example.com.",
        RecordType::A,
        Some((1232, None)),
    );
    // The OPT record ends with TTL (ext rcode, version, flags) and an empty rdata.
    let at = v1.len() - 5;
    v1[at] = 1;
    assert!(r.answer(&cur, &v1, from, &mut out));
    let m = Message::from_vec(&out).expect("decodes");
    // BADVERS and BADSIG share code 16; hickory decodes it as BADSIG.
    assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS");
    // The answer to a class other than IN is REFUSED.
    let mut chaos = Message::new(3, MessageType::Query, OpCode::Query);
    let mut q = Query::query(
        Name::from_str("api.mcp.example.com.").expect("name"),
        RecordType::A,
    );
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    assert!(r.answer(&cur, &chaos.to_vec().expect("encodes"), from, &mut out));
    assert_eq!(rcode(&out), 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn any_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..700), seed: u64) {
        let cur = mixed();
        let (mut r, _) = responder();
        let mut out = Vec::new();
        let from = src("10.1.2.3:5353");
        let first = r.answer_seeded(&cur, &packet, from, &mut out, seed);
        if first {
            prop_assert!(out.len() >= 12);
            prop_assert_eq!(&out[..2], &packet[..2]);
            prop_assert!(out.len() <= 1232);
            prop_assert_eq!(out[2] & 0x80, 0x80, "a response");
        }
        let again = out.clone();
        let second = r.answer_seeded(&cur, &packet, from, &mut out, seed);
        prop_assert_eq!(first, second);
        if second {
            prop_assert_eq!(again, out, "a replay with the same seed is the same answer");
        }
    }

    #[test]
    fn queries_with_junk_labels_never_panic(labels in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70), 0..6), qtype: u16, tail in proptest::collection::vec(any::<u8>(), 0..40)) {
        let cur = mixed();
        let (mut r, _) = responder();
        let mut packet = b"\x01\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01".to_vec();
        for l in &labels {
            packet.push(l.len() as u8);
            packet.extend_from_slice(l);
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&[0, 1]);
        packet.extend_from_slice(&tail);
        let mut out = Vec::new();
        for _ in 0..2 {
            if r.answer(&cur, &packet, src("127.0.0.1:53"), &mut out) {
                prop_assert!(out.len() >= 12 && out.len() <= 1232);
            }
        }
    }
}

#[test]
fn the_udp_threads_answer_on_loopback_and_stop() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = config(
        &[
            ("eu", 0, 100, "eu", "192.0.2.1", "http"),
            ("us", 0, 100, "us", "192.0.2.2", "http"),
        ],
        &format!("{ZONE}udp_threads = 2\n{GEO}"),
    );
    assert_eq!(config.dns.as_ref().map(|d| d.udp_threads), Some(2));
    let health = runtime.block_on(async {
        sitesteer_probes::start(Arc::new(config), Default::default(), Default::default())
    });
    let shared = Arc::new(Shared::new(health).expect("zone"));
    let metrics = Arc::new(Metrics::new());
    let server = UdpServer::start(src("127.0.0.1:0"), 2, shared, metrics.clone()).expect("binds");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let client = UdpSocket::bind("127.0.0.1:0").expect("client");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    for id in 0..20u16 {
        let packet = query(id, "api.mcp.example.com.", RecordType::A, None);
        client.send_to(&packet, addr).expect("send");
        let (n, _) = client.recv_from(&mut buf).expect("an answer");
        let m = Message::from_vec(&buf[..n]).expect("decodes");
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.answers.len(), 2);
    }
    // Garbage on the same socket gets nothing or FORMERR, and the server keeps answering.
    client.send_to(b"\x00\x01junk", addr).expect("send");
    client
        .send_to(
            &query(99, "nope.mcp.example.com.", RecordType::A, None),
            addr,
        )
        .expect("send");
    let (n, _) = client.recv_from(&mut buf).expect("an answer");
    assert_eq!((buf[..2].to_vec(), rcode(&buf[..n])), (vec![0, 99], 3));
    let counted = metrics
        .dns_queries
        .with_label_values(&["api", "A", "NOERROR", "none"])
        .get();
    assert_eq!(counted, 20);
    let started = std::time::Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(2), "stopped");
    client
        .send_to(&query(1, "api.mcp.example.com.", RecordType::A, None), addr)
        .expect("send");
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(
        client.recv_from(&mut buf).is_err(),
        "no answer once stopped"
    );
}
