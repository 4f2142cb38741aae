//! Assembles a running sitesteer: the control runtime (health owner, probes, admin API,
//! operator state, events) and the pingora server (the data planes), from one validated
//! Config.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pingora::proxy::http_proxy_service;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;
use sitesteer_config::Config;
use tokio::runtime::Runtime;

use crate::admin::{self, AdminState};
use crate::availability::Availability;
use crate::conns::{self, Registry};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::http::HttpProxy;
use crate::incidents::{Incident, Incidents};
use crate::metrics::Metrics;
use crate::observe;
use crate::operator::Operator;
use crate::session::SessionCodec;
use crate::state_file::{StateError, StateFile};
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
    /// A file sitesteer needs could not be read or created.
    #[error("cannot use {what} {path}: {source}")]
    File {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin token file is empty.
    #[error("the admin token file {0} is empty")]
    EmptyToken(PathBuf),
    /// The state file is unreadable or corrupt.
    #[error("{0}; fix or move it away (sitesteer never starts without the operator state it promised to keep)")]
    State(#[from] StateError),
    /// The control runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

fn check_bind(addr: SocketAddr, what: &'static str) -> Result<(), RunError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| RunError::Bind { addr, what, source })
}

fn read_token(config: &Config) -> Result<Option<Arc<str>>, RunError> {
    let Some(path) = &config.admin.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| RunError::File {
        what: "the admin token file",
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(RunError::EmptyToken(path.clone()));
    }
    Ok(Some(Arc::from(token)))
}

/// Where the running config came from, for reloads.
pub struct Origin {
    /// The config file; `None` for the demo's built-in config.
    pub path: Option<PathBuf>,
}

/// Starts everything and serves until a signal stops the process. `on_control` runs first on
/// the control runtime (the demo starts its sites there).
pub fn run<F, Fut>(config: Config, origin: Origin, on_control: F) -> Result<(), RunError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    for (addr, what) in [
        (config.listen.http, "listen.http"),
        (config.listen.tcp, "listen.tcp"),
    ] {
        if let Some(addr) = addr {
            check_bind(addr, what)?;
        }
    }
    let token = read_token(&config)?;
    let codec = SessionCodec::load_or_create(&config.proxy.session_key_file).map_err(|source| {
        RunError::File {
            what: "the session key file",
            path: config.proxy.session_key_file.clone(),
            source,
        }
    })?;
    let state_file = StateFile::new(&config.state_file);
    let persisted = state_file.load()?;

    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sitesteer-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    control.block_on(on_control())?;

    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let events = Arc::new(EventLog::new());
    let availability = Arc::new(Availability::default());
    let restored_incidents: Vec<Incident> = persisted
        .incidents
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    let (persist_tx, mut persist_rx) = tokio::sync::mpsc::channel::<Vec<Incident>>(64);
    let incidents = Incidents::new(restored_incidents, persist_tx);
    let observer = observe::observer(metrics.clone(), availability.clone(), incidents.clone());
    let restored = persisted.overrides.clone();
    let health = control.block_on(async {
        sitesteer_probes::start_observed(config.clone(), restored, Some(observer))
    });
    if !persisted.overrides.sites.is_empty() {
        events.push(NewEvent::new(
            EventKind::System,
            "start",
            format!(
                "restored operator overrides of {} site(s) from {}",
                persisted.overrides.sites.len(),
                config.state_file.display()
            ),
        ));
    }
    let operator = Arc::new(Operator::new(
        health.clone(),
        state_file,
        persisted,
        events.clone(),
        metrics.clone(),
        origin.path,
    ));
    let registry = Registry::new(metrics.open_connections.clone());
    let availability_for_incidents = availability.clone();
    let tools = Arc::new(ToolCatalog::default());

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
        operator: operator.clone(),
        events: events.clone(),
        registry: registry.clone(),
        availability,
        incidents: incidents.clone(),
        token,
    };
    control.spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin::router(admin_state)).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    control.spawn(conns::sweep(registry.clone(), health.clone()));
    control.spawn(observe::watch(
        health.clone(),
        events.clone(),
        metrics.clone(),
    ));
    control.block_on(async { crate::webhooks::start(&config.webhooks, &events, &metrics) });
    control.spawn(reload_on_sighup(operator.clone()));
    control.spawn(crate::incidents::watch(
        incidents.clone(),
        health.clone(),
        metrics.clone(),
        events.clone(),
        availability_for_incidents,
    ));
    let persister = operator.clone();
    control.spawn(async move {
        while let Some(mut list) = persist_rx.recv().await {
            // Only the newest list matters.
            while let Ok(newer) = persist_rx.try_recv() {
                list = newer;
            }
            let values = list
                .iter()
                .filter_map(|i| serde_json::to_value(i).ok())
                .collect();
            if let Err(e) = persister.save_incidents(values).await {
                tracing::warn!(error = %e, "could not persist incidents");
            }
        }
    });

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
    tracing::info!(http = ?config.listen.http, tcp = ?config.listen.tcp, admin = %config.listen.admin, sites = config.sites.len(), "sitesteer running");
    keep_alive(control);
    server.run_forever();
}

/// `SIGHUP` reloads the config file, like `POST /api/v1/reload`.
async fn reload_on_sighup(operator: Arc<Operator>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin API");
        return;
    };
    while hup.recv().await.is_some() {
        match operator.reload("sighup").await {
            Ok(report) => tracing::info!(generation = report.generation, "reloaded on SIGHUP"),
            Err(e) => tracing::warn!(error = %e, "reload on SIGHUP refused"),
        }
    }
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
