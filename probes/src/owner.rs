//! The one owner of the health table: it folds observations from probes and the data plane,
//! applies operator overrides and reloads, and publishes Snapshots through `ArcSwap`.
//! Everyone else only reads Snapshots.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sitesteer_config::Config;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::observation::{Observation, Source};
use crate::overrides::Overrides;
use crate::passive::PassiveReporter;
use crate::probe;
use crate::snapshot::Snapshot;
use crate::table::{HealthTable, StateChange};

/// Capacity of the observation channel; probes wait when it is full, the data plane drops.
pub(crate) const OBSERVATION_CAPACITY: usize = 8192;
/// How often scores are republished when only numbers (not states) changed.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(25);
/// Observations folded per wake-up before publishing.
const BATCH: usize = 1024;

enum Command {
    SetOverrides(Overrides, oneshot::Sender<()>),
    Reconfigure(Arc<Config>, oneshot::Sender<u64>),
}

/// The owner is gone (the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the health owner has stopped")]
pub struct OwnerGone;

/// A cheap, cloneable handle to the published health state.
#[derive(Clone)]
pub struct HealthHandle {
    snapshot: Arc<ArcSwap<Snapshot>>,
    reporter: PassiveReporter,
    commands: mpsc::Sender<Command>,
    changes: broadcast::Sender<StateChange>,
}

impl HealthHandle {
    /// The current Snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The shared cell, for hot paths that want `load()` guards.
    pub fn cell(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.snapshot
    }

    /// Where the data plane reports passive observations.
    pub fn reporter(&self) -> &PassiveReporter {
        &self.reporter
    }

    /// State changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// Applies new overrides; returns once a Snapshot with them is published.
    pub async fn set_overrides(&self, overrides: Overrides) -> Result<(), OwnerGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SetOverrides(overrides, tx))
            .await
            .map_err(|_| OwnerGone)?;
        rx.await.map_err(|_| OwnerGone)
    }

    /// Swaps in a new config; returns the new generation once published.
    pub async fn reconfigure(&self, config: Arc<Config>) -> Result<u64, OwnerGone> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Reconfigure(config, tx))
            .await
            .map_err(|_| OwnerGone)?;
        rx.await.map_err(|_| OwnerGone)
    }
}

/// Called by the owner with every observation it folds, and the site's name (for metrics
/// and availability records). Must be cheap: it runs on the owner's task.
pub type Observer = Arc<dyn Fn(&Observation, &str) + Send + Sync>;

/// Called by the owner with every Snapshot it publishes, right after publishing it (and with
/// the first one before [`start`] returns): where the data planes derive what they steer by
/// (the decision index) once per Snapshot instead of once per reader. Must be cheap: it runs
/// on the owner's task.
pub type OnPublish = Arc<dyn Fn(&Arc<Snapshot>) + Send + Sync>;

/// What the owner calls besides folding and publishing.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Sees every folded observation.
    pub observer: Option<Observer>,
    /// Sees every published Snapshot.
    pub on_publish: Option<OnPublish>,
}

/// Starts the owner and the probes on the current tokio runtime.
pub fn start(config: Arc<Config>, overrides: Overrides, hooks: Hooks) -> HealthHandle {
    let now = Instant::now();
    let mut table = HealthTable::new(config, overrides, now);
    let first = Arc::new(table.snapshot(now));
    if let Some(on_publish) = &hooks.on_publish {
        on_publish(&first);
    }
    let snapshot = Arc::new(ArcSwap::new(first));
    let (obs_tx, obs_rx) = mpsc::channel(OBSERVATION_CAPACITY);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (changes, _) = broadcast::channel(1024);
    let handle = HealthHandle {
        snapshot: snapshot.clone(),
        reporter: PassiveReporter::new(obs_tx.clone()),
        commands: cmd_tx,
        changes: changes.clone(),
    };
    let (generation_tx, generation_rx) = watch::channel(table.generation());
    probe::spawn_all(
        table.config(),
        table.generation(),
        obs_tx.clone(),
        generation_rx.clone(),
        snapshot.clone(),
    );
    let owner = Owner {
        hooks,
        table,
        snapshot,
        changes,
        obs_tx,
        generation_tx,
        generation_rx,
    };
    tokio::spawn(owner.run(obs_rx, cmd_rx));
    handle
}

struct Owner {
    hooks: Hooks,
    table: HealthTable,
    snapshot: Arc<ArcSwap<Snapshot>>,
    changes: broadcast::Sender<StateChange>,
    obs_tx: mpsc::Sender<Observation>,
    generation_tx: watch::Sender<u64>,
    generation_rx: watch::Receiver<u64>,
}

impl Owner {
    async fn run(
        mut self,
        mut observations: mpsc::Receiver<Observation>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = false;
        loop {
            let state_changed = tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::SetOverrides(o, ack)) => {
                        self.fold_passive(Instant::now());
                        self.table.set_overrides(o, Instant::now());
                        self.publish();
                        let _ = ack.send(());
                        continue;
                    }
                    Some(Command::Reconfigure(config, ack)) => {
                        // The counts of the old generation fold into the old site ids.
                        self.fold_passive(Instant::now());
                        let generation = self.table.reconfigure(config, Instant::now());
                        let _ = self.generation_tx.send(generation);
                        probe::spawn_all(self.table.config(), generation, self.obs_tx.clone(), self.generation_rx.clone(), self.snapshot.clone());
                        self.publish();
                        let _ = ack.send(generation);
                        continue;
                    }
                },
                Some(obs) = observations.recv() => {
                    let mut changed = self.fold(&obs);
                    for _ in 0..BATCH {
                        match observations.try_recv() {
                            Ok(obs) => changed |= self.fold(&obs),
                            Err(_) => break,
                        }
                    }
                    dirty = true;
                    changed
                }
                _ = tick.tick() => {
                    let (counted, mut changed) = self.fold_passive(Instant::now());
                    dirty |= counted;
                    changed |= self.table.tick(Instant::now());
                    if dirty || changed {
                        dirty = false;
                        self.publish();
                    }
                    continue;
                }
            };
            if state_changed {
                dirty = false;
                self.publish();
            }
        }
    }

    /// Folds the data plane's counts (see [`crate::PassiveCounts`]) as passive outcomes now.
    /// Returns (whether any were counted, whether a published state changed).
    fn fold_passive(&mut self, now: Instant) -> (bool, bool) {
        let counts = self.table.passive().clone();
        let generation = self.table.generation();
        let (mut counted, mut changed) = (false, false);
        for site in 0..counts.len() {
            for (failure, n) in counts.take_failures(site) {
                counted = true;
                let obs = Observation::passive(site, generation, Err(failure), now);
                self.observe(&obs);
                changed |= self.table.fold_passive_failures(site, failure, n, now);
            }
            let n = counts.take(site);
            if n == 0 {
                continue;
            }
            counted = true;
            // One call stands for the batch: observers of passive outcomes only care whether
            // the site served.
            self.observe(&Observation::passive(
                site,
                generation,
                Ok(Duration::ZERO),
                now,
            ));
            changed |= self.table.fold_passive_ok(site, n, now);
        }
        (counted, changed)
    }

    fn fold(&mut self, obs: &Observation) -> bool {
        // Successes counted before a passive failure fold before it.
        let mut changed = false;
        if obs.source == Source::Passive {
            changed = self.fold_passive(obs.at).1;
        }
        self.observe(obs);
        self.table.fold(obs) | changed
    }

    /// Shows `obs` to the observer, with its site's name, when it is of this generation.
    fn observe(&self, obs: &Observation) {
        let Some(observer) = &self.hooks.observer else {
            return;
        };
        if obs.generation == self.table.generation() {
            if let Some(site) = self.table.config().sites.get(obs.site) {
                observer(obs, &site.name);
            }
        }
    }

    fn publish(&mut self) {
        let snapshot = Arc::new(self.table.snapshot(Instant::now()));
        self.snapshot.store(snapshot.clone());
        if let Some(on_publish) = &self.hooks.on_publish {
            on_publish(&snapshot);
        }
        for change in self.table.take_changes() {
            tracing::info!(site = %change.site, from = change.from.as_str(), to = change.to.as_str(), reason = %change.reason, "site state changed");
            let _ = self.changes.send(change);
        }
    }
}
