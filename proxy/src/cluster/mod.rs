//! A fleet of front doors sharing operator state through etcd (`[cluster]`).
//!
//! The fleet's operator overrides live in one etcd key, `<prefix>overrides`, as JSON. A write
//! through any instance is a compare-and-put on that key's `mod_revision`: when another
//! instance changed it first, the write is redone on the fresh value (operator changes are
//! read-modify-write of single fields, so redoing them is correct) and nothing is lost in
//! silence. Every instance watches the key and applies each change the way a local one is
//! applied: health owner, local state file, events. Each instance publishes its view of the
//! sites under `<prefix>instances/<name>`, attached to a lease it keeps alive.
//!
//! Fail static: when etcd is unreachable an instance keeps serving with the last state it
//! knew (its state file stays current), refuses writes with a clear error, reports the
//! condition in `sitesteer_cluster_connected`, the events and the status page, and catches up
//! (read again, watch again) as soon as etcd answers.

mod doc;
mod etcd;
mod sync;
mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use serde_json::{json, Value};
use sitesteer_config::Config;
use sitesteer_probes::{HealthHandle, Overrides};

pub(crate) use doc::{ChangeNote, InstanceView, StoredOverrides};
pub(crate) use etcd::{Etcd, EtcdError, Kv, PutIf};

use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::Metrics;
use crate::operator::fleet::{merge, shared, Fetched, FleetStore, StoreError};
use crate::operator::Operator;
use crate::state_file::{PersistedState, StateFile};

/// Bound of one etcd call, its repeated attempts included: long enough to ride through an
/// etcd leader election (about 1–2 s with etcd's defaults).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of one connection attempt to one etcd endpoint.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `GET /api/v1/cluster` waits for etcd before it answers the last views read.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a start waits for etcd before it serves from the local state file.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(3);

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> Self {
        match e {
            EtcdError::Unreachable(m) => Self::Unreachable(m),
            EtcdError::NoAnswer(m) => Self::Uncertain(m),
            other => Self::Refused(other.to_string()),
        }
    }
}

/// What the link to etcd is doing.
#[derive(Default)]
struct Link {
    connected: Option<bool>,
    since_ms: u64,
    error: Option<String>,
    applied: i64,
    base: i64,
    instances: Vec<InstanceView>,
    instances_ms: u64,
}

/// This instance's membership of the fleet.
pub(crate) struct Cluster {
    etcd: Etcd,
    instance: String,
    admin: String,
    prefix: String,
    lease_ttl: Duration,
    started_ms: u64,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    connected: AtomicBool,
    link: Mutex<Link>,
}

/// The machine's host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sitesteer".to_string())
}

/// The instance name: `cluster.instance`, else the host name and the admin port.
pub(crate) fn instance_name(config: &Config) -> String {
    config
        .cluster
        .as_ref()
        .and_then(|c| c.instance.clone())
        .unwrap_or_else(|| format!("{}:{}", hostname(), config.listen.admin.port()))
}

impl Cluster {
    /// The fleet membership of `config` (`None` without `[cluster]`). Reads the TLS and
    /// password files; an unreadable one is an error.
    pub(crate) fn new(
        config: &Config,
        events: Arc<EventLog>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(cc) = &config.cluster else {
            return Ok(None);
        };
        let etcd = Etcd::new(cc, CALL_TIMEOUT, CONNECT_TIMEOUT)?;
        metrics.register_cluster();
        Ok(Some(Arc::new(Self {
            etcd,
            instance: instance_name(config),
            admin: admin_url(config.listen.admin),
            prefix: cc.prefix.clone(),
            lease_ttl: cc.lease_ttl,
            started_ms: doc::now_ms(),
            events,
            metrics,
            connected: AtomicBool::new(false),
            link: Mutex::new(Link::default()),
        })))
    }

    /// True while etcd answers.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store revision of the overrides applied, and the key's `mod_revision` that the
    /// next write compares against.
    pub(crate) fn revisions(&self) -> (i64, i64) {
        let l = self.link();
        (l.applied, l.base)
    }

    /// Records the revisions of the overrides just applied (called under the operator lock).
    pub(crate) fn set_revisions(&self, applied: i64, base: i64) {
        let mut l = self.link();
        l.applied = applied;
        l.base = base;
    }

    fn overrides_key(&self) -> String {
        format!("{}overrides", self.prefix)
    }

    fn instances_prefix(&self) -> String {
        format!("{}instances/", self.prefix)
    }

    /// Records whether etcd answers: the gauge always, an event and a log line on a change.
    pub(crate) fn set_connected(&self, on: bool, detail: &str) {
        self.connected.store(on, Ordering::Release);
        self.metrics.cluster_connected.set(i64::from(on));
        let (was, revision) = {
            let mut l = self.link();
            let was = l.connected;
            if was != Some(on) {
                l.since_ms = doc::now_ms();
            }
            l.connected = Some(on);
            l.error = (!on).then(|| detail.to_string());
            (was, l.applied)
        };
        if was == Some(on) {
            return;
        }
        let reason = match (was, on) {
            (_, false) => {
                tracing::warn!(instance = %self.instance, error = %detail, "cluster store unreachable; serving the last known state");
                format!("the cluster store is unreachable ({detail}): serving the last known operator state, writes are refused until it returns")
            }
            (None, true) => {
                tracing::info!(instance = %self.instance, revision, "joined the cluster store");
                format!(
                    "joined the cluster store as {} at revision {revision}",
                    self.instance
                )
            }
            (Some(_), true) => {
                tracing::info!(instance = %self.instance, revision, "cluster store reachable again");
                format!("the cluster store is reachable again: caught up at revision {revision}")
            }
        };
        self.events
            .push(NewEvent::new(EventKind::System, "cluster", reason));
    }

    fn decode(&self, kv: Option<Kv>, revision: i64) -> Result<Fetched, EtcdError> {
        let Some(kv) = kv else {
            return Ok(Fetched {
                overrides: Overrides::default(),
                change: None,
                mod_revision: 0,
                revision,
                seeded: false,
            });
        };
        let stored = StoredOverrides::decode(&kv.value, &kv.key).map_err(|e| {
            EtcdError::Garbled(format!(
                "{} at revision {} is not sitesteer's overrides: {e}",
                kv.key, kv.mod_revision
            ))
        })?;
        Ok(Fetched {
            overrides: shared(&stored.overrides),
            change: self.foreign(stored.change),
            mod_revision: kv.mod_revision,
            revision: revision.max(kv.mod_revision),
            seeded: false,
        })
    }

    /// Reads the fleet's overrides; when there are none yet, seeds them from `local`.
    pub(crate) async fn read_or_seed(&self, local: &Overrides) -> Result<Fetched, EtcdError> {
        let key = self.overrides_key();
        let (kv, revision) = self.etcd.get(&key).await?;
        if kv.is_some() {
            return self.decode(kv, revision);
        }
        let stored = StoredOverrides {
            version: doc::VERSION,
            overrides: shared(local),
            change: None,
            unknown: Default::default(),
        };
        match self.etcd.put_if(&key, &stored.encode(), 0).await? {
            PutIf::Stored(rev) => {
                tracing::info!(instance = %self.instance, key = %key, revision = rev, sites = stored.overrides.sites.len(), "seeded the cluster store");
                Ok(Fetched {
                    overrides: stored.overrides,
                    change: None,
                    mod_revision: rev,
                    revision: rev,
                    seeded: true,
                })
            }
            PutIf::Conflict(kv) => self.decode(kv, revision),
        }
    }

    /// The event to record here for a change noted in the store: `None` when this instance
    /// made it (it is recorded already).
    pub(crate) fn foreign(&self, note: Option<ChangeNote>) -> Option<NewEvent> {
        note.filter(|n| n.instance != self.instance)
            .map(|n| n.event())
    }

    /// Stores the fleet's overrides `next` if the key is still at `base`, noting `change`.
    pub(crate) async fn store(
        &self,
        next: &Overrides,
        base: i64,
        change: &NewEvent,
    ) -> Result<i64, StoreError> {
        let stored = StoredOverrides {
            version: doc::VERSION,
            overrides: shared(next),
            change: Some(ChangeNote::of(change, &self.instance)),
            // The overrides carry the fields of other versions they were read with; the
            // document's own are each writer's (its change note).
            unknown: Default::default(),
        };
        let outcome = self
            .etcd
            .put_if(&self.overrides_key(), &stored.encode(), base)
            .await;
        match outcome {
            Ok(PutIf::Stored(rev)) => {
                self.metrics.cluster_writes.with_label_values(&["ok"]).inc();
                Ok(rev)
            }
            Ok(PutIf::Conflict(kv)) => {
                self.metrics
                    .cluster_writes
                    .with_label_values(&["conflict"])
                    .inc();
                let revision = kv.as_ref().map_or(0, |k| k.mod_revision);
                Err(self
                    .decode(kv, revision)
                    .map_or_else(|e| StoreError::Refused(e.to_string()), StoreError::Conflict))
            }
            Err(e) => {
                self.metrics
                    .cluster_writes
                    .with_label_values(&["failed"])
                    .inc();
                if matches!(e, EtcdError::Unreachable(_) | EtcdError::NoAnswer(_)) {
                    self.set_connected(false, &e.to_string());
                }
                Err(e.into())
            }
        }
    }

    /// At start, before the health owner runs: with etcd reachable, the fleet's overrides
    /// replace the local ones (the state file is rewritten), or are seeded from them; without
    /// it, the local state file stands and the background task keeps trying.
    pub(crate) async fn startup(&self, persisted: &mut PersistedState, state_file: &StateFile) {
        let fetched =
            tokio::time::timeout(START_TIMEOUT, self.read_or_seed(&persisted.overrides)).await;
        let fetched = match fetched {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return self.set_connected(false, &e.to_string()),
            Err(_) => return self.set_connected(false, "no answer at start"),
        };
        let merged = merge(&fetched.overrides, &persisted.overrides);
        if merged != persisted.overrides {
            let mut next = persisted.clone();
            next.overrides = merged;
            if let Err(e) = state_file.save(&next) {
                tracing::warn!(error = %e, "could not write the cluster's overrides to the state file");
            }
            *persisted = next;
        }
        self.set_revisions(fetched.mod_revision, fetched.mod_revision);
        let how = if fetched.seeded {
            format!(
                "seeded the cluster store with this instance's operator state ({} site(s))",
                fetched.overrides.sites.len()
            )
        } else {
            format!(
                "took the operator state from the cluster store ({} site(s), revision {})",
                fetched.overrides.sites.len(),
                fetched.mod_revision
            )
        };
        self.events
            .push(NewEvent::new(EventKind::System, "cluster", how));
        self.set_connected(true, "");
    }

    /// The background task, for the life of the process: watch, lease, publication,
    /// reconnection.
    pub(crate) async fn run(self: Arc<Self>, operator: Arc<Operator>, health: HealthHandle) {
        sync::run(self, operator, health).await
    }

    /// `GET /api/v1/cluster`: every instance's view (read from etcd now, or the last one read
    /// when etcd is unreachable, marked stale) and this instance's link.
    pub(crate) async fn report(&self, health: &HealthHandle) -> Value {
        let listed =
            tokio::time::timeout(REPORT_TIMEOUT, self.etcd.list(&self.instances_prefix())).await;
        let fresh = match listed {
            Ok(Ok(kvs)) => {
                let views: Vec<InstanceView> = kvs
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                    .collect();
                let mut l = self.link();
                l.instances = views;
                l.instances_ms = doc::now_ms();
                true
            }
            _ => false,
        };
        let (applied, _) = self.revisions();
        let mine = InstanceView::of(
            &health.snapshot(),
            &self.instance,
            &self.admin,
            self.started_ms,
            applied,
        );
        let l = self.link();
        let mut instances: Vec<Value> = l
            .instances
            .iter()
            .filter(|v| v.instance != self.instance)
            .filter_map(|v| serde_json::to_value(v).ok())
            .collect();
        let mut me = serde_json::to_value(&mine).unwrap_or(Value::Null);
        me["self"] = json!(true);
        instances.push(me);
        instances.sort_by(|a, b| {
            a["instance"]
                .as_str()
                .unwrap_or("")
                .cmp(b["instance"].as_str().unwrap_or(""))
        });
        json!({
            "enabled": true,
            "instance": self.instance,
            "connected": self.is_connected(),
            "since_ms": l.since_ms,
            "error": l.error,
            "endpoints": self.etcd.endpoints(),
            "prefix": self.prefix,
            "revision": applied,
            "stale": !fresh,
            "read_ms": l.instances_ms,
            "instances": instances,
        })
    }

    /// The short status shown with the sites (and on the status page).
    pub(crate) fn summary(&self) -> Value {
        let l = self.link();
        json!({
            "instance": self.instance,
            "connected": self.is_connected(),
            "since_ms": l.since_ms,
            "error": l.error,
            "revision": l.applied,
        })
    }
}

/// The operator writes and adopts the fleet's overrides through the etcd cluster.
#[async_trait]
impl FleetStore for Cluster {
    fn is_connected(&self) -> bool {
        Cluster::is_connected(self)
    }

    fn revisions(&self) -> (i64, i64) {
        Cluster::revisions(self)
    }

    fn set_revisions(&self, applied: i64, base: i64) {
        Cluster::set_revisions(self, applied, base)
    }

    async fn store(
        &self,
        next: &Overrides,
        base: i64,
        change: &NewEvent,
    ) -> Result<i64, StoreError> {
        Cluster::store(self, next, base, change).await
    }
}

fn admin_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
