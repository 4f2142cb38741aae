//! The durable operator state: overrides and incidents, written atomically to `state_file`
//! before the admin API answers, and read back at start, so that a restart or `kill -9`
//! loses nothing.
//!
//! A write goes to a temporary file beside the target, is fsynced, renamed over the target,
//! and the folder is fsynced, so the file is always either the old or the new state.
//!
//! Across versions (a rollback, a mixed-version fleet sharing a file layout): the file
//! carries its format `version`, and fields this version does not know, at the top or in an
//! override, are kept as they were and written back, with a warning at start
//! ([`PersistedState::not_understood`]), never refused.
//!
//! Incidents are typed; one that this version cannot read (written by another version, or
//! edited by hand) does not stop the start and is not dropped: it is kept as it was written,
//! after the incidents read, in every later save ([`SavedIncidents`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sitesteer_probes::{Overrides, UnknownFields};

use crate::incidents::Incident;

/// Format version written to the file.
pub(crate) const VERSION: u32 = 1;

/// Everything persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PersistedState {
    /// Format version.
    pub version: u32,
    /// Operator overrides by site.
    pub overrides: Overrides,
    /// Measured failovers, newest first (kept bounded by their owner).
    pub incidents: SavedIncidents,
    /// Fields of another version, kept.
    #[serde(flatten, skip_serializing_if = "UnknownFields::is_empty")]
    pub unknown: UnknownFields,
}

impl PersistedState {
    /// What this version reads but does not understand, in words, for a warning: a newer
    /// format version, and the fields it keeps without knowing them.
    pub(crate) fn not_understood(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.version > VERSION {
            out.push(format!(
                "written in format version {}, newer than this sitesteer's {VERSION}",
                self.version
            ));
        }
        let fields: Vec<String> = self
            .unknown
            .keys()
            .cloned()
            .chain(
                self.overrides
                    .unknown_fields()
                    .into_iter()
                    .map(|f| format!("overrides.{f}")),
            )
            .collect();
        if !fields.is_empty() {
            out.push(format!(
                "fields kept but not understood: {}",
                fields.join(", ")
            ));
        }
        out
    }
}

/// The `incidents` of the state file: a JSON array of incidents, newest first, followed by
/// those that could not be read when the file was loaded.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SavedIncidents {
    /// The incidents read, newest first.
    pub read: Vec<Incident>,
    /// Saved incidents that could not be read, kept as they were written.
    pub unreadable: Vec<Unreadable>,
}

/// A saved incident that could not be read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Unreadable {
    /// The entry as it was written.
    pub value: serde_json::Value,
    /// Why it could not be read.
    pub error: String,
}

impl SavedIncidents {
    /// The highest incident id in the file, unreadable entries included (so that a new
    /// incident never takes the id of one kept unread).
    pub(crate) fn max_id(&self) -> u64 {
        let read = self.read.iter().map(|i| i.id);
        let unread = self
            .unreadable
            .iter()
            .filter_map(|u| u.value["id"].as_u64());
        read.chain(unread).max().unwrap_or(0)
    }
}

impl Serialize for SavedIncidents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.read.len() + self.unreadable.len()))?;
        for incident in &self.read {
            seq.serialize_element(incident)?;
        }
        for entry in &self.unreadable {
            seq.serialize_element(&entry.value)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for SavedIncidents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut saved = Self::default();
        for value in Vec::<serde_json::Value>::deserialize(deserializer)? {
            match Incident::deserialize(&value) {
                Ok(incident) => saved.read.push(incident),
                Err(e) => saved.unreadable.push(Unreadable {
                    value,
                    error: e.to_string(),
                }),
            }
        }
        Ok(saved)
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// An I/O error.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The state file at one path.
#[derive(Clone, Debug)]
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (not touched until read or written).
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the file lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads the state; a missing file is the empty state.
    pub(crate) fn load(&self) -> Result<PersistedState, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PersistedState {
                version: VERSION,
                ..PersistedState::default()
            }),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Writes the state atomically and durably, in this version's format (fields of other
    /// versions kept).
    pub(crate) fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let state = &PersistedState {
            version: VERSION,
            ..state.clone()
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state.json".into());
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = std::env::temp_dir().join(format!("sitesteer-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = StateFile::new(dir.join("nested/state.json"));
        assert_eq!(file.load().unwrap().overrides, Overrides::default());
        let mut state = PersistedState {
            version: VERSION,
            ..Default::default()
        };
        state.overrides.entry("a").weight = Some(7);
        state.overrides.entry("b").drained = true;
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("nested")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        std::fs::write(file.path(), b"{not json").unwrap();
        assert!(matches!(file.load(), Err(StateError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_newer_file_is_read_and_its_unknown_fields_are_kept() {
        let dir = std::env::temp_dir().join(format!("sitesteer-state-ver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = StateFile::new(dir.join("state.json"));
        let newer = serde_json::json!({
            "version": 7,
            "overrides": {"sites": {"a": {"weight": 3, "paused_until": 99}}, "quorum": 2},
            "incidents": [],
            "journal": {"kept": true}
        });
        std::fs::write(file.path(), newer.to_string()).unwrap();
        let state = file.load().expect("a newer file is read");
        assert_eq!(state.overrides.get("a").and_then(|o| o.weight), Some(3));
        let words = state.not_understood();
        assert_eq!(words.len(), 2, "{words:?}");
        assert!(words[0].contains("version 7"), "{words:?}");
        assert!(
            words[1].contains("journal")
                && words[1].contains("overrides.quorum")
                && words[1].contains("overrides.sites.a.paused_until"),
            "{words:?}"
        );
        file.save(&state).unwrap();
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
        assert_eq!(saved["version"], VERSION);
        assert_eq!(saved["journal"], newer["journal"]);
        assert_eq!(saved["overrides"]["quorum"], 2);
        assert_eq!(saved["overrides"]["sites"]["a"]["paused_until"], 99);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_incident_is_kept_through_a_save() {
        let dir = std::env::temp_dir().join(format!("sitesteer-state-inc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = StateFile::new(dir.join("state.json"));
        let good = serde_json::json!({
            "id": 3, "site": "a", "cause": "manual", "open": false, "started_ms": 0,
            "started": "1970-01-01T00:00:00.000Z", "detection_ms": 1, "shift_ms": 1,
            "failed_requests": 0, "retried_requests": 0, "objectives": [], "met": true,
            "timeline": []
        });
        let odd = serde_json::json!({"id": 9, "site": "b", "shift_ms": "soon"});
        let text = serde_json::json!({"version": 1, "incidents": [good, odd]});
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(file.path(), text.to_string()).unwrap();
        let mut state = file
            .load()
            .expect("an unreadable incident does not stop the load");
        assert_eq!(state.incidents.read.len(), 1);
        assert_eq!(state.incidents.unreadable.len(), 1);
        assert_eq!(state.incidents.unreadable[0].value, odd);
        assert!(!state.incidents.unreadable[0].error.is_empty());
        assert_eq!(state.incidents.max_id(), 9);
        state.incidents.read.clear();
        file.save(&state).unwrap();
        let again = file.load().unwrap();
        assert_eq!(
            again.incidents.unreadable[0].value, odd,
            "kept, not dropped"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
