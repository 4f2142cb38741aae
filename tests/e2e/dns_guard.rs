//! The DNS listener's guards against hostile clients, each against a real process: DNS over
//! TCP beyond `limits.dns_tcp_max_connections` is closed unanswered and idle (or trickling)
//! connections are closed after `limits.dns_tcp_idle_timeout`; a UDP flood from one /24 is
//! rate limited (RRL: slips with TC and drops, counted) while another network is answered;
//! ANY gets the one HINFO of RFC 8482; ECS is honoured only from `dns.ecs_trusted`. Also the
//! raw DNS wire helpers the flood test shares.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns::{dig, ZONE};
use crate::harness::{free_port, metric_sum as metric, DemoSite, Sitesteer};

/// A query for `name` (fully qualified) of type `qtype`, class IN, RD clear, no EDNS.
pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// `message` with its DNS-over-TCP length prefix.
pub(crate) fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

/// Reads one length-prefixed answer.
pub(crate) async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(len)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// `dns = ...`, `[dns]` for ZONE with `api` and the apex, `dns_extra` inside `[dns]`, the
/// `[limits]` lines `limits`, `tables` (`[[geo]]`, `[[probe]]`), and two sites with
/// addresses (eu, us) whose http endpoints are on `ports`.
fn config(dns: u16, dns_extra: &str, limits: &str, tables: &str, ports: [u16; 2]) -> String {
    format!(
        "dns = \"127.0.0.1:{dns}\"\n\n[limits]\n{limits}\n\n\
         [dns]\nzone = \"{ZONE}\"\nnames = [\"api\", \"@\"]\n{dns_extra}\n\n{tables}\n\
         [[site]]\nname = \"eu\"\nregion = \"eu\"\naddress = \"192.0.2.1\"\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n\n\
         [[site]]\nname = \"us\"\nregion = \"us\"\naddress = \"192.0.2.2\"\n[site.endpoints]\nhttp = \"127.0.0.1:{}\"\n",
        ports[0],
        ports[1]
    )
}

/// Whether the server closes `stream` (EOF or reset) within `limit`, sending nothing.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_tcp_over_the_cap_is_closed_and_idle_connections_time_out() {
    let dns = free_port();
    let body = config(
        dns,
        "",
        "dns_tcp_max_connections = 5\ndns_tcp_idle_timeout = \"1s\"",
        "",
        [free_port(), free_port()],
    );
    let proxy = Sitesteer::start(&body).await;
    let server = SocketAddr::from(([127, 0, 0, 1], dns));
    let api = format!("api.{ZONE}");

    // Five connections, each answered (so each is accepted and holds its place).
    let mut held = Vec::new();
    for id in 0..5u16 {
        let mut c = TcpStream::connect(server).await.expect("connect");
        c.write_all(&framed(&query(id, &api, 1)))
            .await
            .expect("write");
        let answer = tokio::time::timeout(Duration::from_secs(2), read_answer(&mut c))
            .await
            .expect("answered in time")
            .expect("answer");
        assert_eq!(answer[..2], id.to_be_bytes());
        held.push(c);
    }
    // Five more: each closed unanswered, at once.
    for id in 0..5u16 {
        let mut c = TcpStream::connect(server).await.expect("connect");
        let _ = c.write_all(&framed(&query(100 + id, &api, 1))).await;
        let started = Instant::now();
        assert!(
            closed_within(&mut c, Duration::from_millis(800)).await,
            "connection {id} over the cap was answered or kept open"
        );
        assert!(started.elapsed() < Duration::from_millis(800));
    }
    assert_eq!(
        metric(
            proxy.admin,
            "sitesteer_refused_total{listener=\"dns_tcp\",reason=\"connections\"}"
        )
        .await,
        5.0
    );
    // The five held connections now sit idle: closed after about a second.
    let idle = Instant::now();
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_secs(3)).await,
            "an idle connection stayed open"
        );
    }
    let took = idle.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "idle close took {took:?}"
    );
    // Their places are free again; a query trickled a byte every 300 ms is closed too.
    let mut trickle = TcpStream::connect(server).await.expect("connect");
    let started = Instant::now();
    let mut closed = false;
    for byte in framed(&query(7, &api, 1)) {
        if trickle.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut trickle, Duration::from_millis(300)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled query kept its connection");
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(
        metric(
            proxy.admin,
            "sitesteer_refused_total{listener=\"dns_tcp\",reason=\"idle_timeout\"}"
        )
        .await
            >= 6.0
    );
    let tcp = dig(dns, &[&api, "A", "+tcp"]).await;
    assert!(!tcp.addrs().is_empty(), "still serving TCP: {}", tcp.text);
}

/// Sends `count` copies of `packet` from `sock` as fast as it can, then collects what comes
/// back within 500 ms: (answers with records, truncated answers without).
fn flood(sock: &UdpSocket, server: SocketAddr, packet: &[u8], count: usize) -> (usize, usize) {
    for _ in 0..count {
        let _ = sock.send_to(packet, server);
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let (mut full, mut slipped) = (0, 0);
    let mut buf = [0u8; 1500];
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        if n >= 12 && buf[2] & 0x02 != 0 && answers == 0 {
            slipped += 1;
        } else if answers > 0 {
            full += 1;
        }
    }
    (full, slipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrl_limits_a_flood_from_one_network_and_answers_another() {
    let dns = free_port();
    let body = config(
        dns,
        "",
        "dns_rrl_rate = 20\ndns_rrl_burst = 20\ndns_rrl_slip = 2",
        "",
        [free_port(), free_port()],
    );
    let proxy = Sitesteer::start(&body).await;
    let server = SocketAddr::from(([127, 0, 0, 1], dns));
    let api = format!("api.{ZONE}");

    let attacker = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let started = Instant::now();
    let (full, slipped) = flood(&attacker, server, &query(1, &api, 1), 300);
    let secs = started.elapsed().as_secs_f64();
    // The burst and the rate over the time the flood took, and a little slack.
    let allowed = 20.0 + 20.0 * secs + 5.0;
    assert!(
        (full as f64) <= allowed && full >= 20,
        "{full} full answers to one /24 in {secs:.2} s (allowed {allowed:.0})"
    );
    assert!(
        slipped >= 100,
        "only {slipped} truncated (slip) answers to the limited queries"
    );
    // Another /24 is answered meanwhile, in full.
    let other = dig(dns, &[&api, "A", "-b", "127.0.1.1"]).await;
    assert_eq!(other.status, "NOERROR", "{}", other.text);
    assert!(!other.addrs().is_empty(), "{}", other.text);
    let slips = metric(
        proxy.admin,
        "sitesteer_dns_rate_limited_total{action=\"slip\"}",
    )
    .await;
    let drops = metric(
        proxy.admin,
        "sitesteer_dns_rate_limited_total{action=\"drop\"}",
    )
    .await;
    // Every limited query is counted (the kernel may drop some of the burst before the
    // server reads it); with slip = 2, every other one slips and the others are dropped.
    assert!(slips >= slipped as f64, "slips counted: {slips}");
    assert!(
        (drops - slips).abs() <= 1.0,
        "limited: {slips} slips, {drops} drops"
    );
    // TCP is not limited: the way out for a real resolver behind the limited network.
    let tcp = dig(dns, &[&api, "A", "+tcp"]).await;
    assert!(!tcp.addrs().is_empty(), "{}", tcp.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gets_the_rfc8482_answer() {
    let dns = free_port();
    let _proxy = Sitesteer::start(&config(dns, "", "", "", [free_port(), free_port()])).await;
    let api = format!("api.{ZONE}");
    for (name, transport) in [
        (api.as_str(), "+notcp"),
        (ZONE, "+notcp"),
        (api.as_str(), "+tcp"),
    ] {
        let any = dig(dns, &[name, "ANY", transport]).await;
        assert_eq!(any.status, "NOERROR", "{}", any.text);
        assert_eq!(any.answers.len(), 1, "one record for ANY: {}", any.text);
        let (_, rtype, data) = &any.answers[0];
        assert_eq!(
            (rtype.as_str(), data.as_str()),
            ("HINFO", "\"RFC8482\" \"\""),
            "{}",
            any.text
        );
    }
    // The other types still answer in full.
    assert!(!dig(dns, &[&api, "A"]).await.addrs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_is_honoured_only_from_trusted_resolvers() {
    let dns = free_port();
    let geo = "[[geo]]\ncidr = \"10.1.0.0/16\"\nregion = \"eu\"\n\n\
               [[geo]]\ncidr = \"10.2.0.0/16\"\nregion = \"us\"\n\n\
               [[geo]]\ncidr = \"127.0.1.0/24\"\nregion = \"us\"\n\n\
               [[geo]]\ncidr = \"127.0.0.0/24\"\nregion = \"eu\"\n";
    let ports = [free_port(), free_port()];
    let _eu = DemoSite::start("eu", ports[0]).await;
    let _us = DemoSite::start("us", ports[1]).await;
    // Both sites probed and up, so each region's answer puts its own site first.
    let probe = "[[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n";
    let body = config(
        dns,
        "ecs_trusted = [\"127.0.0.1/32\"]",
        "",
        &format!("{geo}\n{probe}"),
        ports,
    );
    let proxy = Sitesteer::start(&body).await;
    for site in ["eu", "us"] {
        proxy
            .wait_state(site, "up", Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{site} never came up"));
    }
    let api = format!("api.{ZONE}");
    for _ in 0..5 {
        // Trusted resolver: its client subnets place the client.
        let trusted = dig(dns, &[&api, "A", "+subnet=10.2.9.0/24", "-b", "127.0.0.1"]).await;
        assert_eq!(
            trusted.addrs().first(),
            Some(&"192.0.2.2"),
            "{}",
            trusted.text
        );
        assert!(
            trusted.text.contains("CLIENT-SUBNET: 10.2.9.0/24/16"),
            "{}",
            trusted.text
        );
        // Untrusted resolver (127.0.1.1, a "us" network) claiming an "eu" subnet: placed by
        // its own address, and told the answer holds for every subnet (scope 0).
        let untrusted = dig(dns, &[&api, "A", "+subnet=10.1.2.0/24", "-b", "127.0.1.1"]).await;
        assert_eq!(
            untrusted.addrs().first(),
            Some(&"192.0.2.2"),
            "{}",
            untrusted.text
        );
        assert!(
            untrusted.text.contains("CLIENT-SUBNET: 10.1.2.0/24/0"),
            "{}",
            untrusted.text
        );
        // The trusted resolver asking for that same subnet gets eu; the replay cache keeps
        // the two apart.
        let eu = dig(dns, &[&api, "A", "+subnet=10.1.2.0/24", "-b", "127.0.0.1"]).await;
        assert_eq!(eu.addrs().first(), Some(&"192.0.2.1"), "{}", eu.text);
    }
}
