//! Assembles a running sitesteer: the control runtime (health owner, probes, admin API,
//! operator state, events) and the pingora server (the data planes), from one validated
//! Config.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::http_proxy;
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
use crate::limits::{HttpGate, TcpGate};
use crate::metrics::Metrics;
use crate::observe;
use crate::operator::fleet::FleetStore;
use crate::operator::Operator;
use crate::session::SessionCodec;
use crate::state_file::{StateError, StateFile};
use crate::tcp::TcpProxy;
use crate::tls::Tls;
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
    /// The DNS zone or its GeoIP database could not be loaded.
    #[error("cannot serve DNS: {0}")]
    Dns(String),
    /// `[cluster]` could not be set up (TLS or password files).
    #[error("cannot join the cluster: {0}")]
    Cluster(String),
    /// The control runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A TLS file named by the config is missing or wrong.
    #[error("cannot use the TLS files: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Tls(Vec<sitesteer_config::ConfigError>),
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

/// How [`run_with`] starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running sitesteer with the same config
    /// (`sitesteer run --upgrade`; the old process hands them over on `SIGQUIT`).
    pub upgrade: bool,
}

/// Starts everything and serves until a signal stops the process. `on_control` runs first on
/// the control runtime (the demo starts its sites there).
pub fn run<F, Fut>(config: Config, origin: Origin, on_control: F) -> Result<(), RunError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    run_with(config, origin, RunOptions::default(), on_control)
}

/// [`run`] with options (see `restart` for upgrades and draining).
pub fn run_with<F, Fut>(
    config: Config,
    origin: Origin,
    options: RunOptions,
    on_control: F,
) -> Result<(), RunError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    // An upgrade inherits the listening sockets, which the old process still holds.
    for (addr, what) in [
        (config.listen.http, "listen.http"),
        (config.listen.tcp, "listen.tcp"),
    ] {
        if let (Some(addr), false) = (addr, options.upgrade) {
            check_bind(addr, what)?;
        }
    }
    let tls = Arc::new(Tls::new(&config).map_err(RunError::Tls)?);
    let token = read_token(&config)?;
    let drill_token = token.clone();
    let codec = SessionCodec::load_or_create(&config.proxy.session_key_file).map_err(|source| {
        RunError::File {
            what: "the session key file",
            path: config.proxy.session_key_file.clone(),
            source,
        }
    })?;
    let state_file = StateFile::new(&config.state_file);
    let mut persisted = state_file.load()?;

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
    let cluster = crate::cluster::Cluster::new(&config, events.clone(), metrics.clone())
        .map_err(RunError::Cluster)?;
    if let Some(cluster) = &cluster {
        // With etcd reachable the fleet's overrides replace the local ones before any
        // traffic is steered; without it the state file stands (fail static).
        control.block_on(cluster.startup(&mut persisted, &state_file));
    }
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
    let operator = Arc::new(
        Operator::new(
            health.clone(),
            state_file,
            persisted,
            events.clone(),
            metrics.clone(),
            origin.path,
        )
        .with_fleet(cluster.clone().map(|c| c as Arc<dyn FleetStore>))
        .with_tls(tls.clone()),
    );
    if let Some(cluster) = cluster.clone() {
        control.spawn(cluster.run(operator.clone(), health.clone()));
    }
    let registry = Registry::new(metrics.open_connections.clone());
    let availability_for_incidents = availability.clone();
    let tools = Arc::new(ToolCatalog::default());

    let admin_listener = control
        .block_on(async { crate::restart::bind_admin(config.listen.admin, options.upgrade) })
        .map_err(|source| RunError::Bind {
            addr: config.listen.admin,
            what: "listen.admin",
            source,
        })?;
    let admin_state = AdminState {
        health: health.clone(),
        metrics: metrics.clone(),
        operator: operator.clone(),
        cluster,
        events: events.clone(),
        registry: registry.clone(),
        availability,
        incidents: incidents.clone(),
        token,
    };
    // Closed when the listening sockets go to a new process, which has bound the same
    // admin port (SO_REUSEPORT) and takes the admin traffic from then on.
    let (admin_stop, mut admin_stopped) = tokio::sync::watch::channel(false);
    control.spawn(async move {
        let stopped = async move {
            let _ = admin_stopped.wait_for(|stop| *stop).await;
        };
        let served = axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(stopped)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    if let (Some(addr), true) = (config.listen.dns, options.upgrade) {
        // The old process answers DNS until it exits; bind once it has let go.
        let limit = config.proxy.drain_timeout + std::time::Duration::from_secs(15);
        let (health, metrics, events) = (health.clone(), metrics.clone(), events.clone());
        control.spawn(async move {
            let started = crate::restart::retry_bind(limit, || {
                crate::dns::start(addr, health.clone(), metrics.clone(), events.clone())
            })
            .await;
            match started {
                Ok(_) => tracing::info!(%addr, "DNS listener taken over"),
                Err(e) => tracing::error!(%addr, error = %e, "cannot take over the DNS listener"),
            }
        });
    } else if let Some(addr) = config.listen.dns {
        let started = control.block_on(crate::dns::start(
            addr,
            health.clone(),
            metrics.clone(),
            events.clone(),
        ));
        started.map_err(|e| match e {
            crate::dns::StartError::Bind { addr, source } => RunError::Bind {
                addr,
                what: "listen.dns",
                source,
            },
            other => RunError::Dns(other.to_string()),
        })?;
    }
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

    {
        let _guard = control.enter();
        crate::drill::schedule::start(&config.drills, config.listen.admin, drill_token);
    }

    let mut server = pingora_server(&config, options.upgrade);
    if options.upgrade {
        tracing::info!(upgrade_sock = %config.proxy.upgrade_sock.display(), "waiting for the running sitesteer's listening sockets: send it SIGQUIT");
    }
    server.bootstrap();
    if let Some(http) = config.listen.http {
        let proxy = HttpProxy::new(
            health.clone(),
            metrics.clone(),
            registry.clone(),
            codec,
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
        listen_on(
            &mut service,
            http,
            &tls,
            config.tls.listener.as_ref().is_some_and(|l| l.http),
        );
        server.add_service(service);
    }
    if let Some(tcp) = config.listen.tcp {
        let app =
            TcpProxy::new(health.clone(), metrics.clone(), registry.clone()).with_tls(tls.clone());
        let gated = TcpGate::new(app, health.clone(), metrics.clone());
        let mut service = Service::new("sitesteer tcp".to_string(), gated);
        listen_on(
            &mut service,
            tcp,
            &tls,
            config.tls.listener.as_ref().is_some_and(|l| l.tcp),
        );
        server.add_service(service);
    }
    tracing::info!(http = ?config.listen.http, tcp = ?config.listen.tcp, admin = %config.listen.admin, sites = config.sites.len(), "sitesteer running");
    control.spawn(crate::restart::watch_shutdown(
        server.watch_execution_phase(),
        admin_stop,
        config.proxy.drain_timeout,
    ));
    keep_alive(control);
    server.run_forever();
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
