//! The DNS request path: arbitrary bytes as a UDP or TCP query from an arbitrary client,
//! through hickory's parser into sitesteer's `DnsHandler` (opcode, EDNS, ECS, zone plan,
//! steering answers), and the answer encoded as hickory would send it. Packets hickory
//! cannot parse never reach sitesteer (hickory answers FORMERR or drops them), so only the
//! parsed ones are driven. The first byte picks the protocol and the client address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{
    Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;
use sitesteer::dns::handler::DnsHandler;
use sitesteer::dns::Shared;
use sitesteer::metrics::Metrics;

const CONFIG: &str = r#"
[listen]
dns = "127.0.0.1:5300"

[[site]]
name = "eu"
region = "eu"
address = "192.0.2.1"
[site.endpoints]
tcp = "127.0.0.1:9"

[[site]]
name = "us"
region = "us"
address = "2001:db8::2"
[site.endpoints]
tcp = "127.0.0.1:9"

[[site]]
name = "dr"
tier = 1
address = "192.0.2.3"
[site.endpoints]
tcp = "127.0.0.1:9"

[[probe]]
kind = "tcp"
endpoint = "tcp"
interval = "1h"
timeout = "10ms"

[[geo]]
cidr = "10.0.0.0/8"
region = "eu"

[dns]
zone = "mcp.example.com."
names = ["api", "@", "x.deep"]
ns = ["ns1", "ns2.example.net."]
"#;

struct World {
    runtime: tokio::runtime::Runtime,
    handler: DnsHandler,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = sitesteer_config::parse(CONFIG, "fuzz", Path::new("/nonexistent"))
            .expect("the fuzz config is valid");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let health = runtime
            .block_on(async { sitesteer_probes::start(Arc::new(config), Default::default(), Default::default()) });
        let shared = Arc::new(Shared::new(health).expect("zone"));
        let handler = DnsHandler::new(shared, Arc::new(Metrics::new()));
        World { runtime, handler }
    })
}

/// Keeps the encoded answer instead of sending it.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    sent: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // hickory's own `MessageResponse::encode` (crate-private), step for step: the UDP
        // size limit from EDNS (512 bytes without), and SERVFAIL when encoding fails.
        let id = response.metadata().id;
        let max = match (self.protocol, response.edns()) {
            (Protocol::Udp, Some(edns)) => edns.max_payload(),
            (Protocol::Udp, None) => 512,
            _ => u16::MAX,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(_) => {
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                header.emit(&mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        if let Ok(mut sent) = self.sent.lock() {
            *sent = Some(bytes);
        }
        Ok(info)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, packet)) = data.split_first() else {
        return;
    };
    let protocol = if pick & 1 == 0 {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let ip = match (pick >> 1) & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        1 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    };
    let Ok(request) = Request::from_bytes(packet.to_vec(), SocketAddr::new(ip, 5353), protocol)
    else {
        return;
    };
    let world = world();
    let capture = Capture {
        protocol,
        sent: Arc::new(Mutex::new(None)),
    };
    let sent = capture.sent.clone();
    let info = world.runtime.block_on(
        world
            .handler
            .handle_request::<_, TokioTime>(&request, capture),
    );
    let answer = sent.lock().ok().and_then(|mut s| s.take());
    let answer = answer.expect("every parsed query gets an answer");
    assert!(answer.len() >= 12, "an answer without a header");
    // The answer echoes the query id.
    assert_eq!(answer[..2], packet[..2]);
    if protocol == Protocol::Udp {
        assert!(answer.len() <= 1232 || !info.truncation);
    }
});
