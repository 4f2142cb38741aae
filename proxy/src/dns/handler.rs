//! The request handler hickory's server calls for every well-formed query: checks the
//! opcode, question count and EDNS version, places the client (ECS or source address),
//! asks the [`Zone`] what the query gets, fills in addresses from the [`View`], and
//! records metrics. Malformed packets never get here: hickory answers FORMERR when the
//! header is readable and drops the rest. Truncation (TC) over UDP happens when the response
//! is encoded: the limit is the client's EDNS UDP size, or 512 bytes without EDNS.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::metrics::Metrics;

use super::answer::{answer, Family};
use super::geo::Located;
use super::zone::{Plan, Zone, OTHER};
use super::Shared;

/// Largest UDP payload answered, whatever the client offers (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Serves the zone from the shared health state.
pub struct DnsHandler {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

impl DnsHandler {
    /// A handler over `shared`, counting into `metrics`.
    pub fn new(shared: Arc<Shared>, metrics: Arc<Metrics>) -> Self {
        Self { shared, metrics }
    }
}

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

/// The client network: the ECS option when present, else the source address.
fn client(request: &Request) -> (IpAddr, u8, Option<ClientSubnet>) {
    let ecs = request
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        });
    match ecs {
        Some(s) => (s.addr(), s.source_prefix(), Some(s)),
        None => {
            let ip = request.src().ip();
            (ip, if ip.is_ipv4() { 32 } else { 128 }, None)
        }
    }
}

fn address_record(owner: &hickory_server::proto::rr::Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// Address records of `plan` for a client at `located`.
fn addresses(
    shared: &super::Current,
    zone: &Zone,
    plan: &Plan<'_>,
    located: &Located,
) -> Vec<Record> {
    let Some(owner) = plan.owner else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let seed = fastrand::u64(..);
    for (wanted, family) in [(plan.a, Family::V4), (plan.aaaa, Family::V6)] {
        if !wanted {
            continue;
        }
        let a = answer(shared.view.family(family), located.region.as_deref(), seed);
        if let Some(mode) = a.mode {
            let ttl = zone.answer_ttl(mode);
            out.extend(a.addrs.iter().map(|ip| address_record(owner, ttl, *ip)));
        }
    }
    out
}

impl DnsHandler {
    fn count(&self, name: &str, qtype: &str, rcode: ResponseCode, region: Option<&str>) {
        self.metrics
            .dns_queries
            .with_label_values(&[name, qtype, rcode_label(rcode), region.unwrap_or("none")])
            .inc();
    }

    async fn error<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        rcode: ResponseCode,
        edns: Option<&Edns>,
    ) -> ResponseInfo {
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(OTHER, |q| qtype_label(q.query_type()));
        self.count(OTHER, qtype, rcode, None);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = rcode;
        let builder = MessageResponseBuilder::new(&request.queries, edns);
        send(
            response.send_response(builder.build_no_records(meta)).await,
            meta,
        )
    }
}

fn send(sent: Result<ResponseInfo, hickory_server::net::NetError>, meta: Metadata) -> ResponseInfo {
    match sent {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "dns response not sent");
            let mut meta = meta;
            meta.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut edns = request.edns.as_ref().map(|e| {
            let mut out = Edns::new();
            out.set_max_payload(e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            out
        });
        if request.metadata.op_code != OpCode::Query {
            return self
                .error(request, response, ResponseCode::NotImp, edns.as_ref())
                .await;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return self
                .error(request, response, ResponseCode::BADVERS, edns.as_ref())
                .await;
        }
        let [query] = request.queries.queries() else {
            return self
                .error(request, response, ResponseCode::FormErr, edns.as_ref())
                .await;
        };
        let current = self.shared.current();
        let Some(zone) = current.zone.as_deref() else {
            return self
                .error(request, response, ResponseCode::Refused, edns.as_ref())
                .await;
        };
        let plan = zone.plan(query.name(), query.query_type(), query.query_class());
        let (ip, source, ecs) = client(request);
        let located = if plan.a || plan.aaaa {
            zone.geo.locate(ip, source)
        } else {
            Located::default()
        };
        if let (Some(edns), Some(ecs)) = (edns.as_mut(), ecs) {
            let scoped = ClientSubnet::new(ecs.addr(), ecs.source_prefix(), located.scope);
            edns.options_mut().insert(EdnsOption::Subnet(scoped));
        }

        let records = addresses(&current, zone, &plan, &located);
        let mut answers: Vec<&Record> = Vec::with_capacity(records.len() + 2);
        if plan.soa {
            answers.push(&zone.soa);
        }
        if plan.ns {
            answers.extend(zone.ns.iter());
        }
        answers.extend(records.iter());
        let negative = plan.rcode == ResponseCode::NXDomain
            || (plan.rcode == ResponseCode::NoError && answers.is_empty());
        let authority: Option<&Record> = negative.then_some(&zone.negative_soa);

        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = plan.rcode;
        meta.authoritative = plan.rcode != ResponseCode::Refused;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let message = builder.build(meta, answers, authority, None, None);
        let info = send(response.send_response(message).await, meta);
        if info.truncation {
            self.metrics.dns_truncated.inc();
        }
        self.count(
            plan.label,
            qtype_label(query.query_type()),
            plan.rcode,
            located.region.as_deref(),
        );
        tracing::trace!(name = %query.name(), qtype = %query.query_type(), rcode = %plan.rcode, region = located.region.as_deref().unwrap_or("none"), scope = located.scope, "dns query");
        info
    }
}
