//! Assembles a running sitesteer: the control runtime (health owner, probes, admin API) and
//! the pingora server (the data planes), from one validated Config.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pingora::proxy::http_proxy_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use sitesteer_config::Config;
use sitesteer_probes::Overrides;
use tokio::runtime::Runtime;

use pingora::services::listening::Service;

use crate::admin::{self, AdminState};
use crate::conns::{self, Registry};
use crate::http::HttpProxy;
use crate::metrics::Metrics;
use crate::session::SessionCodec;
use crate::tcp::TcpProxy;
use crate::tools::ToolCatalog;

/// Why sitesteer could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The session key file could not be read or created.
    #[error("cannot use the session key file {path}: {source}")]
    SessionKey {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The control runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

fn check_bind(addr: SocketAddr, what: &'static str) -> Result<(), RunError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| RunError::Bind { addr, what, source })
}

/// Starts everything and serves until a signal stops the process. `on_control` runs first on
/// the control runtime (the demo starts its sites there).
pub fn run<F, Fut>(config: Config, on_control: F) -> Result<(), RunError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    if let Some(http) = config.listen.http {
        check_bind(http, "listen.http")?;
    }
    if let Some(tcp) = config.listen.tcp {
        check_bind(tcp, "listen.tcp")?;
    }
    let codec = SessionCodec::load_or_create(&config.proxy.session_key_file).map_err(|source| {
        RunError::SessionKey {
            path: config.proxy.session_key_file.clone(),
            source,
        }
    })?;
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sitesteer-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    control.block_on(on_control())?;

    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let health =
        control.block_on(async { sitesteer_probes::start(config.clone(), Overrides::default()) });

    let admin_listener = control
        .block_on(tokio::net::TcpListener::bind(config.listen.admin))
        .map_err(|source| RunError::Bind {
            addr: config.listen.admin,
            what: "listen.admin",
            source,
        })?;
    let admin_state = AdminState {
        health: health.clone(),
        metrics: metrics.clone(),
    };
    control.spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin::router(admin_state)).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });

    let registry = Registry::new(metrics.open_connections.clone());
    control.spawn(conns::sweep(registry.clone(), health.clone()));
    let tools = Arc::new(ToolCatalog::default());

    let mut server = pingora_server(&config);
    server.bootstrap();
    if let Some(http) = config.listen.http {
        let proxy = HttpProxy::new(
            health.clone(),
            metrics.clone(),
            registry.clone(),
            codec,
            tools,
        );
        let mut service = http_proxy_service(&server.configuration, proxy);
        service.add_tcp(&http.to_string());
        server.add_service(service);
    }
    if let Some(tcp) = config.listen.tcp {
        let app = TcpProxy::new(health.clone(), metrics.clone(), registry.clone());
        let mut service = Service::new("sitesteer tcp".to_string(), app);
        service.add_tcp(&tcp.to_string());
        server.add_service(service);
    }
    tracing::info!(http = ?config.listen.http, admin = %config.listen.admin, sites = config.sites.len(), "sitesteer running");
    keep_alive(control);
    server.run_forever();
}

/// The control runtime lives as long as the process.
fn keep_alive(runtime: Runtime) {
    std::mem::forget(runtime);
}

fn pingora_server(config: &Config) -> Server {
    let conf = ServerConf {
        threads: config.proxy.threads,
        max_retries: config.proxy.retries + 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(config.proxy.drain_timeout.as_secs().max(1)),
        pid_file: std::env::temp_dir()
            .join(format!("sitesteer-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: std::env::temp_dir()
            .join(format!("sitesteer-{}.upgrade.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    Server::new_with_opt_and_conf(Opt::default(), conf)
}
