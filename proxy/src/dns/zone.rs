//! The zone: `[dns]` turned into DNS names and records once per config generation, and the
//! pure decision of what a query gets (which record types, or NXDOMAIN, NODATA, REFUSED) and
//! with which TTL. Addresses come from [`super::answer`]; client regions from [`super::geo`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{NS, SOA};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;
use sitesteer_config::{Config, Dns};

use crate::steer::Mode;

use super::geo::GeoMap;

/// The metrics label of names that are not configured.
pub(super) const OTHER: &str = "other";

/// A served name: its owner name and its metrics label (the name as configured).
#[derive(Debug)]
pub(super) struct Served {
    /// Owner name of the answer records.
    pub name: Name,
    /// The configured name (`api`, `@`).
    pub label: String,
}

/// What a query gets, before addresses are chosen.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'z> {
    /// NOERROR, NXDOMAIN or REFUSED. NOERROR with nothing to answer is NODATA.
    pub rcode: ResponseCode,
    /// Metrics label of the name.
    pub label: &'z str,
    /// Owner of A and AAAA records, when the name is served.
    pub owner: Option<&'z Name>,
    /// Answer A records.
    pub a: bool,
    /// Answer AAAA records.
    pub aaaa: bool,
    /// Answer the SOA.
    pub soa: bool,
    /// Answer the NS records.
    pub ns: bool,
    /// Answer an ANY query with the one synthesized HINFO record of RFC 8482.
    pub hinfo: bool,
}

impl<'z> Plan<'z> {
    fn refused(label: &'z str) -> Self {
        Self {
            rcode: ResponseCode::Refused,
            label,
            owner: None,
            a: false,
            aaaa: false,
            soa: false,
            ns: false,
            hinfo: false,
        }
    }
}

/// One generation of the zone.
#[derive(Debug)]
pub struct Zone {
    /// The apex.
    pub apex: LowerName,
    served: HashMap<LowerName, Served>,
    /// Names that exist without records of their own (empty non-terminals): NODATA, not
    /// NXDOMAIN (RFC 8020).
    between: HashSet<LowerName>,
    /// The SOA at the apex, as answered.
    pub soa: Record,
    /// The SOA in the authority section of negative answers: TTL `min(ttl, minimum)`
    /// (RFC 2308).
    pub negative_soa: Record,
    /// NS records at the apex.
    pub ns: Vec<Record>,
    /// Upper TTL bound (`dns.ttl`).
    pub ttl: u32,
    /// Lower TTL bound (`dns.min_ttl`).
    pub min_ttl: u32,
    /// Time to the next possible state change while answers are normal (shortest probe
    /// interval × fall); `None` without probes.
    pub horizon_up: Option<Duration>,
    /// The same while answers are degraded or in panic (shortest interval × rise).
    pub horizon_down: Option<Duration>,
    /// Client networks to regions.
    pub geo: GeoMap,
    /// Resolvers whose ECS option is honoured (`dns.ecs_trusted`).
    ecs_trusted: Vec<IpNet>,
}

/// Why a zone could not be built.
#[derive(Debug, thiserror::Error)]
#[error("dns name {name:?}: {reason}")]
pub struct ZoneError {
    name: String,
    reason: String,
}

fn name(text: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(text).map_err(|e| ZoneError {
        name: text.to_string(),
        reason: e.to_string(),
    })
}

/// The TTL of an answer: `min(ttl, max(min_ttl, ceil(horizon)))`, or `ttl` without a
/// horizon. The horizon is how soon the answer could change (the next possible state change).
pub(super) fn ttl_rule(ttl: u32, min_ttl: u32, horizon: Option<Duration>) -> u32 {
    let Some(h) = horizon else { return ttl };
    let secs = h.as_secs() + u64::from(h.subsec_nanos() > 0);
    let secs = u32::try_from(secs).unwrap_or(u32::MAX);
    secs.max(min_ttl).min(ttl)
}

impl Zone {
    /// Builds the zone of `config` with client regions from `geo`; `None` without `[dns]`.
    pub fn build(config: &Config, geo: GeoMap) -> Result<Option<Zone>, ZoneError> {
        let Some(dns) = &config.dns else {
            return Ok(None);
        };
        let apex_name = name(&dns.zone)?;
        let apex = LowerName::from(apex_name.clone());
        let mut served = HashMap::new();
        let mut between = HashSet::new();
        for n in &dns.names {
            let owner = if n == "@" {
                apex_name.clone()
            } else {
                name(n)?.append_domain(&apex_name).map_err(|e| ZoneError {
                    name: n.clone(),
                    reason: e.to_string(),
                })?
            };
            let mut parent = owner.base_name();
            while parent.num_labels() > apex_name.num_labels() {
                between.insert(LowerName::from(parent.clone()));
                parent = parent.base_name();
            }
            served.insert(
                LowerName::from(owner.clone()),
                Served {
                    name: owner,
                    label: n.clone(),
                },
            );
        }
        let (soa, negative_soa) = soa_records(dns, &apex_name)?;
        let ns = dns
            .ns
            .iter()
            .map(|n| {
                Ok(Record::from_rdata(
                    apex_name.clone(),
                    dns.ttl,
                    RData::NS(NS(name(n)?)),
                ))
            })
            .collect::<Result<Vec<_>, ZoneError>>()?;
        let shortest = config.probes.iter().map(|p| p.interval).min();
        Ok(Some(Zone {
            apex,
            served,
            between,
            soa,
            negative_soa,
            ns,
            ttl: dns.ttl,
            min_ttl: dns.min_ttl,
            horizon_up: shortest.map(|i| i * config.health.fall),
            horizon_down: shortest.map(|i| i * config.health.rise),
            geo,
            ecs_trusted: dns.ecs_trusted.clone(),
        }))
    }

    /// Whether the EDNS client-subnet option of a query from `resolver` is honoured
    /// (`dns.ecs_trusted`); from any other resolver the client is placed by its address.
    pub fn trusts_ecs(&self, resolver: IpAddr) -> bool {
        let ip = match resolver {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(resolver, IpAddr::V4),
            v4 => v4,
        };
        self.ecs_trusted.iter().any(|net| net.contains(&ip))
    }

    /// The TTL of addresses answered in `mode` (see [`ttl_rule`]).
    pub fn answer_ttl(&self, mode: Mode) -> u32 {
        let horizon = match mode {
            Mode::Normal | Mode::Pinned => self.horizon_up,
            Mode::Degraded | Mode::Panic => self.horizon_down,
        };
        ttl_rule(self.ttl, self.min_ttl, horizon)
    }

    /// What a query for `qname`/`qtype`/`qclass` gets.
    pub fn plan(&self, qname: &LowerName, qtype: RecordType, qclass: DNSClass) -> Plan<'_> {
        if !self.apex.zone_of(qname) || !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
            return Plan::refused(OTHER);
        }
        let served = self.served.get(qname);
        let apex = *qname == self.apex;
        let label = match served {
            Some(s) => s.label.as_str(),
            None if apex => "@",
            None => OTHER,
        };
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Plan::refused(label);
        }
        if served.is_none() && !apex && !self.between.contains(qname) {
            return Plan {
                rcode: ResponseCode::NXDomain,
                ..Plan::refused(label)
            };
        }
        // ANY gets the minimal answer of RFC 8482 (one synthesized HINFO) wherever the name
        // has records, never every record set: no amplification.
        let any = qtype == RecordType::ANY;
        Plan {
            rcode: ResponseCode::NoError,
            label,
            owner: served.map(|s| &s.name),
            a: served.is_some() && qtype == RecordType::A,
            aaaa: served.is_some() && qtype == RecordType::AAAA,
            soa: apex && qtype == RecordType::SOA,
            ns: apex && qtype == RecordType::NS,
            hinfo: any && (served.is_some() || apex),
        }
    }
}

fn soa_records(dns: &Dns, apex: &Name) -> Result<(Record, Record), ZoneError> {
    let s = &dns.soa;
    let serial = s.serial.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1)
    });
    let secs = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let rdata = SOA::new(
        name(&s.mname)?,
        name(&s.rname)?,
        serial,
        secs(s.refresh),
        secs(s.retry),
        secs(s.expire),
        s.minimum,
    );
    let soa = Record::from_rdata(apex.clone(), dns.ttl, RData::SOA(rdata.clone()));
    let negative = Record::from_rdata(apex.clone(), dns.ttl.min(s.minimum), RData::SOA(rdata));
    Ok((soa, negative))
}
