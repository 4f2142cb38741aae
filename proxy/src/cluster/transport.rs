//! HTTP/1.1 to etcd's JSON gateway, over plain TCP or TLS (rustls, optionally with a client
//! certificate). Unary calls reuse a small pool of idle connections; a stream (a watch) gets a
//! connection of its own. Endpoints are tried in order, starting with the last one that
//! answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sitesteer_config::Cluster as ClusterConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;

/// Idle connections kept for unary calls.
const POOL: usize = 4;

/// One etcd endpoint.
#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "etcd endpoint {url:?} is not an http:// or https:// URL"
            ));
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("etcd endpoint {url:?} has no host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            url: url.to_string(),
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// An error with its causes, for messages that say what went wrong.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn host_header(ep: &Endpoint) -> String {
    if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    }
}

/// Why a call got no answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No endpoint could be reached: the request was not sent.
    Connect(String),
    /// The request may have been sent but no complete answer came back.
    Lost(String),
}

/// An I/O stream to etcd, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Aborts the connection task when dropped, unless detached.
pub(crate) struct ConnTask(Option<JoinHandle<()>>);

impl ConnTask {
    /// Lets the connection live on (it ends by itself when its sender and bodies are gone).
    fn detach(mut self) {
        self.0.take();
    }
}

impl Drop for ConnTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Connections to the etcd endpoints.
pub(crate) struct Transport {
    endpoints: Vec<Endpoint>,
    tls: Option<TlsConnector>,
    preferred: AtomicUsize,
    pool: Mutex<Vec<(usize, SendRequest<Full<Bytes>>)>>,
    connect_timeout: Duration,
}

fn tls_connector(config: &ClusterConfig) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read cluster.ca_file {}: {e}", ca.display()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("cluster.ca_file {} is not PEM: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("cluster.ca_file {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let mut tls = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read cluster.cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read cluster.key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cluster.cert_file and key_file do not fit: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(tls)))
}

impl Transport {
    /// Connections to the endpoints of `config`; TLS files are read now.
    pub(crate) fn new(config: &ClusterConfig, connect_timeout: Duration) -> Result<Self, String> {
        let endpoints = config
            .etcd
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("cluster.etcd names no endpoint".into());
        }
        let needs_tls = endpoints.iter().any(|e| e.tls) || config.cert_file.is_some();
        let tls = if needs_tls {
            Some(tls_connector(config)?)
        } else {
            None
        };
        Ok(Self {
            endpoints,
            tls,
            preferred: AtomicUsize::new(0),
            pool: Mutex::new(Vec::new()),
            connect_timeout,
        })
    }

    /// Moves on to the next endpoint and drops idle connections: called when a session
    /// failed, so that the next one starts on another etcd member.
    pub(crate) fn rotate(&self) {
        let n = self.endpoints.len();
        let _ = self
            .preferred
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some((p + 1) % n));
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The endpoint URLs.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    async fn connect_one(
        &self,
        index: usize,
    ) -> Result<(SendRequest<Full<Bytes>>, ConnTask), String> {
        let ep = &self.endpoints[index];
        let connect = async {
            let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
                .await
                .map_err(|e| format!("{}: {e}", ep.url))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match (&self.tls, ep.tls) {
                (Some(tls), true) => {
                    let name = ServerName::try_from(ep.host.clone())
                        .map_err(|e| format!("{}: bad TLS server name: {e}", ep.url))?;
                    Box::new(
                        tls.connect(name, tcp)
                            .await
                            .map_err(|e| format!("{}: TLS: {e}", ep.url))?,
                    )
                }
                _ => Box::new(tcp),
            };
            hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("{}: {}", ep.url, chain(&e)))
        };
        let (sender, conn) = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| format!("{}: connect timed out", ep.url))??;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender, ConnTask(Some(task))))
    }

    /// A new connection to the first endpoint that takes one, starting with the preferred.
    async fn connect(&self) -> Result<(usize, SendRequest<Full<Bytes>>, ConnTask), CallError> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut errors = Vec::new();
        for i in 0..n {
            let index = (start + i) % n;
            match self.connect_one(index).await {
                Ok((sender, task)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((index, sender, task));
                }
                Err(e) => errors.push(e),
            }
        }
        Err(CallError::Connect(errors.join("; ")))
    }

    fn pooled(&self) -> Option<(usize, SendRequest<Full<Bytes>>)> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((index, sender)) = pool.pop() {
            if !sender.is_closed() && sender.is_ready() {
                return Some((index, sender));
            }
        }
        None
    }

    fn give_back(&self, index: usize, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push((index, sender));
        }
    }

    fn request(
        &self,
        index: usize,
        path: &str,
        body: &Bytes,
        headers: &[(&str, String)],
    ) -> Result<hyper::Request<Full<Bytes>>, CallError> {
        let ep = &self.endpoints[index];
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, host_header(ep))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        req.body(Full::new(body.clone()))
            .map_err(|e| CallError::Connect(format!("bad request: {e}")))
    }

    /// POSTs `body` to `path` and reads the whole answer within `timeout`.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(u16, Bytes), CallError> {
        let call = async {
            // A pooled connection may have died with its server in the meantime (etcd
            // stopped, a member lost): the request is retried once on a fresh connection,
            // which may reach another member. Every request sitesteer makes is safe to
            // repeat: a compare-and-put that was applied fails its compare the second time.
            let mut fresh_task = None;
            let (mut index, mut sender) = match self.pooled() {
                Some(p) => p,
                None => {
                    let (i, s, t) = self.connect().await?;
                    fresh_task = Some(t);
                    (i, s)
                }
            };
            let req = self.request(index, path, &body, headers)?;
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) if fresh_task.is_none() => {
                    tracing::debug!(error = %chain(&e), "pooled etcd connection failed; retrying on a new one");
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    // Unless hyper knows the request never left, it may have been applied.
                    let sent = !e.is_canceled();
                    let (i, s, t) = self.connect().await.map_err(|c| match c {
                        CallError::Connect(m) if sent => {
                            CallError::Lost(format!("{}; then {m}", chain(&e)))
                        }
                        other => other,
                    })?;
                    index = i;
                    sender = s;
                    fresh_task = Some(t);
                    let req = self.request(i, path, &body, headers)?;
                    sender
                        .send_request(req)
                        .await
                        .map_err(|e| CallError::Lost(chain(&e)))?
                }
                Err(e) => return Err(CallError::Lost(chain(&e))),
            };
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Lost(chain(&e)))?
                .to_bytes();
            // The connection goes back to the pool, so its task must live on.
            if let Some(task) = fresh_task.take() {
                task.detach();
            }
            self.give_back(index, sender);
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CallError::Lost(format!("no answer within {timeout:?}")))?
    }

    /// POSTs `body` to `path` on a connection of its own and returns the streaming answer.
    pub(crate) async fn stream(
        &self,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(u16, Incoming, ConnTask), CallError> {
        let open = async {
            let (index, mut sender, task) = self.connect().await?;
            let req = self.request(index, path, &body, headers)?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| CallError::Lost(chain(&e)))?;
            Ok((resp.status().as_u16(), resp.into_body(), task))
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| CallError::Lost(format!("no answer within {timeout:?}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("127.0.0.1", 2379, false));
        let e = Endpoint::parse("https://etcd-1.example:2379/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("etcd-1.example", 2379, true)
        );
        let e = Endpoint::parse("http://[::1]:2379").unwrap();
        assert_eq!(e.host, "::1");
        assert!(Endpoint::parse("127.0.0.1:2379").is_err());
        assert!(Endpoint::parse("http://host").is_err());
    }
}
