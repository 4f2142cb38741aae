//! Assembles a running sitesteer: the health runtime (the health owner and the probes, on a
//! thread of their own so that no listener's load can delay them), the control runtime
//! (admin API, operator state, events, state-file writes; `control`), the DNS listener's
//! own threads, and the pingora server (the data planes; `planes`), from one validated
//! Config. [`run_with`] reads as the list of parts, in start order.

mod control;
mod planes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sitesteer_config::Config;
use sitesteer_probes::HealthHandle;

use crate::steer::Steering;
use tokio::runtime::Runtime;

use crate::availability::Availability;
use crate::cluster::Cluster;
use crate::conns::Registry;
use crate::events::EventLog;
use crate::incidents::Incidents;
use crate::metrics::Metrics;
use crate::secrets::Secrets;
use crate::state_file::{PersistedState, StateError, StateFile};
use crate::tls::Tls;
use control::{
    persist_incidents, start_admin, start_background, start_dns, start_health, start_operator,
};
use planes::data_planes;

/// Why sitesteer could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
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
    /// A secret file (the admin token, the session keys) cannot be used.
    #[error("{0}")]
    Secret(#[from] crate::secrets::SecretError),
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

/// Where the running config came from, for reloads.
pub(crate) struct Origin {
    /// The config file; `None` for the demo's built-in config.
    pub path: Option<PathBuf>,
}

/// How [`run_with`] starts.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunOptions {
    /// Take the listening sockets over from a running sitesteer with the same config
    /// (`sitesteer run --upgrade`; the old process hands them over on `SIGQUIT`).
    pub upgrade: bool,
}

/// Starts everything and serves until a signal stops the process. `on_control` runs first on
/// the control runtime (the demo starts its sites there).
pub(crate) fn run<F, Fut>(config: Config, origin: Origin, on_control: F) -> Result<(), RunError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    run_with(config, origin, RunOptions::default(), on_control)
}

/// [`run`] with options (see `restart` for upgrades and draining). Each part starts in
/// turn: files and keys, the control runtime, health, the operator (and the cluster), the
/// admin listener, DNS, the background tasks, the data planes; then signals are watched and
/// pingora serves until the process stops.
pub(crate) fn run_with<F, Fut>(
    config: Config,
    origin: Origin,
    options: RunOptions,
    on_control: F,
) -> Result<(), RunError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    let (files, mut persisted) = Files::open(&config, options.upgrade)?;
    let control = control_runtime()?;
    control.block_on(on_control())?;
    let config = Arc::new(config);
    let health = health_runtime()?;
    let (parts, persist_rx) = start_health(
        &control,
        &health,
        &config,
        &files.state_file,
        &mut persisted,
    )?;
    let operator = start_operator(&control, &parts, &files, persisted, origin);
    control.spawn(persist_incidents(operator.clone(), persist_rx));
    let admin_stop = start_admin(
        &control,
        &parts,
        &operator,
        files.secrets.token.clone(),
        options,
    )?;
    start_dns(&control, &parts, options)?;
    start_background(&control, &parts, &operator, files.secrets.token.clone());
    let server = data_planes(&parts, files, options);
    control.spawn(crate::restart::watch_shutdown(
        server.watch_execution_phase(),
        admin_stop,
        config.proxy.drain_timeout,
    ));
    keep_alive(control);
    keep_alive(health);
    server.run_forever();
}

/// What sitesteer reads before anything runs: the TLS files, the admin token, the session
/// key and the state file. The listeners are checked free (an upgrade inherits them).
struct Files {
    tls: Arc<Tls>,
    secrets: Secrets,
    state_file: StateFile,
}

impl Files {
    /// Reads them all; also the operator state from the state file.
    fn open(config: &Config, upgrade: bool) -> Result<(Self, PersistedState), RunError> {
        // An upgrade inherits the listening sockets, which the old process still holds.
        for (addr, what) in [
            (config.listen.http, "listen.http"),
            (config.listen.tcp, "listen.tcp"),
        ] {
            if let (Some(addr), false) = (addr, upgrade) {
                check_bind(addr, what)?;
            }
        }
        let tls = Arc::new(Tls::new(config).map_err(RunError::Tls)?);
        let secrets = Secrets::open(config)?;
        let state_file = StateFile::new(&config.state_file);
        let persisted = state_file.load()?;
        for note in persisted.not_understood() {
            // Another version's state: read, kept and written back, never refused.
            tracing::warn!(path = %state_file.path().display(), "state file {note}");
        }
        let files = Self {
            tls,
            secrets,
            state_file,
        };
        Ok((files, persisted))
    }
}

/// The runtime of the control plane (admin, operator, events, state-file writes, the
/// cluster, webhooks): one thread, apart from pingora's data-plane threads.
fn control_runtime() -> Result<Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sitesteer-control")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}

/// The runtime of the health owner and the probes, and nothing else: a burst of admin
/// calls, a DNS flood or a slow state-file write on the control runtime never delays a
/// probe's timer or its measured latency, nor the owner's folding and publishing. One
/// thread: probes are light, and a second would only compete for the same cores.
fn health_runtime() -> Result<Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sitesteer-health")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}

/// The handles the parts of a running sitesteer share.
struct Parts {
    config: Arc<Config>,
    health: HealthHandle,
    /// What the data planes steer by (filled by the health owner's publish hook).
    steering: Arc<Steering>,
    metrics: Arc<Metrics>,
    events: Arc<EventLog>,
    availability: Arc<Availability>,
    incidents: Arc<Incidents>,
    registry: Arc<Registry>,
    cluster: Option<Arc<Cluster>>,
}

/// A runtime lives as long as the process.
fn keep_alive(runtime: Runtime) {
    std::mem::forget(runtime);
}
