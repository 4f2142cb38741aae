//! Unit tests of the pure parts: answers from a Snapshot, the zone's plans, the TTL rule,
//! geo matching with ECS scopes (and a real MaxMind DB), and answer-set change events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RecordType};
use sitesteer_config::{Config, Geo};
use sitesteer_probes::{HealthTable, Overrides, SiteState, Snapshot};
use tokio::time::Instant;

use super::answer::{answer, answer_set, Family, View};
use super::geo::{GeoDb, GeoMap, Located};
use super::mmdb_writer::{build, Entry};
use super::watch::{Tracker, MIN_GAP};
use super::zone::{ttl_rule, Zone};
use super::Current;
use crate::steer::Mode;

/// A site: (name, tier, weight, region, address, endpoint kind).
pub(super) type Site<'a> = (&'a str, u8, u32, &'a str, &'a str, &'a str);

pub(super) fn config(sites: &[Site<'_>], extra: &str) -> Config {
    let mut text = String::from("[listen]\ndns = \"127.0.0.1:5300\"\n");
    for (i, (name, tier, weight, region, address, kind)) in sites.iter().enumerate() {
        text.push_str(&format!(
            "[[site]]\nname = \"{name}\"\ntier = {tier}\nweight = {weight}\nregion = \"{region}\"\n"
        ));
        if !address.is_empty() {
            text.push_str(&format!("address = \"{address}\"\n"));
        }
        text.push_str(&format!(
            "[site.endpoints]\n{kind} = \"127.0.0.1:{}\"\n",
            10000 + i
        ));
    }
    text.push_str(extra);
    sitesteer_config::parse(&text, "test", Path::new(".")).expect("test config")
}

pub(super) fn snapshot_of(config: Config) -> Snapshot {
    let now = tokio::time::Instant::now();
    let mut table = HealthTable::new(Arc::new(config), Overrides::default(), now);
    let mut snap = table.snapshot(now);
    for s in &mut snap.sites {
        s.score = 1.0;
    }
    snap
}

const ZONE: &str = "[dns]\nzone = \"mcp.example.com.\"\nnames = [\"api\", \"@\", \"x.deep\"]\n";

fn three() -> Snapshot {
    snapshot_of(config(
        &[
            ("eu", 0, 100, "eu", "192.0.2.1", "http"),
            ("us", 0, 300, "us", "192.0.2.2", "http"),
            ("dr", 1, 100, "us", "192.0.2.3", "http"),
        ],
        ZONE,
    ))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn answers_are_the_lowest_healthy_tier_in_a_weighted_shuffle() {
    let view = View::new(&three());
    let mut first = [0u32; 3];
    for seed in 0..2000u64 {
        let a = answer(view.family(Family::V4), None, seed);
        assert_eq!(a.mode, Some(Mode::Normal));
        assert_eq!(a.addrs.len(), 2, "tier 1 stays out: {a:?}");
        first[a.sites[0]] += 1;
    }
    assert_eq!(first[2], 0);
    assert!(
        (400..600).contains(&first[0]),
        "weights 100:300 lead 1:3, {first:?}"
    );
    assert!(view
        .family(Family::V6)
        .sites
        .iter()
        .all(|s| s.endpoints.iter().count() == 0));
    assert_eq!(
        answer(view.family(Family::V6), None, 1).addrs,
        Vec::<IpAddr>::new()
    );
}

#[test]
fn down_sites_leave_and_panic_fails_open() {
    let mut snap = three();
    snap.sites[0].state = SiteState::Down;
    let a = answer(View::new(&snap).family(Family::V4), None, 7);
    assert_eq!(a.addrs, vec![ip("192.0.2.2")]);
    snap.sites[1].state = SiteState::Down;
    let a = answer(View::new(&snap).family(Family::V4), None, 7);
    assert_eq!(a.addrs, vec![ip("192.0.2.3")], "the next tier");
    snap.sites[2].state = SiteState::Down;
    let (mode, set) = answer_set(View::new(&snap).family(Family::V4));
    assert_eq!((mode, set), (Some(Mode::Panic), vec![0, 1, 2]), "fail open");
    snap.sites[2].state = SiteState::Maintenance;
    let (_, set) = answer_set(View::new(&snap).family(Family::V4));
    assert_eq!(set, vec![0, 1], "never a site in maintenance");
    snap.sites[0].state = SiteState::Degraded;
    let (mode, set) = answer_set(View::new(&snap).family(Family::V4));
    assert_eq!((mode, set), (Some(Mode::Degraded), vec![0]));
}

#[test]
fn the_client_region_comes_first_and_falls_back() {
    let snap = three();
    let view = View::new(&snap);
    for seed in 0..200 {
        let eu = answer(view.family(Family::V4), Some("eu"), seed);
        assert_eq!(eu.addrs, vec![ip("192.0.2.1"), ip("192.0.2.2")]);
        let us = answer(view.family(Family::V4), Some("us"), seed);
        assert_eq!(us.addrs, vec![ip("192.0.2.2"), ip("192.0.2.1")]);
    }
    let mut snap = snap;
    snap.sites[0].state = SiteState::Down;
    let a = answer(View::new(&snap).family(Family::V4), Some("eu"), 3);
    assert_eq!(a.addrs, vec![ip("192.0.2.2")]);
}

#[test]
fn families_addresses_and_endpoint_kinds() {
    let snap = snapshot_of(config(
        &[
            ("tcp-only", 0, 100, "a", "192.0.2.9", "tcp"),
            ("v6", 0, 100, "a", "2001:db8::1", "http"),
            ("none", 0, 100, "a", "", "http"),
        ],
        ZONE,
    ));
    let view = View::new(&snap);
    assert_eq!(
        answer(view.family(Family::V4), None, 1).addrs,
        vec![ip("192.0.2.9")]
    );
    assert_eq!(
        answer(view.family(Family::V6), None, 1).addrs,
        vec![ip("2001:db8::1")]
    );
}

#[test]
fn a_manual_failover_answers_only_the_preferred_site() {
    let mut snap = three();
    snap.sites[2].preferred = true;
    let (mode, set) = answer_set(View::new(&snap).family(Family::V4));
    assert_eq!((mode, set), (Some(Mode::Normal), vec![2]));
}

fn zone_of(snap: &Snapshot) -> Zone {
    Zone::build(&snap.config, GeoMap::default())
        .expect("zone")
        .expect("dns configured")
}

fn lower(s: &str) -> LowerName {
    LowerName::from(Name::from_ascii(s).expect("name"))
}

#[test]
fn the_zone_plans_answers_and_errors() {
    let zone = zone_of(&three());
    let plan = |n: &str, t: RecordType| {
        let p = zone.plan(&lower(n), t, DNSClass::IN);
        (p.rcode, p.label.to_string(), p.a, p.aaaa, p.soa, p.ns)
    };
    use RecordType::*;
    let ok = ResponseCode::NoError;
    assert_eq!(
        plan("api.mcp.example.com.", A),
        (ok, "api".into(), true, false, false, false)
    );
    assert_eq!(
        plan("API.Mcp.Example.com.", AAAA),
        (ok, "api".into(), false, true, false, false)
    );
    assert_eq!(
        plan("mcp.example.com.", SOA),
        (ok, "@".into(), false, false, true, false)
    );
    assert_eq!(
        plan("mcp.example.com.", NS),
        (ok, "@".into(), false, false, false, true)
    );
    // RFC 8482: ANY gets the one HINFO, not every record set, at the apex and a served name;
    // a name without records stays NODATA.
    let any = |n: &str| {
        let p = zone.plan(&lower(n), ANY, DNSClass::IN);
        (p.rcode, p.a, p.aaaa, p.soa, p.ns, p.hinfo)
    };
    assert_eq!(
        any("mcp.example.com."),
        (ok, false, false, false, false, true)
    );
    assert_eq!(
        any("api.mcp.example.com."),
        (ok, false, false, false, false, true)
    );
    assert_eq!(
        any("deep.mcp.example.com."),
        (ok, false, false, false, false, false)
    );
    assert_eq!(any("nope.mcp.example.com.").0, ResponseCode::NXDomain);
    assert!(
        !zone
            .plan(&lower("api.mcp.example.com."), A, DNSClass::IN)
            .hinfo
    );
    let nodata = (ok, "api".into(), false, false, false, false);
    assert_eq!(plan("api.mcp.example.com.", TXT), nodata);
    let between = plan("deep.mcp.example.com.", A);
    assert_eq!(
        (between.0, between.2),
        (ok, false),
        "an empty non-terminal is NODATA"
    );
    assert!(plan("x.deep.mcp.example.com.", A).2);
    assert_eq!(plan("nope.mcp.example.com.", A).0, ResponseCode::NXDomain);
    assert_eq!(plan("example.com.", A).0, ResponseCode::Refused);
    assert_eq!(plan("api.mcp.example.org.", A).0, ResponseCode::Refused);
    assert_eq!(plan("mcp.example.com.", AXFR).0, ResponseCode::Refused);
    assert_eq!(plan("mcp.example.com.", IXFR).0, ResponseCode::Refused);
    let chaos = zone.plan(&lower("api.mcp.example.com."), A, DNSClass::CH);
    assert_eq!(chaos.rcode, ResponseCode::Refused);
    assert_eq!(zone.ns.len(), 1);
    assert_eq!(zone.negative_soa.ttl, 5);
}

#[test]
fn the_ttl_follows_the_next_possible_state_change() {
    assert_eq!(ttl_rule(5, 1, None), 5);
    assert_eq!(ttl_rule(5, 1, Some(Duration::from_millis(200))), 1);
    assert_eq!(ttl_rule(5, 1, Some(Duration::from_millis(2100))), 3);
    assert_eq!(ttl_rule(5, 1, Some(Duration::from_secs(60))), 5);
    assert_eq!(ttl_rule(5, 5, Some(Duration::from_millis(200))), 5);
    assert_eq!(ttl_rule(0, 0, Some(Duration::from_millis(200))), 0);
    let snap = snapshot_of(config(
        &[("a", 0, 100, "a", "192.0.2.1", "http")],
        &format!("{ZONE}ttl = 30\n[health]\nfall = 3\nrise = 5\n[[probe]]\nkind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"1s\"\n"),
    ));
    let zone = zone_of(&snap);
    assert_eq!(zone.answer_ttl(Mode::Normal), 6);
    assert_eq!(zone.answer_ttl(Mode::Panic), 10);
}

fn geo(entries: &[(&str, &str)]) -> GeoMap {
    let list: Vec<Geo> = entries
        .iter()
        .map(|(c, r)| Geo {
            cidr: c.parse().expect("cidr"),
            region: r.to_string(),
        })
        .collect();
    GeoMap::new(&list, None)
}

fn at(region: &str, scope: u8) -> Located {
    Located {
        region: Some(Arc::from(region)),
        scope,
    }
}

#[test]
fn geo_is_longest_prefix_with_a_safe_scope() {
    let map = geo(&[
        ("10.0.0.0/8", "eu"),
        ("10.1.0.0/16", "us"),
        ("2001:db8::/32", "ap"),
    ]);
    assert_eq!(map.locate(ip("10.1.2.3"), 32), at("us", 16));
    // 10.2.x is in the /8 but the scope must exclude 10.1/16: common prefix 14, so /15.
    assert_eq!(map.locate(ip("10.2.0.1"), 24), at("eu", 15));
    assert_eq!(
        map.locate(ip("10.200.0.1"), 24),
        at("eu", 9),
        "10.128/9 holds no 10.1/16"
    );
    assert_eq!(map.locate(ip("2001:db8::5"), 56), at("ap", 32));
    assert_eq!(
        map.locate(ip("::ffff:10.1.0.9"), 128),
        at("us", 16),
        "v4-mapped"
    );
    let nowhere = map.locate(ip("192.0.2.1"), 24);
    assert_eq!(
        (nowhere.region, nowhere.scope),
        (None, 1),
        "192/1 holds no entry"
    );
    assert_eq!(
        map.locate(ip("10.1.2.3"), 0),
        Located::default(),
        "ECS /0 tells nothing"
    );
    assert_eq!(
        GeoMap::default().locate(ip("10.1.2.3"), 32),
        Located::default()
    );
}

#[test]
fn a_maxmind_database_maps_countries_and_continents() {
    let bytes = build(&[
        Entry {
            net: "81.2.69.0".parse().expect("ip"),
            prefix: 24,
            key: "country",
            field: "iso_code",
            code: "GB",
        },
        Entry {
            net: "175.16.0.0".parse().expect("ip"),
            prefix: 16,
            key: "continent",
            field: "code",
            code: "AS",
        },
    ]);
    let path = std::env::temp_dir().join(format!("sitesteer-test-{}.mmdb", std::process::id()));
    std::fs::write(&path, bytes).expect("write mmdb");
    let countries = BTreeMap::from([("gb".to_string(), "eu-west".to_string())]);
    let continents = BTreeMap::from([("AS".to_string(), "ap".to_string())]);
    let db = GeoDb::open(&path, &countries, &continents);
    let _ = std::fs::remove_file(&path);
    let map = GeoMap::new(
        &[Geo {
            cidr: "81.2.69.128/25".parse().expect("cidr"),
            region: "override".into(),
        }],
        Some(db.expect("reads")),
    );
    assert_eq!(map.locate(ip("81.2.69.5"), 32), at("eu-west", 25));
    assert_eq!(
        map.locate(ip("81.2.69.200"), 32),
        at("override", 25),
        "[[geo]] wins"
    );
    assert_eq!(map.locate(ip("175.16.9.9"), 24), at("ap", 16));
    assert_eq!(map.locate(ip("8.8.8.8"), 24).region, None);
    assert!(GeoDb::open(Path::new("/nonexistent.mmdb"), &countries, &continents).is_err());
}

#[tokio::test(start_paused = true)]
async fn answer_set_changes_are_events_at_most_once_a_second() {
    let snap = three();
    let zone = Some(Arc::new(zone_of(&snap)));
    let cur = |s: &Snapshot| Current::new(zone.clone(), s);
    let mut tracker = Tracker::default();
    let t0 = Instant::now();
    assert!(
        tracker.observe(&cur(&snap), t0).is_empty(),
        "the baseline is no event"
    );
    let mut down = snap.clone();
    down.sites[0].state = SiteState::Down;
    down.version += 1;
    let mut up_again = snap.clone();
    up_again.version += 2;
    let events = tracker.observe(&cur(&down), t0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].from.as_deref(), Some("eu,us"));
    assert_eq!(events[0].to.as_deref(), Some("us"));
    assert!(
        tracker.observe(&cur(&down), t0).is_empty(),
        "no change, no event"
    );
    assert!(
        tracker
            .observe(&cur(&up_again), t0 + MIN_GAP / 2)
            .is_empty(),
        "rate-limited"
    );
    let late = tracker.observe(&cur(&up_again), t0 + MIN_GAP);
    assert_eq!(late.len(), 1, "reported when the gap ends");
    assert_eq!(late[0].to.as_deref(), Some("eu,us"));
}

#[test]
fn the_dns_config_keys_reach_the_zone() {
    let extra = "[dns]\nzone = \"mcp.example.com.\"\nnames = [\"api\"]\nttl = 30\nmin_ttl = 2\nns = [\"ns1\", \"ns.example.net.\"]\n[dns.soa]\nmname = \"ns1\"\nrname = \"ops.example.net.\"\nserial = 7\nrefresh = 100\nretry = 50\nexpire = 1000\nminimum = 10\n";
    let snap = snapshot_of(config(&[("a", 0, 100, "a", "192.0.2.1", "http")], extra));
    let zone = zone_of(&snap);
    let ns: Vec<String> = zone.ns.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ns, vec!["ns1.mcp.example.com.", "ns.example.net."]);
    assert_eq!(
        zone.soa.data.to_string(),
        "ns1.mcp.example.com. ops.example.net. 7 100 50 1000 10"
    );
    assert_eq!((zone.soa.ttl, zone.negative_soa.ttl), (30, 10));
    assert_eq!((zone.ttl, zone.min_ttl), (30, 2));

    let bad = "[listen]\ndns = \"127.0.0.1:5300\"\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n[dns]\nzone = \"z.\"\nnames = [\"a\", \"A\"]\nttl = 5\nmin_ttl = 9\n[dns.geoip]\ncountries = { US = \"us\" }\n";
    let errors = sitesteer_config::parse(bad, "test", Path::new("."))
        .expect_err("invalid")
        .to_string();
    for key in ["dns.names[1]", "dns.min_ttl", "dns.geoip.db"] {
        assert!(errors.contains(key), "{key} in {errors}");
    }
}
