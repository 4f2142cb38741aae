//! TLS with rustls, on both sides of the proxy.
//!
//! **Listeners.** With `[tls] cert_file` and `key_file`, `listen.http` and `listen.tcp` (or
//! those named in `tls.listeners`) speak TLS 1.2 and 1.3 only (pingora's rustls acceptor
//! offers nothing older). The certificate is served by a [`CertResolver`] that reads it from
//! an `ArcSwap`, so a config reload that names new files, or finds new contents in the same
//! files, serves the new certificate to new connections without a restart. Turning TLS on
//! or off for a listener needs a restart (the reload report says so).
//!
//! **Upstreams.** A site with `[site.tls]` is reached over TLS, for HTTP, WebSocket and SSE
//! (pingora's `HttpPeer` with a per-peer CA list) and for raw TCP (tokio-rustls). The server
//! name sent as SNI and checked against the certificate is `site.tls.sni`, else the site's
//! `host`, else the endpoint's IP; the certificate must chain to the site's CA file (or the
//! global `[tls] ca_file`). The CA files are read at start and on every reload.
//!
//! Every file is checked before it is used: a missing, unreadable or wrong file is refused
//! at `sitesteer check`, at start and at reload with an error that names its config key.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::{parse_x509, WrappedX509};
use sitesteer_config::{Config, ConfigError, ConfigErrors, Site};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_rustls::TlsConnector;

/// The listeners' certificate, replaceable while they run.
#[derive(Debug)]
pub(crate) struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What one `[site.tls]` site needs to be reached over TLS.
struct SiteMaterial {
    /// The CA certificates, for pingora's per-peer verification.
    ca: Arc<CaType>,
    /// The same CA, for raw TCP upstreams.
    client: Arc<ClientConfig>,
}

/// Everything read from the TLS files of one config, ready to be installed.
pub struct Prepared {
    listener: Option<Arc<CertifiedKey>>,
    sites: HashMap<String, Arc<SiteMaterial>>,
}

/// What [`Tls::install`] replaced: the material in service before a reload.
pub struct Replaced {
    listener: Option<Arc<CertifiedKey>>,
    sites: Arc<HashMap<String, Arc<SiteMaterial>>>,
}

/// How the HTTP data plane reaches a TLS site: server name, CA, and a pool key that keeps
/// connections verified against an older CA from being reused after a reload.
pub struct PeerTls {
    /// SNI and the name the certificate must carry.
    pub sni: String,
    /// The CA certificates.
    pub ca: Arc<CaType>,
    /// Distinguishes connection pools across CA reloads.
    pub group_key: u64,
}

/// The TLS state of a running sitesteer, shared by the data planes and the reloads.
pub struct Tls {
    listener: Option<Arc<CertResolver>>,
    sites: ArcSwap<HashMap<String, Arc<SiteMaterial>>>,
    generation: AtomicU64,
}

fn problem(path: &str, message: String) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        line: None,
        message,
    }
}

/// Reads every TLS file `config` names. Errors name the config key of the file.
pub(crate) fn prepare(config: &Config) -> Result<Prepared, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let listener = match &config.tls.listener {
        None => None,
        Some(l) => match load_certified_key(&l.cert_file, &l.key_file) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let mut sites = HashMap::new();
    let mut loaded: HashMap<&Path, Arc<SiteMaterial>> = HashMap::new();
    for (i, site) in config.sites.iter().enumerate() {
        let Some(tls) = &site.tls else {
            continue;
        };
        if let Some(m) = loaded.get(tls.ca_file.as_path()) {
            sites.insert(site.name.clone(), m.clone());
            continue;
        }
        // The key that named the file: the site's own, else the global default.
        let key = if config.tls.ca_file.as_ref() == Some(&tls.ca_file) {
            "tls.ca_file".to_string()
        } else {
            format!("site[{i}].tls.ca_file")
        };
        match load_ca(&tls.ca_file) {
            Ok(m) => {
                let m = Arc::new(m);
                loaded.insert(tls.ca_file.as_path(), m.clone());
                sites.insert(site.name.clone(), m);
            }
            Err(message) => errors.push(problem(&key, message)),
        }
        for (kind, addr) in site.endpoints.iter() {
            let name = site.tls_server_name(addr).unwrap_or_default();
            if ServerName::try_from(name.as_str()).is_err() {
                errors.push(problem(
                    &format!("site[{i}].tls.sni"),
                    format!(
                        "{name:?} (for the {} endpoint) is not a valid TLS server name",
                        kind.as_str()
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(Prepared { listener, sites })
    } else {
        Err(errors)
    }
}

/// Checks every TLS file of `config` (for `sitesteer check` and `run`).
pub(crate) fn check(config: &Config, origin: &str) -> Result<(), ConfigErrors> {
    prepare(config).map(drop).map_err(|errors| ConfigErrors {
        origin: origin.to_string(),
        errors,
    })
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, ConfigError> {
    let chain = read_certs(cert_file).map_err(|m| problem("tls.cert_file", m))?;
    let shown = key_file.display();
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        problem(
            "tls.key_file",
            format!("{shown}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        problem(
            "tls.key_file",
            format!(
                "{shown} does not fit the certificate in {}: {e}",
                cert_file.display()
            ),
        )
    })
}

/// The certificates of a PEM file, each one parsed (so pingora never sees one it cannot).
fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = file.display();
    let iter = CertificateDer::pem_file_iter(file).map_err(|e| format!("{shown}: {e}"))?;
    let mut certs = Vec::new();
    for cert in iter {
        let cert = cert.map_err(|e| format!("{shown}: {e}"))?;
        if let Err(e) = x509_parser::parse_x509_certificate(cert.as_ref()) {
            return Err(format!("{shown}: a CERTIFICATE is not valid X.509: {e}"));
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(format!("{shown}: no CERTIFICATE in the file"));
    }
    Ok(certs)
}

fn load_ca(file: &Path) -> Result<SiteMaterial, String> {
    let certs = read_certs(file)?;
    let client = sitesteer_probes::probe::client::tls_client_config(file)?;
    let wrapped: Vec<WrappedX509> = certs
        .iter()
        .map(|c| WrappedX509::new(c.as_ref().to_vec(), parse_x509))
        .collect();
    Ok(SiteMaterial {
        ca: Arc::from(wrapped),
        client,
    })
}

impl Tls {
    /// Reads the TLS files of `config`; the listeners' certificate resolver exists when
    /// `[tls]` has a certificate.
    pub fn new(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let prepared = prepare(config)?;
        let listener = prepared.listener.map(|key| {
            Arc::new(CertResolver {
                current: ArcSwap::new(key),
            })
        });
        Ok(Self {
            listener,
            sites: ArcSwap::from_pointee(prepared.sites),
            generation: AtomicU64::new(0),
        })
    }

    /// The settings of a TLS listener (TLS 1.2 and 1.3, HTTP/1.1), or `None` when the
    /// listeners speak plain TCP.
    pub fn listener_settings(&self) -> Option<TlsSettings> {
        let resolver = self.listener.clone()?;
        // The paths are unused: the resolver supplies the certificate.
        let mut settings = TlsSettings::intermediate("", "").ok()?;
        settings.set_cert_resolver(resolver);
        Some(settings)
    }

    /// Installs what [`prepare`] read from a reloaded config: the listeners serve the new
    /// certificate to new connections, and sites get their new CA. Sites no longer in the
    /// config keep theirs until the next reload, for requests still steered by an older
    /// snapshot. Returns what it replaced, for [`Tls::restore`]. Cannot fail: a reload
    /// prepares (and can refuse) everything before it installs.
    pub fn install(&self, prepared: Prepared) -> Replaced {
        let listener = match (&self.listener, prepared.listener) {
            (Some(resolver), Some(key)) => Some(resolver.current.swap(key)),
            _ => None,
        };
        let old = self.sites.load_full();
        let mut sites = prepared.sites;
        for (name, material) in old.iter() {
            sites
                .entry(name.clone())
                .or_insert_with(|| material.clone());
        }
        self.sites.store(Arc::new(sites));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            generation,
            listener = self.listener.is_some(),
            "TLS certificates and CAs reloaded"
        );
        Replaced {
            listener,
            sites: old,
        }
    }

    /// Puts back what [`Tls::install`] replaced, when the rest of a reload could not follow.
    /// Connections pooled meanwhile are not reused (a new pool generation).
    pub fn restore(&self, replaced: Replaced) {
        if let (Some(resolver), Some(key)) = (&self.listener, replaced.listener) {
            resolver.current.store(key);
        }
        self.sites.store(replaced.sites);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            generation,
            "TLS certificates and CAs of the refused reload taken back"
        );
    }

    /// How to reach `addr`, an endpoint of `site`, over TLS; `None` for a plain site.
    /// A TLS site whose CA is missing (it cannot happen after a successful prepare) gets
    /// an empty CA list, so its connects fail rather than go out unverified.
    pub fn http_peer(&self, site: &Site, addr: std::net::SocketAddr) -> Option<PeerTls> {
        let sni = site.tls_server_name(addr)?;
        let ca = self
            .sites
            .load()
            .get(&site.name)
            .map(|m| m.ca.clone())
            .unwrap_or_else(|| Arc::from(Vec::<WrappedX509>::new()));
        Some(PeerTls {
            sni,
            ca,
            group_key: self.generation.load(Ordering::Relaxed),
        })
    }

    /// A connector and server name for a raw TCP connection to `addr` of `site`; `None`
    /// for a plain site, `Err` when the site cannot be reached over TLS as configured.
    pub fn tcp_connector(
        &self,
        site: &Site,
        addr: std::net::SocketAddr,
    ) -> Option<Result<(TlsConnector, ServerName<'static>), String>> {
        let name = site.tls_server_name(addr)?;
        let Some(material) = self.sites.load().get(&site.name).cloned() else {
            return Some(Err(format!("no CA loaded for site {}", site.name)));
        };
        Some(
            ServerName::try_from(name)
                .map_err(|e| e.to_string())
                .map(|n| (TlsConnector::from(material.client.clone()), n)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str, dir: &Path) -> Config {
        sitesteer_config::parse(text, "<test>", dir).expect("valid config")
    }

    #[test]
    fn missing_and_bad_files_are_refused_naming_their_key() {
        let dir = std::env::temp_dir().join(format!("sitesteer-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("junk.pem"), "not a certificate").expect("write");
        let text = r#"
[tls]
cert_file = "missing.pem"
key_file = "missing.key"
ca_file = "junk.pem"
[[site]]
name = "a"
[site.endpoints]
http = "127.0.0.1:1001"
[site.tls]
"#;
        let errors = check(&config(text, &dir), "<test>").expect_err("refused");
        let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["tls.cert_file", "tls.ca_file"]);
        assert!(errors.errors[0].message.contains("missing.pem"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
