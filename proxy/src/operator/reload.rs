//! Reloading the config file, all or nothing. Everything that can fail happens first, while
//! nothing is installed: the file is read and validated in full, its TLS files are read and
//! checked, and the state file is written (when the reload drops the overrides of removed
//! sites), and the secret files (the admin token, the session keys) are read again. Only then
//! are the TLS material, the secrets and the config installed, through the operator's commit
//! path. A reload refused at any step reports why and leaves the running config and
//! the served certificates as they were.

use std::sync::Arc;

use sitesteer_config::{Config, ConfigErrors};

use super::{Apply, Change, OnWriteError, OpError, Operator};
use crate::events::{EventKind, NewEvent};

/// What a successful reload changed.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct ReloadReport {
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
    /// Secret files read again and now in use (`admin.token_file`, `proxy.session_key_file`).
    pub secrets_reread: Vec<String>,
    /// Session keys in use after the reload (the first signs, all verify).
    pub session_keys: usize,
}

/// The names of `from`'s sites that `to` does not have.
fn missing(from: &Config, to: &Config) -> Vec<String> {
    from.sites
        .iter()
        .filter(|s| to.site(&s.name).is_none())
        .map(|s| s.name.clone())
        .collect()
}

/// The settings of `new` that only a restart applies: listeners and threads are what the
/// process `started` with, whatever was reloaded since.
fn needs_restart(started: &Config, new: &Config) -> Vec<String> {
    // New certificate files are served at once; TLS on or off for a listener is not.
    let tls_on = |c: &Config| c.tls.listener.as_ref().map(|l| (l.http, l.tcp));
    [
        ("listen", started.listen != new.listen),
        ("proxy.threads", started.proxy.threads != new.proxy.threads),
        (
            "proxy.session_key_file",
            started.proxy.session_key_file != new.proxy.session_key_file,
        ),
        ("cluster", started.cluster != new.cluster),
        ("tls.listeners", tls_on(started) != tls_on(new)),
        (
            "proxy.upgrade_sock",
            started.proxy.upgrade_sock != new.proxy.upgrade_sock,
        ),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name.to_string())
    .collect()
}

impl Operator {
    /// Reloads the config file: validates it in full and reads its TLS files, then swaps
    /// both in, keeping the health history of unchanged sites. A bad file, a bad TLS file or
    /// a state file that cannot be written changes nothing.
    pub(crate) async fn reload(&self, actor: &str) -> Result<ReloadReport, OpError> {
        let path = self.config_path.as_ref().ok_or(OpError::NoConfigFile)?;
        let config = sitesteer_config::load(path).map_err(|e| self.refuse(actor, e))?;
        let tls = match &self.tls {
            // A certificate or CA that does not load refuses the reload like a bad key.
            Some(_) => Some(crate::tls::prepare(&config).map_err(|errors| {
                let origin = path.display().to_string();
                self.refuse(actor, ConfigErrors { origin, errors })
            })?),
            None => None,
        };
        // The secret files are read now too: a reload is refused, and nothing changes, when
        // the token file or the session key file went missing or bad.
        let secrets = match &self.secrets {
            Some(secrets) => Some(secrets.prepare(&config).map_err(|errors| {
                let origin = path.display().to_string();
                let errors = errors.iter().map(|e| e.to_config_error()).collect();
                self.refuse(actor, ConfigErrors { origin, errors })
            })?),
            None => None,
        };
        let secrets_reread = match &secrets {
            Some(_) if config.admin.token_file.is_some() => {
                vec![
                    "admin.token_file".to_string(),
                    "proxy.session_key_file".to_string(),
                ]
            }
            Some(_) => vec!["proxy.session_key_file".to_string()],
            None => Vec::new(),
        };
        let old = self.health.snapshot().config.clone();
        let removed = missing(&old, &config);
        let added = missing(&config, &old);
        let needs_restart = needs_restart(&self.started_with, &config);
        let sites = config.sites.len();

        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        // Overrides of removed sites go, persisted first, so a crash never resurrects them.
        let dropped: Vec<String> = next
            .overrides
            .sites
            .keys()
            .filter(|name| config.site(name).is_none())
            .cloned()
            .collect();
        for name in &dropped {
            next.overrides.sites.remove(name);
        }
        let mut change = Change::of(
            next,
            OnWriteError::Refuse,
            Apply::Config {
                config: Arc::new(config),
                tls,
            },
        );
        change.write = !dropped.is_empty();
        for name in &dropped {
            change = change.event(
                NewEvent::new(
                    EventKind::Operator,
                    actor,
                    "site removed from config: its override was dropped",
                )
                .site(name),
            );
        }
        let generation = match self.commit(&mut persisted, change).await {
            Ok(generation) => generation.unwrap_or_default(),
            Err(e @ OpError::Persist(_)) => {
                drop(persisted);
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                self.events.push(NewEvent::new(
                    EventKind::Reload,
                    actor,
                    format!("reload refused, running config and certificates kept: {e}"),
                ));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        drop(persisted);
        let session_keys = match (&self.secrets, secrets) {
            (Some(installed), Some(prepared)) => installed.install(prepared),
            _ => 0,
        };
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        let restart = if needs_restart.is_empty() {
            String::new()
        } else {
            format!(", needs restart: {needs_restart:?}")
        };
        self.events.push(NewEvent::new(
            EventKind::Reload,
            actor,
            format!("config reloaded: generation {generation}, {sites} sites, added {added:?}, removed {removed:?}{restart}"),
        ));
        Ok(ReloadReport {
            generation,
            sites,
            removed,
            added,
            needs_restart,
            secrets_reread,
            session_keys,
        })
    }

    /// Counts and records a refused reload; the error to answer with.
    fn refuse(&self, actor: &str, errors: ConfigErrors) -> OpError {
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
        OpError::Reload(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        sitesteer_config::parse(text, "<test>", std::path::Path::new(".")).expect("valid")
    }

    #[test]
    fn reports_added_removed_and_what_needs_a_restart() {
        let site = |name: &str, port: u16| {
            format!("[[site]]\nname = \"{name}\"\n[site.endpoints]\nhttp = \"127.0.0.1:{port}\"\n")
        };
        let old = config(&format!("{}{}", site("a", 1001), site("b", 1002)));
        let new = config(&format!(
            "[listen]\nhttp = \"127.0.0.1:18080\"\n{}{}",
            site("b", 1002),
            site("c", 1003)
        ));
        assert_eq!(missing(&old, &new), ["a"]);
        assert_eq!(missing(&new, &old), ["c"]);
        assert_eq!(needs_restart(&old, &new), ["listen"]);
        assert!(needs_restart(&old, &old).is_empty());
    }
}
