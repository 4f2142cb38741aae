//! The authoritative DNS server, driven by `dig` (Debian's dnsutils): answers follow health
//! within a probe interval, client subnets (ECS) get their region's site first, and the
//! protocol corners: NXDOMAIN, NODATA, REFUSED, no recursion, no transfer, TC over UDP with
//! the full answer over TCP, and malformed packets that never stop the server.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::harness::{free_port, get, wait_until, DemoSite, Sitesteer};

/// What `dig` said.
#[derive(Debug, Default)]
pub(crate) struct Dig {
    /// The response code (`NOERROR`, ...).
    pub status: String,
    /// The header flags (`qr`, `aa`, `tc`, ...).
    pub flags: Vec<String>,
    /// The answer section: (TTL, type, data).
    pub answers: Vec<(u32, String, String)>,
    /// All of dig's output.
    pub text: String,
}

impl Dig {
    /// The A and AAAA data of the answer, in order.
    pub(crate) fn addrs(&self) -> Vec<&str> {
        self.answers
            .iter()
            .filter(|(_, t, _)| t == "A" || t == "AAAA")
            .map(|(_, _, d)| d.as_str())
            .collect()
    }

    /// Whether the header has `flag`.
    pub(crate) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Runs `dig @127.0.0.1 -p PORT ARGS` (one try, 2 s) and parses its output.
pub(crate) async fn dig(port: u16, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=2"])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .expect("dig finished")
        .expect("dig runs (apt-get install dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut d = Dig::default();
    let mut in_answer = false;
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        }
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                in_answer = false;
                continue;
            }
            d.answers.push((
                f[1].parse().unwrap_or(0),
                f[3].to_string(),
                f[4..].join(" "),
            ));
        }
    }
    d.text = text;
    d
}

/// The zone of the DNS tests.
pub(crate) const ZONE: &str = "mcp.test.";

fn probes() -> &'static str {
    "[health]\nrise = 2\nfall = 2\n\n[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\njitter = \"5ms\"\n\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_health_and_the_client_region() {
    let ports = [free_port(), free_port()];
    let mut eu = DemoSite::start("eu", ports[0]).await;
    let _us = DemoSite::start("us", ports[1]).await;
    let dns = free_port();
    let body = format!(
        "dns = \"127.0.0.1:{dns}\"\n\n{}\
         [dns]\nzone = \"{ZONE}\"\nnames = [\"api\"]\nttl = 5\n\n\
         [[geo]]\ncidr = \"10.1.0.0/16\"\nregion = \"eu\"\n\n\
         [[geo]]\ncidr = \"10.2.0.0/16\"\nregion = \"us\"\n\n\
         [[site]]\nname = \"eu\"\nregion = \"eu\"\naddress = \"192.0.2.1\"\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n\n\
         [[site]]\nname = \"us\"\nregion = \"us\"\naddress = \"192.0.2.2\"\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n",
        probes(),
        ports[0],
        ports[1]
    );
    let proxy = Sitesteer::start(&body).await;
    let api = format!("api.{ZONE}");

    let both = dig(dns, &[&api, "A"]).await;
    let mut got = both.addrs();
    got.sort();
    assert_eq!(got, vec!["192.0.2.1", "192.0.2.2"], "{}", both.text);
    assert!(
        both.has_flag("aa") && !both.has_flag("ra"),
        "{:?}",
        both.flags
    );
    assert!(
        both.answers.iter().all(|a| a.0 == 1),
        "TTL lowered to 1 s: 50ms × fall 2 < min_ttl"
    );

    // ECS: each subnet gets its region's site first, with the matched prefix as scope.
    for _ in 0..5 {
        let from_eu = dig(dns, &[&api, "A", "+subnet=10.1.2.0/24"]).await;
        assert_eq!(
            from_eu.addrs().first(),
            Some(&"192.0.2.1"),
            "{}",
            from_eu.text
        );
        assert!(
            from_eu.text.contains("CLIENT-SUBNET: 10.1.2.0/24/16"),
            "{}",
            from_eu.text
        );
        let from_us = dig(dns, &[&api, "A", "+subnet=10.2.9.0/24"]).await;
        assert_eq!(
            from_us.addrs().first(),
            Some(&"192.0.2.2"),
            "{}",
            from_us.text
        );
    }

    // A killed site leaves the answers: at the latest at the query after steering sees it down.
    let killed = Instant::now();
    eu.proc.kill9();
    let mut left = None;
    while killed.elapsed() < Duration::from_secs(3) {
        if dig(dns, &[&api, "A", "+subnet=10.1.2.0/24"]).await.addrs() == vec!["192.0.2.2"] {
            left = Some(killed.elapsed());
            break;
        }
    }
    let left = left.unwrap_or_else(|| panic!("eu never left the answers; log:\n{}", proxy.log()));
    assert!(
        left < Duration::from_millis(600),
        "eu left the answers after {left:?}"
    );
    assert_eq!(proxy.state_of("eu").await, "down");
    let dns_events = || async {
        let events = get(proxy.admin, "/api/v1/events")
            .await
            .expect("events")
            .json();
        let list = events["events"].as_array().cloned().unwrap_or_default();
        list.into_iter()
            .filter(|e| e["actor"] == "dns")
            .collect::<Vec<_>>()
    };
    let reported = wait_until(Duration::from_secs(2), || async {
        !dns_events().await.is_empty()
    })
    .await;
    assert!(
        reported.is_some(),
        "no answer-set event; log:\n{}",
        proxy.log()
    );
    let event = &dns_events().await[0];
    assert_eq!(
        (event["from"].as_str(), event["to"].as_str()),
        (Some("eu,us"), Some("us")),
        "{event}"
    );

    // ... and comes back after recovery (rise = 2).
    let _eu = DemoSite::start("eu", ports[0]).await;
    proxy
        .wait_state("eu", "up", Duration::from_secs(5))
        .await
        .expect("eu back up");
    let back = dig(dns, &[&api, "A", "+subnet=10.1.2.0/24"]).await;
    assert_eq!(back.addrs().first(), Some(&"192.0.2.1"), "{}", back.text);

    let metrics = get(proxy.admin, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            "sitesteer_dns_queries_total{name=\"api\",qtype=\"A\",rcode=\"NOERROR\",region=\"eu\"}"
        ),
        "{text}"
    );
}

/// `n` sites with addresses and no probes: all up, all answered.
fn many_sites(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[site]]\nname = \"s{i}\"\naddress = \"198.51.100.{}\"\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n\n",
                i + 1,
                20000 + i
            )
        })
        .collect()
}

fn rcode(reply: &[u8]) -> Option<u8> {
    reply.get(3).map(|b| b & 0x0f)
}

/// Sends `packet` over UDP; the reply, if one comes within 300 ms.
fn send_raw(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    sock.send_to(packet, server).expect("send");
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_corners() {
    let dns = free_port();
    let body = format!(
        "dns = \"127.0.0.1:{dns}\"\n\n[dns]\nzone = \"{ZONE}\"\nnames = [\"api\", \"@\"]\nns = [\"ns1\", \"ns2.example.net.\"]\n\n{}",
        many_sites(40)
    );
    let _proxy = Sitesteer::start(&body).await;
    let api = format!("api.{ZONE}");

    let nx = dig(dns, &[&format!("nope.{ZONE}"), "A"]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    assert!(
        nx.has_flag("aa") && nx.text.contains("AUTHORITY: 1"),
        "{}",
        nx.text
    );
    let nodata = dig(dns, &[&api, "TXT"]).await;
    assert_eq!(nodata.status, "NOERROR");
    assert!(
        nodata.text.contains("ANSWER: 0, AUTHORITY: 1"),
        "{}",
        nodata.text
    );
    let refused = dig(dns, &["example.org.", "A"]).await;
    assert_eq!(refused.status, "REFUSED", "{}", refused.text);
    assert!(!refused.has_flag("ra"), "no recursion");
    let soa = dig(dns, &[ZONE, "SOA"]).await;
    assert!(
        soa.answers
            .iter()
            .any(|a| a.1 == "SOA" && a.2.starts_with("ns1.mcp.test. hostmaster.mcp.test.")),
        "{}",
        soa.text
    );
    let ns = dig(dns, &[ZONE, "NS"]).await;
    assert_eq!(ns.answers.len(), 2, "{}", ns.text);
    let axfr = dig(dns, &[ZONE, "AXFR"]).await;
    assert!(axfr.text.contains("Transfer failed"), "{}", axfr.text);

    // 40 A records do not fit in 512 bytes: TC over UDP, everything over TCP.
    let udp = dig(dns, &[&api, "A", "+notcp", "+ignore", "+noedns"]).await;
    assert!(udp.has_flag("tc"), "{}", udp.text);
    assert!(udp.addrs().len() < 40);
    let small = dig(dns, &[&api, "A", "+ignore", "+bufsize=512"]).await;
    assert!(small.has_flag("tc"), "{}", small.text);
    let tcp = dig(dns, &[&api, "A", "+tcp"]).await;
    assert_eq!(tcp.addrs().len(), 40, "{}", tcp.text);
    let fallback = dig(dns, &[&api, "A", "+noedns"]).await;
    assert_eq!(fallback.addrs().len(), 40, "dig retries over TCP on TC");

    // Malformed packets: FORMERR or dropped, and the server keeps answering.
    let server = SocketAddr::from(([127, 0, 0, 1], dns));
    if let Some(reply) = send_raw(server, b"\x00\x01junk") {
        panic!("a runt packet got a reply: {reply:?}");
    }
    let truncated_question = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03ap";
    if let Some(reply) = send_raw(server, truncated_question) {
        assert_eq!(&reply[..2], b"\xbe\xef");
        assert_eq!(rcode(&reply), Some(1), "FORMERR: {reply:?}");
    }
    let mut two = b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..2 {
        two.extend_from_slice(b"\x03api\x03mcp\x04test\x00\x00\x01\x00\x01");
    }
    let reply = send_raw(server, &two).expect("two questions get an answer");
    assert_eq!(rcode(&reply), Some(1), "FORMERR for two questions");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..300 {
        let len = 1 + (i * 7) % 300;
        let packet: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let _ = sock.send_to(&packet, server);
    }
    let after = dig(dns, &[&api, "A", "+tcp"]).await;
    assert_eq!(after.addrs().len(), 40, "still answering: {}", after.text);
    let udp_after = dig(dns, &[&format!("nope.{ZONE}"), "A"]).await;
    assert_eq!(udp_after.status, "NXDOMAIN");
}
