//! The operator's one commit path. A [`Change`] is what an operator action, an adopted
//! change of the fleet, an incidents save or a reload has made ready (everything that can
//! be refused by validation or the fleet store is behind it); [`Operator::commit`] writes
//! it to the state file, installs what it applies and records its events, in that order.

use std::sync::Arc;

use sitesteer_config::Config;

use super::{OpError, Operator};
use crate::events::{EventKind, NewEvent};
use crate::state_file::PersistedState;

/// How a commit treats a state file that cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnWriteError {
    /// Nothing changes and the caller gets the error: a local change.
    Refuse,
    /// The change is applied anyway and the lag is reported: the fleet has it already.
    Report,
}

/// What runs on a committed state besides the state file.
pub(super) enum Apply {
    /// Nothing: the incidents list is only kept.
    Nothing,
    /// The health owner takes the new overrides.
    Overrides,
    /// A reload: the prepared TLS material, then the config, then the overrides.
    Config {
        /// The validated config.
        config: Arc<Config>,
        /// Its TLS files, read and checked (`None` when TLS is not managed here).
        tls: Option<crate::tls::Prepared>,
    },
}

/// One change of the operator state, ready to commit: everything that can be refused
/// (validation, the cluster store, reading files) is behind it.
pub(super) struct Change {
    /// The state after the change.
    pub(super) next: PersistedState,
    /// Write the state file (a reload that drops no override leaves it as it is).
    pub(super) write: bool,
    /// What a failed write means.
    pub(super) on_write_error: OnWriteError,
    /// What runs on the new state.
    pub(super) apply: Apply,
    /// Recorded once the change is in force, in order.
    pub(super) events: Vec<NewEvent>,
}

impl Change {
    /// A change of the overrides (or of nothing, for an incidents save), written to the
    /// state file first.
    pub(super) fn of(next: PersistedState, on_write_error: OnWriteError, apply: Apply) -> Self {
        Self {
            next,
            write: true,
            on_write_error,
            apply,
            events: Vec::new(),
        }
    }

    pub(super) fn event(mut self, event: NewEvent) -> Self {
        self.events.push(event);
        self
    }
}

impl Operator {
    /// The one commit path of every operator action, adopted fleet change, incidents save
    /// and reload, under the operator lock (`persisted` is its guard): the state file is
    /// written, then what the change applies is installed (TLS material, config,
    /// overrides), then its events are recorded. Whatever can be refused happened before;
    /// a write refused here leaves everything as it was. Returns the new config generation
    /// of a reload.
    pub(super) async fn commit(
        &self,
        persisted: &mut PersistedState,
        change: Change,
    ) -> Result<Option<u64>, OpError> {
        if change.write {
            if let Err(e) = self.state_file.save(&change.next) {
                if change.on_write_error == OnWriteError::Refuse {
                    return Err(OpError::Persist(e));
                }
                tracing::warn!(error = %e, "could not write the fleet's overrides to the state file");
                self.events.push(NewEvent::new(
                    EventKind::System,
                    "cluster",
                    format!("applied a change of the fleet, but the local state file could not be written: {e}"),
                ));
            }
        }
        let mut generation = None;
        let apply_overrides = match change.apply {
            Apply::Nothing => false,
            Apply::Overrides => true,
            Apply::Config { config, tls } => {
                // The TLS material goes first, so that a site the new config adds has its CA
                // before any snapshot names it; it is put back if the config cannot follow.
                let replaced = match (&self.tls, tls) {
                    (Some(installed), Some(prepared)) => Some(installed.install(prepared)),
                    _ => None,
                };
                match self.health.reconfigure(config).await {
                    Ok(g) => generation = Some(g),
                    Err(_) => {
                        if let (Some(installed), Some(replaced)) = (&self.tls, replaced) {
                            installed.restore(replaced);
                        }
                        return Err(OpError::ShuttingDown);
                    }
                }
                true
            }
        };
        *persisted = change.next;
        if apply_overrides {
            self.health
                .set_overrides(persisted.overrides.clone())
                .await
                .map_err(|_| OpError::ShuttingDown)?;
        }
        for event in change.events {
            self.events.push(event);
        }
        Ok(generation)
    }
}
