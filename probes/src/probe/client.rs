//! A minimal HTTP/1.1 client for probes: one fresh connection per probe, so that a probe
//! measures connect and answer together and never rides on a stale pooled connection.
//! A [`Dial`] says how to reach a site: plain TCP, or TLS (1.2 or 1.3, rustls) verified
//! against the site's CA and server name for `[site.tls]` sites.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::observation::Failure;

/// Largest probe answer body read.
const MAX_BODY: usize = 256 * 1024;

/// A probe's HTTP answer.
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body (up to 256 KiB).
    pub body: Bytes,
}

/// Connects to `addr`; a refused or unreachable connect is [`Failure::Connect`].
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A client config that trusts only the CA certificates in `ca_file` (PEM) and speaks TLS
/// 1.2 and 1.3. The error names the file and what is wrong with it.
pub fn tls_client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let shown = ca_file.display();
    let iter = CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{shown}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in iter {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{shown}: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown}: no CERTIFICATE in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| format!("{shown}: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How a probe reaches one endpoint of a site.
#[derive(Clone)]
pub struct Dial {
    /// The endpoint.
    pub addr: SocketAddr,
    /// TLS for `[site.tls]` sites; `Err` when its CA could not be loaded (every probe then
    /// fails with that reason).
    tls: Option<Result<TlsDial, String>>,
}

#[derive(Clone)]
struct TlsDial {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Dial {
    /// Plain TCP to `addr`.
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }

    /// TLS to `addr`, sending `server_name` as SNI and verifying the certificate against
    /// `ca_file` and `server_name`.
    pub fn tls(addr: SocketAddr, server_name: &str, ca_file: &Path) -> Self {
        let tls = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("TLS server name {server_name:?}: {e}"))
            .and_then(|name| {
                let config = tls_client_config(ca_file)?;
                Ok(TlsDial {
                    connector: TlsConnector::from(config),
                    name,
                })
            });
        Self {
            addr,
            tls: Some(tls),
        }
    }

    /// Whether the endpoint speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dial")
            .field("addr", &self.addr)
            .field("tls", &self.is_tls())
            .finish()
    }
}

/// A probe's connection: plain TCP or TLS over it.
pub trait ProbeIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ProbeIo for T {}

/// Connects as `dial` says. A failed TLS handshake (an untrusted or misnamed certificate
/// included) is [`Failure::Connect`], logged with its cause.
pub async fn open(dial: &Dial) -> Result<Box<dyn ProbeIo>, Failure> {
    let stream = connect(dial.addr).await?;
    match &dial.tls {
        None => Ok(Box::new(stream)),
        Some(Err(e)) => {
            tracing::debug!(addr = %dial.addr, error = %e, "probe cannot speak TLS");
            Err(Failure::Connect)
        }
        Some(Ok(t)) => match t.connector.connect(t.name.clone(), stream).await {
            Ok(tls) => Ok(Box::new(tls)),
            Err(e) => {
                tracing::debug!(addr = %dial.addr, error = %e, "probe TLS handshake failed");
                Err(Failure::Connect)
            }
        },
    }
}

/// Sends one request over a new connection and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&'static str, String)],
    body: Option<Bytes>,
) -> Result<Answer, Failure> {
    request_via(&Dial::plain(addr), method, path, host, headers, body).await
}

/// [`request`] over `dial` (TLS for TLS sites).
pub async fn request_via(
    dial: &Dial,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&'static str, String)],
    body: Option<Bytes>,
) -> Result<Answer, Failure> {
    let stream = open(dial).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Reset)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "sitesteer-probe");
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    let req = req
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|_| Failure::BadAnswer)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|_| Failure::Reset)?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| Failure::Reset)?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

/// Sends one request and returns the status, content type and first body chunk, without
/// waiting for the body to end (for streams).
pub async fn first_bytes(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&'static str, String)],
) -> Result<(u16, String, Bytes), Failure> {
    first_bytes_via(&Dial::plain(addr), method, path, host, headers).await
}

/// [`first_bytes`] over `dial` (TLS for TLS sites).
pub async fn first_bytes_via(
    dial: &Dial,
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&'static str, String)],
) -> Result<(u16, String, Bytes), Failure> {
    let stream = open(dial).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Reset)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|_| Failure::BadAnswer)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|_| Failure::Reset)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = resp.into_body();
        let first = loop {
            match body.frame().await {
                None => break Bytes::new(),
                Some(Err(_)) => return Err(Failure::Reset),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            break data;
                        }
                    }
                }
            }
        };
        Ok((status, content_type, first))
    }
    .await;
    driver.abort();
    result
}

/// WebSocket handshake at `path`, then one JSON-RPC `ping` that must be answered.
pub async fn ws_ping(
    addr: SocketAddr,
    path: &str,
    host: &str,
) -> Result<(), (Failure, Option<String>)> {
    ws_ping_via(&Dial::plain(addr), path, host).await
}

/// [`ws_ping`] over `dial` (TLS for TLS sites; the handshake URL stays `ws://`, since TLS
/// is already spoken underneath).
pub async fn ws_ping_via(
    dial: &Dial,
    path: &str,
    host: &str,
) -> Result<(), (Failure, Option<String>)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let stream = open(dial).await.map_err(|f| (f, None))?;
    let url = format!("ws://{host}{path}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| {
            (
                Failure::BadAnswer,
                Some(format!("websocket handshake failed: {e}")),
            )
        })?;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    ws.send(Message::text(ping))
        .await
        .map_err(|_| (Failure::Reset, None))?;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str()).map_err(|_| {
                    (
                        Failure::BadAnswer,
                        Some("websocket answer is not JSON".into()),
                    )
                })?;
                if v.get("id") != Some(&serde_json::json!(1)) {
                    continue;
                }
                let _ = ws.close(None).await;
                return if v.get("result").is_some() {
                    Ok(())
                } else {
                    Err((Failure::BadAnswer, Some(format!("ping answered {v}"))))
                };
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Err((
        Failure::Reset,
        Some("websocket closed before the ping answer".into()),
    ))
}
