//! The durable operator state: overrides (and, later, incidents) written atomically to
//! `state_file` before the admin API answers, and read back at start, so that a restart or
//! `kill -9` loses nothing.
//!
//! A write goes to a temporary file beside the target, is fsynced, renamed over the target,
//! and the folder is fsynced, so the file is always either the old or the new state.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sitesteer_probes::Overrides;

/// Format version written to the file.
pub const VERSION: u32 = 1;

/// Everything persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    /// Format version.
    pub version: u32,
    /// Operator overrides by site.
    pub overrides: Overrides,
    /// Measured failovers, newest first (kept bounded by their owner).
    pub incidents: Vec<serde_json::Value>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
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
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (not touched until read or written).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads the state; a missing file is the empty state.
    pub fn load(&self) -> Result<PersistedState, StateError> {
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

    /// Writes the state atomically and durably.
    pub fn save(&self, state: &PersistedState) -> Result<(), StateError> {
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
}
