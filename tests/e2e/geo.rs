//! The client's region on the HTTP and TCP listeners: `[[geo]]` places the client, and its
//! requests and connections prefer its region's site within the tier, as DNS answers do.
//! Two demo sites share tier 0 with equal weights, "eu" and "us"; `[[geo]]` puts
//! 127.0.0.0/24 in eu and 127.0.1.0/24 in us, and test clients bind to addresses of either
//! network (loopback is all of 127/8). Unplaced, each request would go to either site half
//! of the time, so a run of requests all on one site is the region at work.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::forwarded::{connect_from, exchange};
use crate::harness::{free_port, get, request, DemoSite, Sitesteer};

/// A client in eu (127.0.0.0/24), also the trusted proxy of these tests.
const EU: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// Another client in eu, not trusted.
const EU_UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// A client in us (127.0.1.0/24), not trusted.
const US: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
/// Requests per client and case: 2^-ROUNDS is the chance that unplaced clients all land on
/// one site.
const ROUNDS: usize = 24;

/// Both demo sites (with TCP endpoints) and sitesteer in front of them, with `[[geo]]`,
/// a TCP listener and 127.0.0.1 as the only trusted proxy.
struct Rig {
    proxy: Sitesteer,
    tcp: SocketAddr,
    _sites: [DemoSite; 2],
}

impl Rig {
    async fn start() -> Self {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let eu = DemoSite::start_with_tcp("eu", ports[0], ports[1]).await;
        let us = DemoSite::start_with_tcp("us", ports[2], ports[3]).await;
        let tcp = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let site = |name: &str, http: u16, tcp: u16| {
            format!(
                "[[site]]\nname = \"{name}\"\nregion = \"{name}\"\ntier = 0\nweight = 100\n\
                 [site.endpoints]\nhttp = \"127.0.0.1:{http}\"\ntcp = \"127.0.0.1:{tcp}\"\n\n"
            )
        };
        let config = format!(
            "tcp = \"{tcp}\"\n\n\
             [proxy]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
             [[geo]]\ncidr = \"127.0.0.0/24\"\nregion = \"eu\"\n\n\
             [[geo]]\ncidr = \"127.0.1.0/24\"\nregion = \"us\"\n\n\
             {}{}\
             [[probe]]\nkind = \"tcp\"\nendpoint = \"http\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n",
            site("eu", ports[0], ports[1]),
            site("us", ports[2], ports[3]),
        );
        let proxy = Sitesteer::start_logging(
            &config,
            "info,sitesteer::tcp=debug,pingora_proxy=error,pingora_core=error",
        )
        .await;
        proxy
            .wait_all_up(&["eu", "us"], Duration::from_secs(15))
            .await;
        Self {
            proxy,
            tcp,
            _sites: [eu, us],
        }
    }

    /// The sites that served `ROUNDS` HTTP requests from `source` carrying `xff` as
    /// `X-Forwarded-For`, one connection each.
    async fn http_sites(&self, source: Ipv4Addr, xff: Option<&str>) -> Vec<String> {
        let header = xff.map_or(String::new(), |v| format!("X-Forwarded-For: {v}\r\n"));
        let request =
            format!("GET /health HTTP/1.1\r\nHost: a\r\n{header}Connection: close\r\n\r\n");
        let mut sites = Vec::new();
        for _ in 0..ROUNDS {
            let (answer, _) = exchange(source, self.proxy.http, request.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "{answer}; log:\n{}",
                self.proxy.log()
            );
            let site = answer
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-sitesteer-site")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no x-sitesteer-site in {answer}"));
            sites.push(site);
        }
        sites
    }

    /// The sites that answered an echo over `ROUNDS` raw TCP connections from `source`.
    async fn tcp_sites(&self, source: Ipv4Addr) -> Vec<String> {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "geo"}}});
        let mut line = call.to_string();
        line.push('\n');
        let mut sites = Vec::new();
        for _ in 0..ROUNDS {
            let mut conn = BufReader::new(connect_from(source, self.tcp).await);
            let answered = tokio::time::timeout(Duration::from_secs(5), async {
                conn.get_mut().write_all(line.as_bytes()).await.ok()?;
                let mut answer = String::new();
                conn.read_line(&mut answer).await.ok()?;
                serde_json::from_str::<Value>(&answer).ok()
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no echo over tcp; log:\n{}", self.proxy.log()));
            let site = answered
                .pointer("/result/structuredContent/site")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("echo over tcp: {answered}"))
                .to_string();
            sites.push(site);
        }
        sites
    }

    /// `sitesteer_client_regions_total{listener, region}`.
    async fn located(&self, listener: &str, region: &str) -> u64 {
        let m = get(self.proxy.admin, "/metrics").await.expect("metrics");
        let series = format!(
            "sitesteer_client_regions_total{{listener=\"{listener}\",region=\"{region}\"}}"
        );
        String::from_utf8_lossy(&m.body)
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Checks that every one of `sites` is `want`.
#[track_caller]
fn all_on(sites: &[String], want: &str, case: &str) {
    let off = sites.iter().filter(|s| *s != want).count();
    assert_eq!(
        off,
        0,
        "{case}: {off} of {} not on {want}: {sites:?}",
        sites.len()
    );
}

#[tokio::test]
async fn an_http_client_in_a_geo_network_prefers_its_region_s_site() {
    let rig = Rig::start().await;
    all_on(&rig.http_sites(EU, None).await, "eu", "from 127.0.0.1");
    all_on(&rig.http_sites(US, None).await, "us", "from 127.0.1.1");
    assert_eq!(rig.located("http", "eu").await, ROUNDS as u64);
    assert_eq!(rig.located("http", "us").await, ROUNDS as u64);
}

#[tokio::test]
async fn a_tcp_client_in_a_geo_network_prefers_its_region_s_site() {
    let rig = Rig::start().await;
    all_on(&rig.tcp_sites(EU).await, "eu", "tcp from 127.0.0.1");
    all_on(&rig.tcp_sites(US).await, "us", "tcp from 127.0.1.1");
    assert_eq!(rig.located("tcp", "eu").await, ROUNDS as u64);
    assert_eq!(rig.located("tcp", "us").await, ROUNDS as u64);
}

#[tokio::test]
async fn the_forwarded_client_s_region_counts_only_from_a_trusted_proxy() {
    let rig = Rig::start().await;
    // The trusted proxy (in eu) forwards a client of us: us, also past a trusted hop and
    // with the client's own forged claim left of it.
    all_on(
        &rig.http_sites(EU, Some("127.0.1.7")).await,
        "us",
        "trusted proxy forwarding 127.0.1.7",
    );
    all_on(
        &rig.http_sites(EU, Some("127.0.0.9, 127.0.1.7, 127.0.0.1"))
            .await,
        "us",
        "rightmost untrusted hop 127.0.1.7",
    );
    // An untrusted client in eu claims to be forwarded for us: ignored, it stays in eu.
    all_on(
        &rig.http_sites(EU_UNTRUSTED, Some("127.0.1.7")).await,
        "eu",
        "untrusted 127.0.0.2 forging 127.0.1.7",
    );
    // And the reverse: an untrusted client in us claiming eu stays in us.
    all_on(
        &rig.http_sites(US, Some("127.0.0.5")).await,
        "us",
        "untrusted 127.0.1.1 forging 127.0.0.5",
    );
}

#[tokio::test]
async fn a_reload_of_geo_moves_clients_to_their_new_region() {
    let rig = Rig::start().await;
    all_on(
        &rig.http_sites(EU, None).await,
        "eu",
        "127.0.0.1 before the reload",
    );
    // The two networks change regions.
    let path = rig.proxy.dir.0.join("sitesteer.toml");
    let before = std::fs::read_to_string(&path).expect("config");
    let after = before
        .replace("cidr = \"127.0.0.0/24\"", "cidr = \"swap\"")
        .replace("cidr = \"127.0.1.0/24\"", "cidr = \"127.0.0.0/24\"")
        .replace("cidr = \"swap\"", "cidr = \"127.0.1.0/24\"");
    assert_ne!(before, after);
    std::fs::write(&path, after).expect("write config");
    let reloaded = request(rig.proxy.admin, Method::POST, "/api/v1/reload", &[], None)
        .await
        .expect("reload answers");
    assert_eq!(reloaded.status, 200, "{:?}", reloaded.json());
    rig.proxy
        .wait_all_up(&["eu", "us"], Duration::from_secs(15))
        .await;
    all_on(
        &rig.http_sites(EU, None).await,
        "us",
        "127.0.0.1 after the reload",
    );
    all_on(
        &rig.tcp_sites(US).await,
        "eu",
        "tcp from 127.0.1.1 after the reload",
    );
}
