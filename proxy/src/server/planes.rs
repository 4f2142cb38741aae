//! The data planes: the pingora server with the HTTP (WebSocket, SSE) and TCP proxies, each
//! behind its [`crate::limits`] gate, on plain or TLS listeners (a TLS listener reads a
//! PROXY protocol header before its handshake: [`crate::proxy_protocol`]).

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;
use sitesteer_config::Config;

use super::{Files, Parts, RunOptions};
use crate::http::HttpProxy;
use crate::limits::{HttpGate, TcpGate};
use crate::proxy_protocol::{Listener, PreTls};
use crate::tcp::TcpProxy;
use crate::tls::Tls;
use crate::tools::ToolCatalog;

/// The pingora server with the HTTP and TCP data planes, bootstrapped (an upgrade takes the
/// listening sockets over from the running process here).
pub(super) fn data_planes(parts: &Parts, files: Files, options: RunOptions) -> Server {
    let config = &parts.config;
    let (health, metrics, tls) = (&parts.health, &parts.metrics, &files.tls);
    let mut server = pingora_server(config, options.upgrade);
    if options.upgrade {
        tracing::info!(upgrade_sock = %config.proxy.upgrade_sock.display(), "waiting for the running sitesteer's listening sockets: send it SIGQUIT");
    }
    server.bootstrap();
    let tls_on = |http: bool| {
        config
            .tls
            .listener
            .as_ref()
            .is_some_and(|l| if http { l.http } else { l.tcp })
    };
    if let Some(http) = config.listen.http {
        let tools = Arc::new(ToolCatalog::default());
        let proxy = HttpProxy::new(
            parts.steering.clone(),
            metrics.clone(),
            parts.registry.clone(),
            files.secrets.codec,
            tools,
        )
        .with_tls(tls.clone());
        // The gate enforces [limits] (connections, request heads, slowloris) before pingora.
        let gated = HttpGate::new(
            http_proxy(&server.configuration, proxy),
            health.clone(),
            metrics.clone(),
        );
        let mut service = Service::new("sitesteer http".to_string(), gated);
        listen_on(&mut service, http, tls, tls_on(true));
        pre_tls(&mut service, Listener::Http, parts);
        server.add_service(service);
    }
    if let Some(tcp) = config.listen.tcp {
        let app = TcpProxy::new(
            parts.steering.clone(),
            metrics.clone(),
            parts.registry.clone(),
        )
        .with_tls(tls.clone());
        let gated = TcpGate::new(app, health.clone(), metrics.clone());
        let mut service = Service::new("sitesteer tcp".to_string(), gated);
        listen_on(&mut service, tcp, tls, tls_on(false));
        pre_tls(&mut service, Listener::Tcp, parts);
        server.add_service(service);
    }
    tracing::info!(http = ?config.listen.http, tcp = ?config.listen.tcp, admin = %config.listen.admin, sites = config.sites.len(), "sitesteer running");
    server
}

/// Adds the listener on `addr` to `service`, speaking TLS when `[tls]` says so for it. A plain listener reads
/// the socket without pingora's 64 KiB read buffer per connection: the HTTP gate reads
/// request heads into its own buffer, pingora reads bodies into its body buffer and the TCP
/// proxy copies with its own, so the buffer only added a copy and 64 KiB of memory to every
/// open connection (idle WebSockets and SSE streams included; see BENCHMARKS.md). TLS
/// listeners keep it: rustls reads records in small pieces.
fn listen_on<A: Send + Sync + 'static>(
    service: &mut Service<A>,
    addr: SocketAddr,
    tls: &Tls,
    use_tls: bool,
) {
    match tls.listener_settings().filter(|_| use_tls) {
        Some(settings) => service.add_tls_with_settings(&addr.to_string(), None, settings),
        None => service.add_listener(
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0)),
        ),
    }
}

/// On a TLS listener, a PROXY header comes before the handshake: pingora's pre-TLS hook
/// reads it from the raw socket (a plain listener's gate reads it itself).
fn pre_tls<A: Send + Sync + 'static>(service: &mut Service<A>, listener: Listener, parts: &Parts) {
    let hook = PreTls::new(listener, parts.health.clone(), parts.metrics.clone());
    service.endpoints().set_pre_tls_callback(Arc::new(hook));
}

fn pingora_server(config: &Config, upgrade: bool) -> Server {
    let conf = ServerConf {
        threads: config.proxy.threads,
        max_retries: config.proxy.retries + 1,
        // `restart::watch_shutdown` ends the process as soon as nothing is in flight, at
        // most drain_timeout after the listeners stopped; pingora's own grace period is
        // only a backstop behind it.
        grace_period_seconds: Some(config.proxy.drain_timeout.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: std::env::temp_dir()
            .join(format!("sitesteer-{}.pid", std::process::id()))
            .display()
            .to_string(),
        // The same path for the running process and its successor: from the config.
        upgrade_sock: config.proxy.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    Server::new_with_opt_and_conf(opt, conf)
}
