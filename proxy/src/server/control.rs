//! The start-up of the control plane's parts: health (the owner and the probes on the
//! health runtime, with the restored operator state and incidents), then on the control
//! runtime the operator and the cluster, the admin listener, DNS (whose listeners run on
//! threads of their own), and the background tasks (sweeps, events, webhooks, `SIGHUP`,
//! incidents, drills).

use std::sync::Arc;

use sitesteer_config::Config;
use sitesteer_probes::Hooks;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use super::{Files, Parts, RunError, RunOptions};
use crate::admin::{self, AdminState};
use crate::availability::Availability;
use crate::cluster::Cluster;
use crate::conns::{self, Registry};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::incidents::{Incident, Incidents};
use crate::metrics::Metrics;
use crate::observe;
use crate::operator::fleet::FleetStore;
use crate::operator::Operator;
use crate::secrets::AdminToken;
use crate::server::Origin;
use crate::state_file::{PersistedState, SavedIncidents, StateFile};
use crate::steer::{LoadTable, PublishedCell, SteerMetrics, Steering};

/// Starts the health owner and the probes on `health` (their own runtime) on the restored
/// operator state: with `[cluster]` and etcd reachable, the fleet's overrides replace the
/// local ones before any traffic is steered; without it, the state file stands (fail
/// static). Saved incidents are restored; those that cannot be read are reported and kept.
pub(super) fn start_health(
    control: &Runtime,
    health: &Runtime,
    config: &Arc<Config>,
    state_file: &StateFile,
    persisted: &mut PersistedState,
) -> Result<(Parts, mpsc::Receiver<Vec<Incident>>), RunError> {
    let metrics = Arc::new(Metrics::new());
    let events = Arc::new(EventLog::new());
    let cluster =
        Cluster::new(config, events.clone(), metrics.clone()).map_err(RunError::Cluster)?;
    if let Some(cluster) = &cluster {
        control.block_on(cluster.startup(persisted, state_file));
    }
    report_unreadable(&persisted.incidents, state_file, &events);
    let availability = Arc::new(Availability::default());
    let (persist_tx, persist_rx) = mpsc::channel::<Vec<Incident>>(64);
    let max_id = persisted.incidents.max_id();
    let incidents = Incidents::new(persisted.incidents.read.clone(), max_id, persist_tx);
    let observer = observe::observer(metrics.clone(), availability.clone(), incidents.clone());
    let restored = persisted.overrides.clone();
    let published = Arc::new(PublishedCell::new(LoadTable::new(
        metrics.site_in_flight.clone(),
        metrics.shed.clone(),
    )));
    let hooks = Hooks {
        observer: Some(observer),
        on_publish: Some(published.hook(metrics.panic_mode.clone())),
    };
    // Everything the owner spawns (the probes, again on each reload) lands on its runtime.
    let health =
        health.block_on(async { sitesteer_probes::start(config.clone(), restored, hooks) });
    let steering = Arc::new(Steering::new(
        published,
        health.clone(),
        SteerMetrics {
            retries: metrics.retries.clone(),
            panic_decisions: metrics.panic_decisions.clone(),
            unroutable: metrics.unroutable.clone(),
            hedges: metrics.hedges.clone(),
            rescues: metrics.rescues.clone(),
            retries_refused: metrics.retries_refused.clone(),
        },
    ));
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
    let parts = Parts {
        config: config.clone(),
        health,
        steering,
        registry: Registry::new(
            metrics.open_connections.clone(),
            metrics.idle_closed.clone(),
        ),
        metrics,
        events,
        availability,
        incidents,
        cluster,
    };
    Ok((parts, persist_rx))
}

/// Says, in the log and the events, how many saved incidents could not be read and why;
/// they stay in the state file.
fn report_unreadable(saved: &SavedIncidents, state_file: &StateFile, events: &EventLog) {
    let Some(first) = saved.unreadable.first() else {
        return;
    };
    let count = saved.unreadable.len();
    let path = state_file.path().display();
    tracing::warn!(count, %path, error = %first.error, "saved incidents could not be read; they are kept in the state file");
    events.push(NewEvent::new(
        EventKind::System,
        "start",
        format!(
            "{count} saved incident(s) in {path} could not be read and are kept in the file as they are; first: {}",
            first.error
        ),
    ));
}

/// The operator over the restored state, with the TLS material for reloads and, with
/// `[cluster]`, the fleet store (whose background task starts here).
pub(super) fn start_operator(
    control: &Runtime,
    parts: &Parts,
    files: &Files,
    persisted: PersistedState,
    origin: Origin,
) -> Arc<Operator> {
    let fleet = parts.cluster.clone().map(|c| c as Arc<dyn FleetStore>);
    let operator = Arc::new(
        Operator::new(
            parts.health.clone(),
            files.state_file.clone(),
            persisted,
            parts.events.clone(),
            parts.metrics.clone(),
            origin.path,
        )
        .with_fleet(fleet)
        .with_tls(files.tls.clone())
        .with_secrets(files.secrets.clone()),
    );
    if let Some(cluster) = parts.cluster.clone() {
        control.spawn(cluster.run(operator.clone(), parts.health.clone()));
    }
    operator
}

/// Writes the incidents list to the state file after each change, the newest list only.
pub(super) async fn persist_incidents(
    operator: Arc<Operator>,
    mut lists: mpsc::Receiver<Vec<Incident>>,
) {
    while let Some(mut list) = lists.recv().await {
        while let Ok(newer) = lists.try_recv() {
            list = newer;
        }
        if let Err(e) = operator.save_incidents(list).await {
            tracing::warn!(error = %e, "could not persist incidents");
        }
    }
}

/// Binds and serves the admin listener. The answer closes it: when the listening sockets go
/// to a new process, that one has bound the same admin port (SO_REUSEPORT) and takes the
/// admin traffic from then on.
pub(super) fn start_admin(
    control: &Runtime,
    parts: &Parts,
    operator: &Arc<Operator>,
    token: AdminToken,
    options: RunOptions,
) -> Result<watch::Sender<bool>, RunError> {
    let addr = parts.config.listen.admin;
    let listener = control
        .block_on(async { crate::restart::bind_admin(addr, options.upgrade) })
        .map_err(|source| RunError::Bind {
            addr,
            what: "listen.admin",
            source,
        })?;
    let state = AdminState {
        health: parts.health.clone(),
        metrics: parts.metrics.clone(),
        operator: operator.clone(),
        cluster: parts.cluster.clone(),
        events: parts.events.clone(),
        registry: parts.registry.clone(),
        availability: parts.availability.clone(),
        incidents: parts.incidents.clone(),
        token,
    };
    let (stop, mut stopped) = watch::channel(false);
    control.spawn(async move {
        let stopped = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let served = axum::serve(listener, admin::router(state))
            .with_graceful_shutdown(stopped)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(stop)
}

/// Starts the DNS listener (`listen.dns`). An upgrade binds it in the background once the
/// old process, which answers DNS until it exits, has let go.
pub(super) fn start_dns(
    control: &Runtime,
    parts: &Parts,
    options: RunOptions,
) -> Result<(), RunError> {
    let Some(addr) = parts.config.listen.dns else {
        return Ok(());
    };
    let (health, metrics, events) = (
        parts.health.clone(),
        parts.metrics.clone(),
        parts.events.clone(),
    );
    if options.upgrade {
        let limit = parts.config.proxy.drain_timeout + std::time::Duration::from_secs(15);
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
        return Ok(());
    }
    let started = control.block_on(crate::dns::start(addr, health, metrics, events));
    started.map(drop).map_err(|e| match e {
        crate::dns::StartError::Bind { addr, source } => RunError::Bind {
            addr,
            what: "listen.dns",
            source,
        },
        other => RunError::Dns(other.to_string()),
    })
}

/// The control plane's background tasks: closing connections of sites taken out, the
/// events of state changes, webhooks, reload on `SIGHUP`, incidents, scheduled drills.
pub(super) fn start_background(
    control: &Runtime,
    parts: &Parts,
    operator: &Arc<Operator>,
    token: AdminToken,
) {
    let (health, metrics, events) = (&parts.health, &parts.metrics, &parts.events);
    control.spawn(conns::sweep(parts.registry.clone(), health.clone()));
    control.spawn(observe::watch(
        health.clone(),
        events.clone(),
        metrics.clone(),
        parts.availability.clone(),
    ));
    control.block_on(async { crate::webhooks::start(&parts.config.webhooks, events, metrics) });
    control.spawn(reload_on_sighup(operator.clone()));
    control.spawn(crate::incidents::watch(
        parts.incidents.clone(),
        health.clone(),
        metrics.clone(),
        events.clone(),
        parts.availability.clone(),
    ));
    let _guard = control.enter();
    crate::drill::schedule::start(&parts.config.drills, parts.config.listen.admin, token);
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
