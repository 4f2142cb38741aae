//! Operator intent: weight, drain, maintenance, failover and reload. Every change is
//! validated, then committed through one path ([`Operator::commit`]): written to the state
//! file, applied to the health owner and recorded as an event, in that order, before the
//! caller is answered. One lock serialises writers.
//!
//! With `[cluster]` a change of the fleet's overrides goes through a [`FleetStore`] first
//! (the trait is the operator's; the etcd cluster implements it), and changes of the fleet
//! are adopted through the same commit path. A reload ([`reload`]) is all or nothing.

mod commit;
pub(crate) mod fleet;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;

use sitesteer_config::{Config, ConfigErrors, MAX_WEIGHT};
use sitesteer_probes::{HealthHandle, Overrides, SiteView};
use tokio::sync::Mutex;

use crate::events::{EventKind, EventLog, NewEvent};
use crate::incidents::Incident;
use crate::metrics::Metrics;
use crate::state_file::{PersistedState, StateError, StateFile};
use commit::{Apply, Change, OnWriteError};
use fleet::{merge, shared, Fetched, FleetStore, StoreError};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
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

/// The operator's entry point, shared by the admin API and signals.
pub(crate) struct Operator {
    health: HealthHandle,
    state_file: StateFile,
    persisted: Mutex<PersistedState>,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    fleet: Option<Arc<dyn FleetStore>>,
    tls: Option<Arc<crate::tls::Tls>>,
    secrets: Option<crate::secrets::Secrets>,
    started_with: Arc<Config>,
}

impl Operator {
    /// An operator over `health`, persisting to `state_file`, starting from `persisted`.
    pub(crate) fn new(
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
            fleet: None,
            tls: None,
            secrets: None,
        }
    }

    /// Reloads read the admin token and session key files again and install them here.
    pub(crate) fn with_secrets(mut self, secrets: crate::secrets::Secrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Reloads read the TLS files again and install them here (`[tls]`, `[site.tls]`).
    pub(crate) fn with_tls(mut self, tls: Arc<crate::tls::Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Routes overrides through the fleet's shared store (`[cluster]`).
    pub(crate) fn with_fleet(mut self, fleet: Option<Arc<dyn FleetStore>>) -> Self {
        self.fleet = fleet;
        self
    }

    /// The overrides in force.
    pub(crate) async fn overrides(&self) -> Overrides {
        self.persisted.lock().await.overrides.clone()
    }

    /// Persists the incidents list (called by the incident recorder after each change).
    /// Saved incidents this version could not read stay in the file as they were.
    pub(crate) async fn save_incidents(&self, incidents: Vec<Incident>) -> Result<(), OpError> {
        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        next.incidents.read = incidents;
        let change = Change::of(next, OnWriteError::Refuse, Apply::Nothing);
        self.commit(&mut persisted, change).await.map(drop)
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

    /// Commits `change` of the overrides and records `event`. With `[cluster]`, a change of
    /// the fleet's overrides goes through the fleet store first.
    async fn apply(&self, change: impl Fn(&mut Overrides), event: NewEvent) -> Result<(), OpError> {
        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        let on_write_error = match &self.fleet {
            Some(fleet) => {
                next.overrides = self
                    .through_fleet(fleet.as_ref(), &persisted.overrides, &change, &event)
                    .await?;
                OnWriteError::Report
            }
            None => {
                change(&mut next.overrides);
                next.overrides.compact();
                OnWriteError::Refuse
            }
        };
        let change = Change::of(next, on_write_error, Apply::Overrides).event(event);
        self.commit(&mut persisted, change).await.map(drop)
    }

    /// The clustered write of `change` over the `local` overrides: a compare-and-put on the
    /// value's revision, redone on the fresh value when another instance wrote first
    /// (bounded). A change of local-only fields (drill faults) stays local. The overrides
    /// to commit here.
    async fn through_fleet(
        &self,
        fleet: &dyn FleetStore,
        local: &Overrides,
        change: &impl Fn(&mut Overrides),
        event: &NewEvent,
    ) -> Result<Overrides, OpError> {
        let mut wanted = local.clone();
        change(&mut wanted);
        wanted.compact();
        if shared(&wanted) == shared(local) {
            return Ok(wanted);
        }
        if !fleet.is_connected() {
            return Err(OpError::ClusterUnavailable);
        }
        let (_, mut base) = fleet.revisions();
        let mut current = shared(local);
        for attempt in 0..CLUSTER_ATTEMPTS {
            let mut next = current.clone();
            change(&mut next);
            next.compact();
            match fleet.store(&next, base, event).await {
                Ok(revision) => {
                    tracing::debug!(revision, attempt, "cluster write stored");
                    fleet.set_revisions(revision, revision);
                    return Ok(merge(&next, local));
                }
                Err(StoreError::Conflict(fresh)) => {
                    tracing::info!(
                        attempt,
                        revision = fresh.mod_revision,
                        "cluster write collided; redoing it on the fresh value"
                    );
                    if let Some(theirs) = fresh.change {
                        self.events.push(theirs);
                    }
                    current = fresh.overrides;
                    base = fresh.mod_revision;
                }
                Err(StoreError::Unreachable(why)) => {
                    tracing::warn!(%why, "the fleet store is unreachable: the change is refused");
                    return Err(OpError::ClusterUnavailable);
                }
                Err(StoreError::Uncertain(e)) => return Err(OpError::ClusterUncertain(e)),
                Err(StoreError::Refused(e)) => return Err(OpError::ClusterRefused(e)),
            }
        }
        Err(OpError::ClusterConflict)
    }

    /// Applies the fleet's overrides as read from the store, like a local change: state
    /// file, health owner, event. A watched change no newer than the one in force is
    /// ignored (it is this instance's own write, already applied). A full `read` is always
    /// taken: it is the store's truth at its revision, even when the store went back in time
    /// (a restored etcd); should a local write have landed after the read, the watch, which
    /// starts at the read's revision, brings it back at once.
    pub(crate) async fn adopt_cluster(
        &self,
        fetched: &Fetched,
        read: bool,
    ) -> Result<bool, OpError> {
        let Some(fleet) = &self.fleet else {
            return Ok(false);
        };
        let mut persisted = self.persisted.lock().await;
        let (applied, _) = fleet.revisions();
        if !read && fetched.mod_revision <= applied {
            return Ok(false);
        }
        let (change_revision, base) = if fetched.mod_revision == 0 {
            (fetched.revision, 0)
        } else {
            (fetched.mod_revision, fetched.mod_revision)
        };
        fleet.set_revisions(change_revision, base);
        let merged = merge(&fetched.overrides, &persisted.overrides);
        if merged == persisted.overrides {
            return Ok(false);
        }
        let mut next = persisted.clone();
        next.overrides = merged;
        let event = match fetched.change.clone().filter(|_| !read) {
            Some(theirs) => theirs,
            None => NewEvent::new(
                EventKind::System,
                "cluster",
                format!("applied the fleet's operator state at revision {change_revision}"),
            ),
        };
        let change = Change::of(next, OnWriteError::Report, Apply::Overrides);
        self.commit(&mut persisted, change).await?;
        drop(persisted);
        self.metrics.cluster_updates.inc();
        self.events.push(event);
        Ok(true)
    }

    /// Sets a site's weight at runtime.
    pub(crate) async fn set_weight(
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
    pub(crate) async fn drain(
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
    pub(crate) async fn maintenance(
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
    pub(crate) async fn set_fault(
        &self,
        site: &str,
        fault: Option<sitesteer_probes::Fault>,
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
    pub(crate) async fn failover(
        &self,
        from: &str,
        to: Option<&str>,
        actor: &str,
    ) -> Result<(), OpError> {
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
}
