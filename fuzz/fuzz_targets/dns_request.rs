//! The DNS-over-TCP request path as the `dns-tcp` thread runs it: arbitrary bytes as one
//! TCP message from an arbitrary client into `dns::tcp::answer_message` (hickory's parser,
//! sitesteer's `respond`: opcode, EDNS, ECS and its trust, zone plan, RFC 8482 ANY, steering
//! answers; hickory's encoder without the UDP size limit). The UDP path has its own target
//! (`dns_udp`). The first byte picks the client address and the seed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sitesteer::dns::tcp::answer_message;
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
ecs_trusted = ["10.0.0.0/8", "::1"]
"#;

struct World {
    _runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    metrics: Metrics,
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
        let health = runtime.block_on(async {
            sitesteer_probes::start(Arc::new(config), Default::default(), Default::default())
        });
        let shared = Arc::new(Shared::new(health).expect("zone"));
        World {
            _runtime: runtime,
            shared,
            metrics: Metrics::new(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, packet)) = data.split_first() else {
        return;
    };
    let ip = match pick & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        1 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    };
    let world = world();
    let mut out = Vec::new();
    let answered = answer_message(
        &world.shared,
        &world.metrics,
        packet,
        SocketAddr::new(ip, 5353),
        u64::from(pick >> 2),
        &mut out,
    );
    // Every message with a header gets an answer (FORMERR at worst), echoing its id.
    assert_eq!(answered, packet.len() >= 12);
    if answered {
        assert!(out.len() >= 12, "an answer without a header");
        assert_eq!(out[..2], packet[..2]);
        assert!(out.len() <= usize::from(u16::MAX));
    }
});
