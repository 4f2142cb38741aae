//! What sitesteer stores in etcd: the fleet's operator overrides as one JSON document (so a
//! failover that touches several sites is one atomic change), with a note of the change that
//! wrote it, and each instance's published view of the sites.
//!
//! A drill's injected fault stays local to the instance that runs the drill: it is stripped
//! before a write and kept across every change adopted from the store (the operator's
//! `fleet::shared` and `fleet::merge` say which part is shared).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sitesteer_probes::{Overrides, Snapshot};

use crate::events::{EventKind, NewEvent};

/// Format version of the stored documents.
pub(super) const VERSION: u32 = 1;

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Who changed the overrides, and how: shown in the events of every other instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ChangeNote {
    /// The instance whose admin API took the change.
    pub instance: String,
    /// Who asked (`admin-api`, `sighup`, ...).
    pub actor: String,
    /// What changed, in words.
    pub reason: String,
    /// The site concerned.
    pub site: Option<String>,
    /// Before.
    pub from: Option<String>,
    /// After.
    pub to: Option<String>,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

impl ChangeNote {
    /// The note of `event`, taken through `instance`.
    pub(crate) fn of(event: &NewEvent, instance: &str) -> Self {
        Self {
            instance: instance.to_string(),
            actor: event.actor.clone(),
            reason: event.reason.clone(),
            site: event.site.clone(),
            from: event.from.clone(),
            to: event.to.clone(),
            at_ms: now_ms(),
        }
    }

    /// The event another instance records when it applies this change.
    pub(crate) fn event(&self) -> NewEvent {
        NewEvent {
            kind: EventKind::Operator,
            site: self.site.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            reason: format!("{} (through {})", self.reason, self.instance),
            actor: format!("{}@{}", self.actor, self.instance),
        }
    }
}

/// The value of `<prefix>overrides`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StoredOverrides {
    /// Format version.
    pub version: u32,
    /// The fleet's operator overrides.
    pub overrides: Overrides,
    /// The change that wrote this value.
    pub change: Option<ChangeNote>,
    /// Fields of another sitesteer version, kept.
    #[serde(
        flatten,
        skip_serializing_if = "sitesteer_probes::UnknownFields::is_empty"
    )]
    pub unknown: sitesteer_probes::UnknownFields,
}

impl StoredOverrides {
    /// Parses a stored value. A value of another sitesteer version (a newer format version,
    /// fields this one does not know) is read, with a warning naming `key` and what is not
    /// understood, so that a mixed-version fleet keeps following each other's changes.
    pub(crate) fn decode(bytes: &[u8], key: &str) -> Result<Self, serde_json::Error> {
        let stored: Self = serde_json::from_slice(bytes)?;
        let mut fields: Vec<String> = stored.unknown.keys().cloned().collect();
        fields.extend(
            stored
                .overrides
                .unknown_fields()
                .into_iter()
                .map(|f| format!("overrides.{f}")),
        );
        if stored.version > VERSION || !fields.is_empty() {
            tracing::warn!(
                key,
                version = stored.version,
                understood = VERSION,
                not_understood = %fields.join(", "),
                "the fleet's overrides were written by another sitesteer version: applied what this version knows"
            );
        }
        Ok(stored)
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One site as an instance sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SiteBrief {
    /// Site name.
    pub name: String,
    /// State (`up`, `degraded`, `down`, `drained`, `maintenance`).
    pub state: String,
    /// Score in [0, 1].
    pub score: f64,
    /// Weight from the config.
    pub configured_weight: u32,
    /// Weight in force.
    pub effective_weight: u32,
    /// Probe latency EWMA, ms.
    pub latency_ewma_ms: f64,
    /// Error rate over the window.
    pub error_rate: f64,
    /// Why the site is in its state.
    pub reason: String,
}

/// The value of `<prefix>instances/<name>`: one instance's view, kept under a lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct InstanceView {
    /// The instance's name.
    pub instance: String,
    /// Its admin listener.
    pub admin: String,
    /// Its sitesteer version.
    pub version: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When this view was published, ms since the Unix epoch.
    pub updated_ms: u64,
    /// The store revision of the overrides it applies.
    pub overrides_revision: i64,
    /// Every site as it sees it.
    pub sites: Vec<SiteBrief>,
}

impl InstanceView {
    /// The view of `snap`.
    pub(crate) fn of(
        snap: &Snapshot,
        instance: &str,
        admin: &str,
        started_ms: u64,
        revision: i64,
    ) -> Self {
        let round = |x: f64, scale: f64| (x * scale).round() / scale;
        Self {
            instance: instance.to_string(),
            admin: admin.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_ms,
            updated_ms: now_ms(),
            overrides_revision: revision,
            sites: snap
                .sites
                .iter()
                .map(|s| SiteBrief {
                    name: s.name.clone(),
                    state: s.state.as_str().to_string(),
                    score: round(s.score, 1000.0),
                    configured_weight: s.configured_weight,
                    effective_weight: s.effective_weight,
                    latency_ewma_ms: round(s.latency_ewma_ms, 10.0),
                    error_rate: round(s.error_rate, 10000.0),
                    reason: s.reason.clone(),
                })
                .collect(),
        }
    }

    /// What changes steering (states, weights, reasons, the overrides revision): a view
    /// whose key differs from the last published one is published at once.
    pub(crate) fn key(&self) -> String {
        let mut key = self.overrides_revision.to_string();
        for s in &self.sites {
            key.push_str(&format!(
                "|{}:{}:{}:{}",
                s.name, s.state, s.effective_weight, s.reason
            ));
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_documents_round_trip() {
        let mut doc = StoredOverrides {
            version: VERSION,
            ..Default::default()
        };
        doc.overrides.entry("x").weight = Some(9);
        doc.change = Some(ChangeNote {
            instance: "i1".into(),
            actor: "admin-api".into(),
            reason: "weight set to 9".into(),
            site: Some("x".into()),
            ..Default::default()
        });
        assert_eq!(StoredOverrides::decode(&doc.encode(), "k").unwrap(), doc);
        let event = doc.change.as_ref().map(ChangeNote::event).unwrap();
        assert_eq!(event.actor, "admin-api@i1");
        assert!(StoredOverrides::decode(b"{nope", "k").is_err());
        // A newer instance's value is applied, its unknown fields kept in the overrides.
        let newer = br#"{"version":2,"overrides":{"sites":{"a":{"drained":true,"paused":1}}},"lease_hint":5}"#;
        let stored = StoredOverrides::decode(newer, "k").expect("read");
        assert!(stored.overrides.get("a").is_some_and(|o| o.drained));
        assert_eq!(stored.overrides.unknown_fields(), ["sites.a.paused"]);
        let again = serde_json::to_value(&stored.overrides).expect("json");
        assert_eq!(again["sites"]["a"]["paused"], 1, "written back");
    }
}
