//! The background task of a fleet member. One *session* reads the fleet's overrides (seeding
//! them when there are none), applies them, takes a lease, watches the overrides key from the
//! revision it read, keeps the lease alive and publishes this instance's view under it. Any
//! failure ends the session; the task marks the link down (fail static: the last state keeps
//! serving) and starts a new session with a short backoff, which reads everything again, so
//! an outage of any length ends caught up.

use std::sync::Arc;
use std::time::Duration;

use sitesteer_probes::{HealthHandle, Overrides};
use tokio::time::{Instant, MissedTickBehavior};

use super::{Cluster, EtcdError, InstanceView, StoredOverrides};
use crate::events::{EventKind, NewEvent};
use crate::operator::fleet::Fetched;
use crate::operator::Operator;

/// First wait before a new session after a failure.
const RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest wait between sessions while etcd is unreachable.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often the view is checked for a change worth publishing.
const PUBLISH_CHECK: Duration = Duration::from_millis(200);
/// Scores and latencies alone are republished at most this often.
const PUBLISH_REFRESH: Duration = Duration::from_secs(10);

/// How a session ended.
enum Ended {
    /// etcd stopped answering: the link is down until a session succeeds.
    Lost(String),
    /// The watch must start over (compaction); etcd is fine.
    Resync(String),
    /// The process is shutting down.
    Shutdown,
}

/// Runs sessions for as long as the process lives.
pub(super) async fn run(cluster: Arc<Cluster>, operator: Arc<Operator>, health: HealthHandle) {
    let mut backoff = RETRY_MIN;
    // After a working session ends, one new session is tried at once before the link is
    // called down: with several etcd members, another one usually takes over unnoticed.
    let mut retried = false;
    loop {
        let began = Instant::now();
        let mut established = false;
        match session(&cluster, &operator, &health, &mut established).await {
            Ended::Shutdown => return,
            Ended::Resync(why) => {
                tracing::info!(instance = %cluster.instance, reason = %why, "cluster watch restarts");
                backoff = RETRY_MIN;
                continue;
            }
            Ended::Lost(why) => {
                cluster.etcd.rotate();
                if established {
                    retried = false;
                }
                if cluster.is_connected() && !retried {
                    tracing::info!(instance = %cluster.instance, reason = %why, "cluster session ended; reconnecting");
                    retried = true;
                    continue;
                }
                cluster.set_connected(false, &why);
            }
        }
        if began.elapsed() > Duration::from_secs(5) {
            backoff = RETRY_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

fn lost(e: EtcdError) -> Ended {
    Ended::Lost(e.to_string())
}

async fn session(
    c: &Cluster,
    op: &Operator,
    health: &HealthHandle,
    established: &mut bool,
) -> Ended {
    let local = op.overrides().await;
    let fetched = match c.read_or_seed(&local).await {
        Ok(f) => f,
        Err(e) => return lost(e),
    };
    let start = fetched.revision + 1;
    if op.adopt_cluster(&fetched, true).await.is_err() {
        return Ended::Shutdown;
    }
    let mut lease = match c.etcd.grant(c.lease_ttl).await {
        Ok(id) => id,
        Err(e) => return lost(e),
    };
    let key = c.overrides_key();
    let mut watch = match c.etcd.watch(&key, start).await {
        Ok(w) => w,
        Err(e) => return lost(e),
    };
    c.set_connected(true, "");
    *established = true;
    let mut publisher = Publisher::default();
    if let Err(e) = publisher.publish(c, health, lease, true).await {
        return lost(e);
    }
    let mut keepalive = tokio::time::interval_at(
        Instant::now() + c.lease_ttl / 3,
        (c.lease_ttl / 3).max(Duration::from_millis(500)),
    );
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(PUBLISH_CHECK);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = watch.next() => {
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => return lost(e),
                };
                if batch.canceled || batch.compact_revision > 0 {
                    return Ended::Resync(format!("the watch was canceled (compacted at revision {})", batch.compact_revision));
                }
                for event in batch.events.into_iter().filter(|e| e.kv.key == key) {
                    let fetched = if event.deleted {
                        Fetched { overrides: Overrides::default(), change: None, mod_revision: 0, revision: event.kv.mod_revision, seeded: false }
                    } else {
                        match StoredOverrides::decode(&event.kv.value, &key) {
                            Ok(stored) => Fetched { overrides: stored.overrides, change: c.foreign(stored.change), mod_revision: event.kv.mod_revision, revision: event.kv.mod_revision, seeded: false },
                            Err(e) => {
                                tracing::warn!(key = %key, revision = event.kv.mod_revision, error = %e, "ignored an overrides value that is not understood");
                                c.events.push(NewEvent::new(EventKind::System, "cluster", format!("ignored the fleet's overrides at revision {}: not understood ({e})", event.kv.mod_revision)));
                                continue;
                            }
                        }
                    };
                    if op.adopt_cluster(&fetched, false).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
            }
            _ = keepalive.tick() => {
                match c.etcd.keep_alive(lease).await {
                    Ok(ttl) if ttl > 0 => {}
                    Ok(_) => {
                        tracing::info!(instance = %c.instance, "the lease expired; taking a new one");
                        lease = match c.etcd.grant(c.lease_ttl).await {
                            Ok(id) => id,
                            Err(e) => return lost(e),
                        };
                        if let Err(e) = publisher.publish(c, health, lease, true).await {
                            return lost(e);
                        }
                    }
                    Err(e) => return lost(e),
                }
            }
            _ = check.tick() => {
                if let Err(e) = publisher.publish(c, health, lease, false).await {
                    return lost(e);
                }
            }
        }
    }
}

/// Publishes this instance's view when steering changed, and refreshes it now and then.
#[derive(Default)]
struct Publisher {
    last: Option<String>,
    at: Option<Instant>,
}

impl Publisher {
    async fn publish(
        &mut self,
        c: &Cluster,
        health: &HealthHandle,
        lease: i64,
        force: bool,
    ) -> Result<(), EtcdError> {
        let (applied, _) = c.revisions();
        let view = InstanceView::of(
            &health.snapshot(),
            &c.instance,
            &c.admin,
            c.started_ms,
            applied,
        );
        let key = view.key();
        let stale = self.at.is_none_or(|at| at.elapsed() >= PUBLISH_REFRESH);
        if !force && self.last.as_ref() == Some(&key) && !stale {
            return Ok(());
        }
        let value = serde_json::to_vec(&view).unwrap_or_default();
        c.etcd
            .put(
                &format!("{}{}", c.instances_prefix(), c.instance),
                &value,
                lease,
            )
            .await?;
        self.last = Some(key);
        self.at = Some(Instant::now());
        Ok(())
    }
}
