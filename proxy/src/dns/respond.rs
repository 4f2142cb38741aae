//! The answer to one DNS query, whatever carried it: [`respond`] checks the opcode, the
//! question count and the EDNS version, places the client (ECS or source address), asks the
//! [`Zone`](super::zone::Zone) what the query gets and fills in addresses from the
//! [`View`](super::answer::View). The [`Reply`] it returns is encoded by hickory's
//! `MessageResponse` on both paths: hickory's server for DNS over TCP
//! ([`super::handler`]) and sitesteer's own UDP path ([`super::udp`], through [`encode_udp`]),
//! so the two never differ. Truncation (TC) over UDP happens when the reply is encoded: the
//! limit is the client's EDNS UDP size (at most [`MAX_UDP_PAYLOAD`]), or 512 bytes without EDNS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA, HINFO};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, ResponseInfo};
use hickory_server::zone_handler::{
    MessageRequest, MessageResponse, MessageResponseBuilder, Queries,
};
use prometheus::IntCounter;

use crate::metrics::Metrics;

use super::answer::{answer, Answer, Family};
use super::geo::Located;
use super::zone::OTHER;
use super::Current;

/// Largest UDP payload answered, whatever the client offers (the DNS flag day 2020 value).
pub(super) const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP payload limit without EDNS (RFC 1035 section 4.2.1).
pub(super) const PLAIN_UDP_PAYLOAD: u16 = 512;

fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        _ => OTHER,
    }
}

fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::BADVERS => "BADVERS",
        _ => OTHER,
    }
}

/// The query's ECS option, if any.
fn client_subnet(message: &MessageRequest) -> Option<ClientSubnet> {
    message
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        })
}

/// The client network: the ECS option when present and `trusted` (its resolver is in
/// `dns.ecs_trusted`), else the source address.
fn client(src: SocketAddr, ecs: Option<ClientSubnet>, trusted: bool) -> (IpAddr, u8) {
    match ecs {
        Some(s) if trusted => (s.addr(), s.source_prefix()),
        _ => {
            let ip = src.ip();
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    }
}

/// The RFC 8482 answer to ANY: one HINFO record, CPU `RFC8482`, OS empty.
fn rfc8482(owner: Name) -> Record {
    Record::from_rdata(
        owner,
        ANY_TTL,
        RData::HINFO(HINFO::new("RFC8482".to_string(), String::new())),
    )
}

/// TTL of the RFC 8482 HINFO answer, seconds: it never changes, so resolvers may keep it
/// long and stop asking (RFC 8482 section 6).
pub(super) const ANY_TTL: u32 = 3600;

fn address_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// What one query gets: the response header and EDNS, and the records, some of them borrowed
/// from the zone it was answered from (kept alive by the reply).
pub(super) struct Reply {
    current: Arc<Current>,
    meta: Metadata,
    edns: Option<Edns>,
    /// The answer's own records: addresses (A before AAAA, each family in answer order),
    /// or the RFC 8482 HINFO of an ANY query.
    records: Vec<Record>,
    soa: bool,
    ns: bool,
    negative: bool,
    /// The steering answer per family (index: [`family_index`]), when the query asked for it.
    answers: [Option<Answer>; 2],
    /// The client's region the addresses were chosen for.
    region: Option<Arc<str>>,
    /// `sitesteer_dns_queries_total` for this query's labels.
    counter: IntCounter,
}

/// The position of `family` in [`Reply`]'s answers (A first).
pub(super) fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Reply {
    /// A reply without records (NOTIMP, BADVERS, FORMERR, REFUSED without a zone).
    fn bare(
        current: &Arc<Current>,
        metrics: &Metrics,
        message: &MessageRequest,
        rcode: ResponseCode,
        edns: Option<Edns>,
    ) -> Self {
        let qtype = message
            .queries
            .queries()
            .first()
            .map_or(OTHER, |q| qtype_label(q.query_type()));
        let mut meta = Metadata::response_from_request(&message.metadata);
        meta.response_code = rcode;
        Self {
            current: current.clone(),
            meta,
            edns,
            records: Vec::new(),
            soa: false,
            ns: false,
            negative: false,
            answers: [None, None],
            region: None,
            counter: counter(metrics, OTHER, qtype, rcode, None),
        }
    }

    /// The response header as planned (before encoding sets TC and the counts).
    pub(super) fn metadata(&self) -> Metadata {
        self.meta
    }

    /// The steering answer of `family`, when the query asked for addresses of it.
    pub(super) fn answer(&self, family: Family) -> Option<&Answer> {
        self.answers[family_index(family)].as_ref()
    }

    /// The client's region the addresses were chosen for.
    pub(super) fn region(&self) -> Option<&Arc<str>> {
        self.region.as_ref()
    }

    /// The query counter this reply counts into.
    pub(super) fn counter(&self) -> &IntCounter {
        &self.counter
    }

    /// The reply as hickory encodes it, for the query section `queries` of the request.
    pub(super) fn message<'a>(
        &'a self,
        queries: &'a Queries,
    ) -> MessageResponse<
        'a,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    > {
        let zone = self.current.zone.as_deref();
        let soa = zone.filter(|_| self.soa).map(|z| &z.soa);
        let ns = zone
            .filter(|_| self.ns)
            .map(|z| z.ns.iter())
            .into_iter()
            .flatten();
        let answers = soa.into_iter().chain(ns).chain(self.records.iter());
        let authority = zone.filter(|_| self.negative).map(|z| &z.negative_soa);
        MessageResponseBuilder::new(queries, self.edns.as_ref()).build(
            self.meta,
            answers,
            authority,
            None::<&Record>,
            None::<&Record>,
        )
    }

    /// Counts the query once its response is encoded (`info`: what was sent).
    pub(super) fn sent(&self, metrics: &Metrics, info: &ResponseInfo) {
        self.counter.inc();
        if info.truncation {
            metrics.dns_truncated.inc();
        }
    }
}

fn counter(
    metrics: &Metrics,
    name: &str,
    qtype: &str,
    rcode: ResponseCode,
    region: Option<&str>,
) -> IntCounter {
    metrics.dns_queries.with_label_values(&[
        name,
        qtype,
        rcode_label(rcode),
        region.unwrap_or("none"),
    ])
}

/// The reply to `message` from the client at `src`, answered from `current`; `seed` drives
/// the weighted shuffle of the addresses (the same seed gives the same order).
pub(super) fn respond(
    current: &Arc<Current>,
    metrics: &Metrics,
    message: &MessageRequest,
    src: SocketAddr,
    seed: u64,
) -> Reply {
    let mut edns = message.edns.as_ref().map(|e| {
        let mut out = Edns::new();
        out.set_max_payload(e.max_payload().clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD));
        out
    });
    if message.metadata.op_code != OpCode::Query {
        return Reply::bare(current, metrics, message, ResponseCode::NotImp, edns);
    }
    if message.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Reply::bare(current, metrics, message, ResponseCode::BADVERS, edns);
    }
    let [query] = message.queries.queries() else {
        return Reply::bare(current, metrics, message, ResponseCode::FormErr, edns);
    };
    let Some(zone) = current.zone.as_deref() else {
        return Reply::bare(current, metrics, message, ResponseCode::Refused, edns);
    };
    let plan = zone.plan(query.name(), query.query_type(), query.query_class());
    let ecs = client_subnet(message);
    let trusted = ecs.is_some() && zone.trusts_ecs(src.ip());
    let (ip, source) = client(src, ecs, trusted);
    let located = if plan.a || plan.aaaa {
        zone.geo.locate(ip, source)
    } else {
        Located::default()
    };
    if let (Some(edns), Some(ecs)) = (edns.as_mut(), ecs) {
        // Scope 0 for an untrusted resolver: the answer is the same whatever subnet it sends.
        let scope = if trusted { located.scope } else { 0 };
        let scoped = ClientSubnet::new(ecs.addr(), ecs.source_prefix(), scope);
        edns.options_mut().insert(EdnsOption::Subnet(scoped));
    }

    let region = located.region.as_deref();
    let mut answers = [None, None];
    let mut records = Vec::new();
    if let Some(owner) = plan.owner {
        for (wanted, family) in [(plan.a, Family::V4), (plan.aaaa, Family::V6)] {
            if !wanted {
                continue;
            }
            let a = answer(current.view.family(family), region, seed);
            if let Some(mode) = a.mode {
                let ttl = zone.answer_ttl(mode);
                records.extend(a.addrs.iter().map(|ip| address_record(owner, ttl, *ip)));
            }
            answers[family_index(family)] = Some(a);
        }
    }
    if plan.hinfo {
        let owner = plan
            .owner
            .cloned()
            .unwrap_or_else(|| Name::from(query.name().clone()));
        records.push(rfc8482(owner));
    }
    let answered = usize::from(plan.soa) + if plan.ns { zone.ns.len() } else { 0 } + records.len();
    let negative = plan.rcode == ResponseCode::NXDomain
        || (plan.rcode == ResponseCode::NoError && answered == 0);

    let mut meta = Metadata::response_from_request(&message.metadata);
    meta.response_code = plan.rcode;
    meta.authoritative = plan.rcode != ResponseCode::Refused;
    tracing::trace!(name = %query.name(), qtype = %query.query_type(), rcode = %plan.rcode, region = region.unwrap_or("none"), scope = located.scope, "dns query");
    Reply {
        current: current.clone(),
        meta,
        edns,
        records,
        soa: plan.soa,
        ns: plan.ns,
        negative,
        answers,
        counter: counter(
            metrics,
            plan.label,
            qtype_label(query.query_type()),
            plan.rcode,
            region,
        ),
        region: located.region,
    }
}

/// The transport a query came over: it sets how large the answer may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    /// At most the client's EDNS UDP size, TC past it.
    Udp,
    /// Up to the 65535 bytes of the length prefix (RFC 7766).
    Tcp,
}

/// What [`respond_packet`] did with one message.
// Returned by value once per query and never stored: boxing the reply would only add an
// allocation per query.
#[allow(clippy::large_enum_variant)]
pub(super) enum Packet {
    /// Answered: the reply and what was encoded into the output.
    Answered(Reply, ResponseInfo),
    /// Unparsable with a readable header: the output holds a bare FORMERR.
    FormErr,
    /// Nothing to send (no readable header).
    Nothing,
}

/// The full path of one DNS message `packet` from `src` over `transport`: parsed by hickory,
/// answered by [`respond`] (with `seed` for the shuffle), encoded into `out` and counted. A
/// message hickory cannot parse gets FORMERR when its header is readable, as hickory's own
/// server answers. Never panics on input.
pub(super) fn respond_packet(
    current: &Arc<Current>,
    metrics: &Metrics,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    seed: u64,
    out: &mut Vec<u8>,
) -> Packet {
    let protocol = match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let request = match Request::from_bytes(packet.to_vec(), src, protocol) {
        Ok(request) => request,
        Err(error) => {
            let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
                return Packet::Nothing;
            };
            tracing::debug!(%src, %error, "malformed dns query");
            let mut meta = Metadata::response_from_request(&header.metadata);
            meta.response_code = ResponseCode::FormErr;
            header_only(meta, out);
            return Packet::FormErr;
        }
    };
    let reply = respond(current, metrics, &request, src, seed);
    let message = reply.message(&request.queries);
    let info = match transport {
        Transport::Udp => encode_udp(message, out),
        Transport::Tcp => encode(message, u16::MAX, out),
    };
    reply.sent(metrics, &info);
    Packet::Answered(reply, info)
}

/// Encodes `message` for UDP into `out` (cleared first), as hickory's server would: at most
/// the reply's EDNS UDP size ([`PLAIN_UDP_PAYLOAD`] without EDNS), records that do not fit
/// left out with TC set, and a bare SERVFAIL when the message cannot be encoded.
pub(super) fn encode_udp<'a, A, N, S, D>(
    message: MessageResponse<'_, 'a, A, N, S, D>,
    out: &mut Vec<u8>,
) -> ResponseInfo
where
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let max = message.edns().map_or(PLAIN_UDP_PAYLOAD, Edns::max_payload);
    encode(message, max, out)
}

/// Encodes `message` into `out` (cleared first) in at most `max` bytes: records that do not
/// fit are left out with TC set, and a message that cannot be encoded is a bare SERVFAIL.
pub(super) fn encode<'a, A, N, S, D>(
    message: MessageResponse<'_, 'a, A, N, S, D>,
    max: u16,
    out: &mut Vec<u8>,
) -> ResponseInfo
where
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let id = message.metadata().id;
    out.clear();
    let error = {
        let mut encoder = BinEncoder::new(out);
        encoder.set_max_size(max);
        match message.destructive_emit(&mut encoder) {
            Ok(info) => return info,
            Err(e) => e,
        }
    };
    tracing::debug!(%error, "dns response not encoded; answering SERVFAIL");
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    header_only(metadata, out)
}

/// Encodes a message of just `metadata` (no sections) into `out`, cleared first.
pub(super) fn header_only(metadata: Metadata, out: &mut Vec<u8>) -> ResponseInfo {
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    out.clear();
    let mut encoder = BinEncoder::new(out);
    // A 12-byte header always fits in an empty buffer.
    if let Err(e) = header.emit(&mut encoder) {
        tracing::debug!(error = %e, "dns header not encoded");
    }
    ResponseInfo::from(header)
}
