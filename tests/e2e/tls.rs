//! TLS end to end, with a throwaway CA made by the test (rcgen): HTTPS and TLS over raw TCP
//! through sitesteer, TLS 1.2 and 1.3 only (a TLS 1.1 hello is refused), the certificate
//! reloaded with the config, and TLS to upstream sites with SNI and verification against a
//! configured CA (a wrong CA fails).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::harness::{free_port, get, site_tables, wait_until, DemoSite, Scratch};
use crate::restart::Front;

/// A throwaway certificate authority.
pub(crate) struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA called `name`.
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub(crate) fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IPs) and its key, both PEM.
    pub(crate) fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "sitesteer test");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting `ca_pem`, offering only `versions`.
pub(crate) fn client(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// What an HTTPS request saw.
struct Seen {
    status: u16,
    site: String,
    version: Option<ProtocolVersion>,
    peer_cert: Vec<u8>,
}

/// `GET path` over TLS to `addr` with SNI `name`, bounded to 5 s.
async fn https_get(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> Result<Seen, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let tls = connector
            .connect(server, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (_, conn) = tls.get_ref();
        let version = conn.protocol_version();
        let peer_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(driver);
        let req = Request::builder()
            .uri(path)
            .header("host", name)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status().as_u16();
        let site = resp
            .headers()
            .get("x-sitesteer-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let _ = resp.into_body().collect().await;
        Ok(Seen {
            status,
            site,
            version,
            peer_cert,
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

/// Sends a TLS 1.1 ClientHello (the kind an old client sends) and returns the first byte
/// of the answer: 21 is an alert, 22 would be a ServerHello; `None` when the server just
/// closes.
async fn tls11_hello(addr: SocketAddr) -> Option<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
                  // ECDHE-RSA-AES128-SHA, ECDHE-ECDSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02, (handshake.len() >> 8) as u8];
    record.push(handshake.len() as u8);
    record.extend_from_slice(&handshake);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&record).await.expect("send hello");
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first)).await {
        Ok(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

/// Writes `text` to `dir/name`; returns the path as a string for the config.
pub(crate) fn put(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path.display().to_string()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("cert PEM")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_tls_tcp_through_sitesteer_speak_only_tls_12_and_13() {
    let pki = Pki::new("sitesteer test CA");
    let files = Scratch::new("tls-files");
    let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"]);
    let cert_file = put(&files.0, "cert.pem", &cert);
    let key_file = put(&files.0, "key.pem", &key);
    let tcp_port = free_port();
    let site = DemoSite::start_with_tcp("alpha", free_port(), tcp_port).await;
    let front = Front::new("tls-listen", true);
    front.write(&format!(
        "[tls]\ncert_file = \"{cert_file}\"\nkey_file = \"{key_file}\"\n\n{}tcp = \"127.0.0.1:{tcp_port}\"\n",
        site_tables(&[("alpha", 0, site.addr)])
    ));
    let _proc = front.start("sitesteer.log").await;

    let ca = pki.ca_pem();
    for (versions, expected) in [
        (&[&rustls::version::TLS13][..], ProtocolVersion::TLSv1_3),
        (&[&rustls::version::TLS12][..], ProtocolVersion::TLSv1_2),
    ] {
        let seen = https_get(&client(&ca, versions), front.http, "localhost", "/health")
            .await
            .expect("HTTPS through sitesteer");
        assert_eq!(seen.status, 200);
        assert_eq!(seen.site, "alpha");
        assert_eq!(seen.version, Some(expected));
    }
    // By IP too (the certificate names 127.0.0.1).
    let both = client(&ca, rustls::DEFAULT_VERSIONS);
    let seen = https_get(&both, front.http, "127.0.0.1", "/")
        .await
        .expect("HTTPS by IP");
    assert_eq!(seen.status, 200);

    // TLS 1.1 is refused with an alert, never a ServerHello.
    assert_ne!(
        tls11_hello(front.http).await,
        Some(0x16),
        "TLS 1.1 accepted"
    );
    assert_ne!(
        tls11_hello(front.tcp.expect("tcp")).await,
        Some(0x16),
        "TLS 1.1 accepted on the tcp listener"
    );
    // Plain HTTP to a TLS listener gets no HTTP answer.
    assert!(get(front.http, "/health").await.is_err());

    // Raw TCP (newline JSON-RPC) over TLS.
    let tcp = TcpStream::connect(front.tcp.expect("tcp"))
        .await
        .expect("connect");
    let server = ServerName::try_from("localhost").expect("name");
    let mut tls = both
        .connect(server, tcp)
        .await
        .expect("TLS on the tcp listener");
    tls.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n")
        .await
        .expect("send");
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(tls).read_line(&mut line),
    )
    .await;
    assert!(matches!(read, Ok(Ok(n)) if n > 0), "no answer over TLS tcp");
    let answer: serde_json::Value = serde_json::from_str(line.trim()).expect("JSON");
    assert_eq!(answer["id"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_certificate_is_reloaded_with_the_config() {
    let pki = Pki::new("reload CA");
    let files = Scratch::new("tls-reload");
    let (cert1, key1) = pki.leaf(&["localhost"]);
    let cert_file = put(&files.0, "cert.pem", &cert1);
    let key_file = put(&files.0, "key.pem", &key1);
    let site = DemoSite::start("alpha", free_port()).await;
    let front = Front::new("tls-reload", false);
    let body = |cert: &str, key: &str| {
        format!(
            "[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\n{}",
            site_tables(&[("alpha", 0, site.addr)])
        )
    };
    front.write(&body(&cert_file, &key_file));
    let _proc = front.start("sitesteer.log").await;
    // A fresh client each time: a resumed session would show the certificate it began with.
    let ca = pki.ca_pem();
    let connector = || client(&ca, rustls::DEFAULT_VERSIONS);
    let seen = https_get(&connector(), front.http, "localhost", "/health")
        .await
        .expect("HTTPS");
    assert_eq!(seen.peer_cert, der_of(&cert1));

    // Rotation in place: new contents, same files, then a reload.
    let (cert2, key2) = pki.leaf(&["localhost"]);
    put(&files.0, "cert.pem", &cert2);
    put(&files.0, "key.pem", &key2);
    let reload = crate::harness::request(
        front.admin,
        hyper::Method::POST,
        "/api/v1/reload",
        &[],
        None,
    )
    .await
    .expect("reload");
    assert_eq!(
        reload.status,
        200,
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    assert_eq!(
        reload.json()["reload"]["needs_restart"],
        serde_json::json!([])
    );
    let seen = https_get(&connector(), front.http, "localhost", "/health")
        .await
        .expect("HTTPS after reload");
    assert_eq!(
        seen.peer_cert,
        der_of(&cert2),
        "the new certificate is served"
    );

    // A key that does not fit the certificate refuses the reload, naming the key.
    let (_, other_key) = pki.leaf(&["localhost"]);
    let wrong = put(&files.0, "other.key", &other_key);
    front.write(&body(&cert_file, &wrong));
    let reload = crate::harness::request(
        front.admin,
        hyper::Method::POST,
        "/api/v1/reload",
        &[],
        None,
    )
    .await
    .expect("reload");
    assert_eq!(reload.status, 422);
    assert!(
        String::from_utf8_lossy(&reload.body).contains("tls.key_file"),
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    let seen = https_get(&connector(), front.http, "localhost", "/health")
        .await
        .expect("HTTPS after a refused reload");
    assert_eq!(
        seen.peer_cert,
        der_of(&cert2),
        "the running certificate stays"
    );

    // `sitesteer check` names the bad key too.
    let out = std::process::Command::new(crate::harness::binary())
        .args(["check", "-c"])
        .arg(&front.config)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.key_file"));
}

/// A tiny TLS upstream: answers every path with 200 and `{"sni": ...}`, and remembers the
/// server names clients sent.
struct TlsUpstream {
    addr: SocketAddr,
    snis: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    async fn start(cert_pem: &str, key_pem: &str) -> Self {
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let snis = Arc::new(Mutex::new(Vec::new()));
        let seen = snis.clone();
        let task = tokio::spawn(async move {
            // Bounded by the test: the task is aborted on drop.
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    seen.lock().expect("snis").push(sni.clone());
                    let service = hyper::service::service_fn(move |_req| {
                        let body = serde_json::json!({ "sni": sni }).to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, snis, task }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_sends_sni_and_verifies_against_the_configured_ca() {
    let pki = Pki::new("upstream CA");
    let stranger = Pki::new("some other CA");
    let files = Scratch::new("tls-upstream");
    let (cert, key) = pki.leaf(&["mcp.upstream.test"]);
    let good = TlsUpstream::start(&cert, &key).await;
    let (cert_b, key_b) = pki.leaf(&["mcp.upstream.test"]);
    let distrusted = TlsUpstream::start(&cert_b, &key_b).await;
    let ca_file = put(&files.0, "ca.pem", &pki.ca_pem());
    let stranger_ca = put(&files.0, "stranger.pem", &stranger.ca_pem());

    let front = Front::new("tls-upstream", false);
    front.write(&format!(
        "[tls]\nca_file = \"{ca_file}\"\n\n\
         [[site]]\nname = \"good\"\nhost = \"mcp.upstream.test\"\n\
         [site.endpoints]\nhttp = \"{}\"\n[site.tls]\n\n\
         [[site]]\nname = \"distrusted\"\n\
         [site.endpoints]\nhttp = \"{}\"\n[site.tls]\nsni = \"mcp.upstream.test\"\nca_file = \"{stranger_ca}\"\n",
        good.addr, distrusted.addr
    ));
    let _proc = front.start("sitesteer.log").await;

    // Probes speak TLS too: the good site comes up, the one signed by a CA sitesteer does
    // not trust goes down.
    let states = wait_until(Duration::from_secs(10), || async {
        let Ok(r) = get(front.admin, "/api/v1/sites").await else {
            return false;
        };
        let v = r.json();
        let state = |name: &str| {
            v["sites"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["name"] == name))
                .and_then(|s| s["state"].as_str())
                .unwrap_or("")
                .to_string()
        };
        state("good") == "up" && state("distrusted") == "down"
    })
    .await;
    assert!(
        states.is_some(),
        "expected good up and distrusted down:\n{}",
        String::from_utf8_lossy(&get(front.admin, "/api/v1/sites").await.expect("sites").body)
    );
    for _ in 0..5 {
        let r = get(front.http, "/anything").await.expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sitesteer-site"), "good");
        assert_eq!(r.json()["sni"], "mcp.upstream.test");
    }
    assert!(good
        .snis
        .lock()
        .expect("snis")
        .iter()
        .all(|s| s == "mcp.upstream.test"));

    // With only the distrusted site left, requests fail: no unverified fallback.
    let only = Front::new("tls-upstream-bad", false);
    only.write(&format!(
        "[[probe]]\nkind = \"tcp\"\n\n[[site]]\nname = \"distrusted\"\n\
         [site.endpoints]\nhttp = \"{}\"\n[site.tls]\nsni = \"mcp.upstream.test\"\nca_file = \"{stranger_ca}\"\n",
        distrusted.addr
    ));
    let _bad = only.start("sitesteer.log").await;
    let r = get(only.http, "/anything").await.expect("answer");
    assert!(r.status >= 500, "a distrusted certificate was accepted");
    assert_eq!(r.header("x-sitesteer-site"), "");
}

/// A TLS endpoint speaking newline JSON-RPC: answers each line with a result for its id.
async fn tls_line_upstream(
    cert_pem: &str,
    key_pem: &str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let req: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    let answer = serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": {"sni": sni}});
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_to_a_tls_site_is_verified_tls() {
    let pki = Pki::new("tcp upstream CA");
    let files = Scratch::new("tls-tcp-upstream");
    let (cert, key) = pki.leaf(&["127.0.0.1"]);
    let (upstream, task) = tls_line_upstream(&cert, &key).await;
    let ca_file = put(&files.0, "ca.pem", &pki.ca_pem());
    let front = Front::new("tls-tcp-upstream", true);
    // The server name defaults to the endpoint's IP, which the certificate carries.
    front.write(&format!(
        "[[probe]]\nkind = \"mcp\"\nendpoint = \"tcp\"\n\n[[site]]\nname = \"t\"\n\
         [site.endpoints]\ntcp = \"{upstream}\"\n[site.tls]\nca_file = \"{ca_file}\"\n"
    ));
    let _proc = front.start("sitesteer.log").await;
    let up = wait_until(Duration::from_secs(10), || async {
        get(front.admin, "/api/v1/sites")
            .await
            .is_ok_and(|r| r.json()["sites"][0]["state"] == "up")
    })
    .await;
    assert!(
        up.is_some(),
        "the TLS tcp site never came up (its mcp probe speaks TLS)"
    );
    let mut tcp = TcpStream::connect(front.tcp.expect("tcp"))
        .await
        .expect("connect");
    tcp.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n")
        .await
        .expect("send");
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(tcp).read_line(&mut line),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(n)) if n > 0),
        "no answer from the TLS tcp site"
    );
    let answer: serde_json::Value = serde_json::from_str(line.trim()).expect("JSON");
    assert_eq!(answer["id"], 3);
    // An IP server name is verified against the certificate but not sent as SNI.
    assert_eq!(answer["result"]["sni"], "");
    task.abort();
}
