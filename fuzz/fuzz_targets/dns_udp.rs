//! The UDP DNS path as the UDP threads run it: arbitrary bytes as a datagram from one of four
//! clients into `Responder::answer_seeded` (hickory's parser, sitesteer's `respond`,
//! hickory's encoder, and the replay cache), twice: the second answer comes from the replay
//! cache when the first was cached, and must be the same bytes (same seed). The first byte
//! picks the client address and the seed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use sitesteer::dns::replay::Responder;
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
name = "eu2"
region = "eu"
address = "192.0.2.2"
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
    _runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    responder: Mutex<Responder>,
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
        let responder = Mutex::new(Responder::new(Arc::new(Metrics::new())));
        World {
            _runtime: runtime,
            shared,
            responder,
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
    let src = SocketAddr::new(ip, 5353);
    let seed = u64::from(pick >> 2);
    let world = world();
    let current = world.shared.current();
    let Ok(mut responder) = world.responder.lock() else {
        return;
    };
    let mut first = Vec::new();
    let answered = responder.answer_seeded(&current, packet, src, &mut first, seed);
    if answered {
        assert!(first.len() >= 12, "an answer without a header");
        assert_eq!(first[..2], packet[..2], "the answer echoes the query id");
        assert!(first[2] & 0x80 != 0, "the answer is a response");
        assert!(first.len() <= 1232, "a UDP answer fits 1232 bytes");
    }
    let mut second = Vec::new();
    let again = responder.answer_seeded(&current, packet, src, &mut second, seed);
    assert_eq!(answered, again);
    assert_eq!(
        first, second,
        "a replay is the full answer for the same seed"
    );
});
