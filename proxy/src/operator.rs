//! Operator intent: weight, drain, maintenance, failover and reload. Every change is
//! validated, written to the state file, applied to the health owner and recorded as an
//! event, in that order, before the caller is answered. One lock serialises writers.

use std::path::PathBuf;
use std::sync::Arc;

use sitesteer_config::{Config, ConfigErrors, MAX_WEIGHT};
use sitesteer_probes::{HealthHandle, Overrides, SiteView};
use tokio::sync::Mutex;

use crate::cluster::{self, ChangeNote, Cluster, Fetched, StoreError};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::Metrics;
use crate::state_file::{PersistedState, StateError, StateFile};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No site of that name in the running config.
    #[error("unknown site {0:?}")]
    UnknownSite(String),
    /// A value out of range or a contradictory request.
    #[error("{0}")]
    Invalid(String),
    /// The state file could not be written: nothing changed.
    #[error("could not persist the change, so it was not applied: {0}")]
    Persist(#[from] StateError),
    /// The new config is invalid: the running one stays.
    #[error("the new config is invalid; the running config stays")]
    Reload(ConfigErrors),
    /// sitesteer was started without a config file to reload.
    #[error("there is no config file to reload (started by `sitesteer demo`?)")]
    NoConfigFile,
    /// The health owner is gone (shutting down).
    #[error("sitesteer is shutting down")]
    ShuttingDown,
    /// `[cluster]`: etcd cannot be reached, so the fleet cannot take the change.
    #[error("the cluster store is unreachable; the change was not applied")]
    ClusterUnavailable,
    /// `[cluster]`: etcd did not confirm the change in time.
    #[error("the cluster store did not confirm the change in time ({0}); it may or may not have been applied: check `sitesteer ctl sites`")]
    ClusterUncertain(String),
    /// `[cluster]`: etcd refused the change.
    #[error("the cluster store refused the change, so it was not applied: {0}")]
    ClusterRefused(String),
    /// `[cluster]`: concurrent changes kept coming first.
    #[error("the change kept colliding with concurrent changes from other instances and was not applied; try again")]
    ClusterConflict,
}

/// Attempts of one write through the cluster store when other writes keep coming first.
const CLUSTER_ATTEMPTS: usize = 16;

/// What a successful reload changed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadReport {
    /// The new config generation.
    pub generation: u64,
    /// Sites in the new config.
    pub sites: usize,
    /// Sites removed (their overrides are dropped).
    pub removed: Vec<String>,
    /// Sites added.
    pub added: Vec<String>,
    /// Changes that need a restart to take effect (listeners, threads).
    pub needs_restart: Vec<String>,
}

/// The operator's entry point, shared by the admin API and signals.
pub struct Operator {
    health: HealthHandle,
    state_file: StateFile,
    persisted: Mutex<PersistedState>,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    cluster: Option<Arc<Cluster>>,
    tls: Option<Arc<crate::tls::Tls>>,
    started_with: Arc<Config>,
}

impl Operator {
    /// An operator over `health`, persisting to `state_file`, starting from `persisted`.
    pub fn new(
        health: HealthHandle,
        state_file: StateFile,
        persisted: PersistedState,
        events: Arc<EventLog>,
        metrics: Arc<Metrics>,
        config_path: Option<PathBuf>,
    ) -> Self {
        Self {
            started_with: health.snapshot().config.clone(),
            health,
            state_file,
            persisted: Mutex::new(persisted),
            events,
            metrics,
            config_path,
            cluster: None,
            tls: None,
        }
    }

    /// Reloads read the TLS files again and install them here (`[tls]`, `[site.tls]`).
    pub fn with_tls(mut self, tls: Arc<crate::tls::Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Routes overrides through the fleet's cluster store (`[cluster]`).
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The fleet membership, with `[cluster]`.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The overrides in force.
    pub async fn overrides(&self) -> Overrides {
        self.persisted.lock().await.overrides.clone()
    }

    /// Persists the incidents list (called by the incident recorder after each change).
    pub async fn save_incidents(&self, incidents: Vec<serde_json::Value>) -> Result<(), OpError> {
        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        next.incidents = incidents;
        self.state_file.save(&next)?;
        *persisted = next;
        Ok(())
    }

    /// The events log.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    fn check_site(&self, name: &str) -> Result<(), OpError> {
        let snap = self.health.snapshot();
        if snap.config.site(name).is_none() {
            return Err(OpError::UnknownSite(name.to_string()));
        }
        Ok(())
    }

    fn view(&self, name: &str) -> Option<SiteView> {
        self.health
            .snapshot()
            .sites
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }

    /// Persists `change` of the overrides, applies it, and records `event`. With
    /// `[cluster]`, a change of the fleet's overrides goes through the cluster store first.
    async fn apply(&self, change: impl Fn(&mut Overrides), event: NewEvent) -> Result<(), OpError> {
        if let Some(cluster) = &self.cluster {
            return self.apply_clustered(cluster, change, event).await;
        }
        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        change(&mut next.overrides);
        next.overrides.compact();
        self.state_file.save(&next)?;
        *persisted = next;
        self.health
            .set_overrides(persisted.overrides.clone())
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        drop(persisted);
        self.events.push(event);
        Ok(())
    }

    /// The clustered write: a compare-and-put on the key's revision, redone on the fresh
    /// value when another instance wrote first (bounded); then applied here like a local
    /// change. A change of local-only fields (drill faults) stays local.
    async fn apply_clustered(
        &self,
        cluster: &Cluster,
        change: impl Fn(&mut Overrides),
        event: NewEvent,
    ) -> Result<(), OpError> {
        let mut persisted = self.persisted.lock().await;
        let local = persisted.overrides.clone();
        let mut wanted = local.clone();
        change(&mut wanted);
        wanted.compact();
        if cluster::shared(&wanted) != cluster::shared(&local) {
            if !cluster.is_connected() {
                return Err(OpError::ClusterUnavailable);
            }
            let (_, mut base) = cluster.revisions();
            let mut fleet = cluster::shared(&local);
            let note = ChangeNote::of(&event, cluster.instance());
            let mut stored = None;
            for attempt in 0..CLUSTER_ATTEMPTS {
                let mut next = fleet.clone();
                change(&mut next);
                next.compact();
                match cluster.store(&next, base, note.clone()).await {
                    Ok(revision) => {
                        tracing::debug!(revision, attempt, "cluster write stored");
                        cluster.set_revisions(revision, revision);
                        stored = Some(next);
                        break;
                    }
                    Err(StoreError::Conflict(fresh)) => {
                        tracing::info!(
                            attempt,
                            revision = fresh.mod_revision,
                            "cluster write collided; redoing it on the fresh value"
                        );
                        if let Some(note) = fresh
                            .note
                            .as_ref()
                            .filter(|n| n.instance != cluster.instance())
                        {
                            self.events.push(note.event());
                        }
                        fleet = fresh.overrides;
                        base = fresh.mod_revision;
                    }
                    Err(StoreError::Unreachable(_)) => return Err(OpError::ClusterUnavailable),
                    Err(StoreError::Uncertain(e)) => return Err(OpError::ClusterUncertain(e)),
                    Err(StoreError::Refused(e)) => return Err(OpError::ClusterRefused(e)),
                }
            }
            let fleet = stored.ok_or(OpError::ClusterConflict)?;
            wanted = cluster::merge(&fleet, &local);
        }
        let mut next = persisted.clone();
        next.overrides = wanted;
        if let Err(e) = self.state_file.save(&next) {
            // The fleet has the change already: apply it here too and say the file lags.
            tracing::warn!(error = %e, "could not write the state file");
            self.events.push(NewEvent::new(
                EventKind::System,
                "cluster",
                format!("applied a change of the fleet, but the local state file could not be written: {e}"),
            ));
        }
        *persisted = next;
        self.health
            .set_overrides(persisted.overrides.clone())
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        drop(persisted);
        self.events.push(event);
        Ok(())
    }

    /// Applies the fleet's overrides as read from the cluster store, like a local change:
    /// health owner, state file, event. A watched change no newer than the one in force is
    /// ignored (it is this instance's own write, already applied). A full `read` is always
    /// taken: it is the store's truth at its revision, even when the store went back in time
    /// (a restored etcd); should a local write have landed after the read, the watch, which
    /// starts at the read's revision, brings it back at once.
    pub async fn adopt_cluster(&self, fetched: &Fetched, read: bool) -> Result<bool, OpError> {
        let Some(cluster) = &self.cluster else {
            return Ok(false);
        };
        let mut persisted = self.persisted.lock().await;
        let (applied, _) = cluster.revisions();
        if !read && fetched.mod_revision <= applied {
            return Ok(false);
        }
        let (change_revision, base) = if fetched.mod_revision == 0 {
            (fetched.revision, 0)
        } else {
            (fetched.mod_revision, fetched.mod_revision)
        };
        cluster.set_revisions(change_revision, base);
        let merged = cluster::merge(&fetched.overrides, &persisted.overrides);
        if merged == persisted.overrides {
            return Ok(false);
        }
        let mut next = persisted.clone();
        next.overrides = merged;
        if let Err(e) = self.state_file.save(&next) {
            tracing::warn!(error = %e, "could not write the fleet's overrides to the state file");
            self.events.push(NewEvent::new(
                EventKind::System,
                "cluster",
                format!("applied a change of the fleet, but the local state file could not be written: {e}"),
            ));
        }
        *persisted = next;
        self.health
            .set_overrides(persisted.overrides.clone())
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        drop(persisted);
        self.metrics.cluster_updates.inc();
        let note = fetched
            .note
            .as_ref()
            .filter(|n| !read && n.instance != cluster.instance());
        self.events.push(match note {
            Some(note) => note.event(),
            None => NewEvent::new(
                EventKind::System,
                "cluster",
                format!("applied the fleet's operator state at revision {change_revision}"),
            ),
        });
        Ok(true)
    }

    /// Sets a site's weight at runtime.
    pub async fn set_weight(
        &self,
        site: &str,
        weight: i64,
        actor: &str,
    ) -> Result<Option<SiteView>, OpError> {
        self.check_site(site)?;
        let weight = u32::try_from(weight)
            .ok()
            .filter(|w| *w <= MAX_WEIGHT)
            .ok_or_else(|| {
                OpError::Invalid(format!(
                    "weight must be between 0 and {MAX_WEIGHT}, got {weight}"
                ))
            })?;
        let before = self
            .view(site)
            .map(|v| v.effective_weight.to_string())
            .unwrap_or_default();
        let event = NewEvent::new(
            EventKind::Operator,
            actor,
            format!("weight set to {weight}"),
        )
        .site(site)
        .change(before, weight.to_string());
        self.apply(|o| o.entry(site).weight = Some(weight), event)
            .await?;
        Ok(self.view(site))
    }

    /// Drains (no new traffic) or undrains a site. Undraining also ends a failover away from
    /// it, and the preference that failover set.
    pub async fn drain(
        &self,
        site: &str,
        on: bool,
        actor: &str,
    ) -> Result<Option<SiteView>, OpError> {
        self.check_site(site)?;
        let (from, to, reason) = if on {
            ("serving", "drained", "drained")
        } else {
            ("drained", "serving", "undrained")
        };
        let event = NewEvent::new(EventKind::Operator, actor, reason)
            .site(site)
            .change(from, to);
        self.apply(
            |o| {
                let was_failed_over = o.get(site).is_some_and(|s| s.failed_over);
                let entry = o.entry(site);
                entry.drained = on;
                if !on {
                    entry.failed_over = false;
                }
                if !on && was_failed_over && !o.sites.values().any(|s| s.failed_over) {
                    for s in o.sites.values_mut() {
                        s.preferred = false;
                    }
                }
            },
            event,
        )
        .await?;
        Ok(self.view(site))
    }

    /// Takes a site into or out of maintenance (closes its connections).
    pub async fn maintenance(
        &self,
        site: &str,
        on: bool,
        actor: &str,
    ) -> Result<Option<SiteView>, OpError> {
        self.check_site(site)?;
        let (from, to) = if on {
            ("serving", "maintenance")
        } else {
            ("maintenance", "serving")
        };
        let reason = if on {
            "maintenance on"
        } else {
            "maintenance off"
        };
        let event = NewEvent::new(EventKind::Operator, actor, reason)
            .site(site)
            .change(from, to);
        self.apply(|o| o.entry(site).maintenance = on, event)
            .await?;
        Ok(self.view(site))
    }

    /// Injects (or clears, with `None`) a drill fault on a site.
    pub async fn set_fault(
        &self,
        site: &str,
        fault: Option<sitesteer_probes::overrides::Fault>,
        actor: &str,
    ) -> Result<Option<SiteView>, OpError> {
        self.check_site(site)?;
        let (from, to, reason) = match fault {
            Some(f) => (
                "none".to_string(),
                format!("{f:?}"),
                format!("drill fault {f:?} injected"),
            ),
            None => (
                "fault".to_string(),
                "none".to_string(),
                "drill fault cleared".to_string(),
            ),
        };
        let event = NewEvent::new(EventKind::Operator, actor, reason)
            .site(site)
            .change(from, to);
        self.apply(|o| o.entry(site).fault = fault, event).await?;
        Ok(self.view(site))
    }

    /// Manual failover: `from` stops taking new traffic; `to`, when given, is preferred over
    /// every tier while it is up. `undrain FROM` ends it.
    pub async fn failover(&self, from: &str, to: Option<&str>, actor: &str) -> Result<(), OpError> {
        self.check_site(from)?;
        if let Some(to) = to {
            self.check_site(to)?;
            if to == from {
                return Err(OpError::Invalid(
                    "failover needs two different sites".into(),
                ));
            }
        }
        let reason = match to {
            Some(to) => format!("manual failover from {from} to {to}"),
            None => format!("manual failover away from {from}"),
        };
        let event = NewEvent::new(EventKind::Operator, actor, reason)
            .site(from)
            .change("serving", "failed over");
        self.apply(
            |o| {
                o.entry(from).failed_over = true;
                if let Some(to) = to {
                    for s in o.sites.values_mut() {
                        s.preferred = false;
                    }
                    let target = o.entry(to);
                    target.preferred = true;
                    target.failed_over = false;
                }
            },
            event,
        )
        .await?;
        self.metrics
            .failovers
            .with_label_values(&[from, "manual"])
            .inc();
        Ok(())
    }

    /// Reloads the config file: validates it in full, then swaps it in, keeping the health
    /// history of unchanged sites. A bad file changes nothing.
    pub async fn reload(&self, actor: &str) -> Result<ReloadReport, OpError> {
        let path = self.config_path.as_ref().ok_or(OpError::NoConfigFile)?;
        let config = match sitesteer_config::load(path) {
            Ok(c) => c,
            Err(errors) => {
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                self.events.push(NewEvent::new(
                    EventKind::Reload,
                    actor,
                    format!(
                        "reload refused, running config kept: {} error(s); first: {}",
                        errors.errors.len(),
                        errors
                            .errors
                            .first()
                            .map(|e| e.to_string())
                            .unwrap_or_default()
                    ),
                ));
                return Err(OpError::Reload(errors));
            }
        };
        if let Some(tls) = &self.tls {
            // A certificate or CA that does not load refuses the reload like a bad key.
            match crate::tls::prepare(&config) {
                Ok(prepared) => tls.install(prepared),
                Err(errors) => {
                    let errors = sitesteer_config::ConfigErrors {
                        origin: path.display().to_string(),
                        errors,
                    };
                    self.metrics.reloads.with_label_values(&["refused"]).inc();
                    self.events.push(NewEvent::new(
                        EventKind::Reload,
                        actor,
                        format!(
                            "reload refused, running config kept: {}",
                            errors
                                .errors
                                .first()
                                .map(|e| e.to_string())
                                .unwrap_or_default()
                        ),
                    ));
                    return Err(OpError::Reload(errors));
                }
            }
        }
        self.swap_config(config, actor).await
    }

    /// Swaps in an already validated config.
    pub async fn swap_config(&self, config: Config, actor: &str) -> Result<ReloadReport, OpError> {
        let old = self.health.snapshot().config.clone();
        let has = |c: &Config, name: &str| c.site(name).is_some();
        let removed: Vec<String> = old
            .sites
            .iter()
            .filter(|s| !has(&config, &s.name))
            .map(|s| s.name.clone())
            .collect();
        let added: Vec<String> = config
            .sites
            .iter()
            .filter(|s| !has(&old, &s.name))
            .map(|s| s.name.clone())
            .collect();
        // Listeners and threads are what the process started with, whatever was reloaded since.
        let running = &self.started_with;
        let mut needs_restart = Vec::new();
        if running.listen != config.listen {
            needs_restart.push("listen".to_string());
        }
        if running.proxy.threads != config.proxy.threads {
            needs_restart.push("proxy.threads".to_string());
        }
        if running.proxy.session_key_file != config.proxy.session_key_file {
            needs_restart.push("proxy.session_key_file".to_string());
        }
        if running.cluster != config.cluster {
            needs_restart.push("cluster".to_string());
        }
        // New certificate files are served at once; TLS on or off for a listener is not.
        let tls_on = |c: &Config| c.tls.listener.as_ref().map(|l| (l.http, l.tcp));
        if tls_on(running) != tls_on(&config) {
            needs_restart.push("tls.listeners".to_string());
        }
        if running.proxy.upgrade_sock != config.proxy.upgrade_sock {
            needs_restart.push("proxy.upgrade_sock".to_string());
        }
        let sites = config.sites.len();
        // Overrides of removed sites go first, persisted, so a crash never resurrects them.
        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        let dropped: Vec<String> = next
            .overrides
            .sites
            .keys()
            .filter(|name| !has(&config, name))
            .cloned()
            .collect();
        for name in &dropped {
            next.overrides.sites.remove(name);
        }
        if !dropped.is_empty() {
            self.state_file.save(&next)?;
            *persisted = next;
        }
        let generation = self
            .health
            .reconfigure(Arc::new(config))
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        self.health
            .set_overrides(persisted.overrides.clone())
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        drop(persisted);
        for name in &dropped {
            self.events.push(
                NewEvent::new(
                    EventKind::Operator,
                    actor,
                    "site removed from config: its override was dropped",
                )
                .site(name),
            );
        }
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        self.events.push(NewEvent::new(
            EventKind::Reload,
            actor,
            format!("config reloaded: generation {generation}, {sites} sites, added {added:?}, removed {removed:?}{}", if needs_restart.is_empty() { String::new() } else { format!(", needs restart: {needs_restart:?}") }),
        ));
        Ok(ReloadReport {
            generation,
            sites,
            removed,
            added,
            needs_restart,
        })
    }
}
