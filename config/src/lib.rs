//! sitesteer's configuration: the TOML schema, its defaults and its validation.
//!
//! The pipeline is `config.toml → toml::Table → RawConfig (serde, unknown keys refused) →
//! validate → Config`. Each section and each `[[site]]`, `[[route]]`, `[[probe]]` and
//! `[[geo]]` entry is read on its own, so one run reports every error in the file, each with
//! its key path and line. Nothing past this crate sees a string that means an address or a
//! duration.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

pub mod cron;
mod defaults;
mod duration;
mod error;
mod forwarding;
mod locate;
mod model;
mod raw;
mod validate;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use cron::{civil_from_days, format_utc_ms};
pub use defaults::*;
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use forwarding::{ProxyProtocol, TrustedProxies};
pub use model::*;

use locate::Locator;
use raw::RawConfig;
use validate::Problems;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        origin: origin.clone(),
        errors: vec![ConfigError {
            path: String::new(),
            line: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &origin, base_dir)
}

/// Validates config text; `origin` names it in errors and `base_dir` anchors relative paths.
pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        origin: origin.to_string(),
        errors,
    };
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(fail(vec![ConfigError {
                path: String::new(),
                line: e
                    .span()
                    .map(|s| Locator::without_spans(text).line_at(s.start)),
                message: format!("not valid TOML: {}", e.message()),
            }]))
        }
    };
    // Spans come from toml_edit, which is only shown text that parsed: it panics on some
    // invalid files (found by fuzzing; fuzz/regressions/config_parse).
    let locator = Locator::new(text);
    let mut problems = Problems::default();
    let raw = read_sections(table, &mut problems);
    let config = validate::validate(raw, base_dir, &mut problems);
    match config {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => {
            let mut errors: Vec<ConfigError> = problems
                .0
                .into_iter()
                .map(|(path, message)| ConfigError {
                    line: locator.line_of(&path),
                    path,
                    message,
                })
                .collect();
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(fail(errors))
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "state_file",
    "site",
    "route",
    "probe",
    "health",
    "proxy",
    "objectives",
    "dns",
    "geo",
    "cluster",
    "webhook",
    "tier",
    "drill",
    "tls",
    "limits",
];

/// Deserializes each section on its own so that errors in one do not hide the others.
fn read_sections(mut table: toml::Table, p: &mut Problems) -> RawConfig {
    for key in table.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            p.0.push((
                key.clone(),
                format!(
                    "unknown key `{key}`; expected one of {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            ));
        }
    }
    let site_declared = table.contains_key("site");
    let mut take = |key: &str| table.remove(key);
    RawConfig {
        site_declared,
        listen: section(take("listen"), "listen", p),
        admin: section(take("admin"), "admin", p),
        state_file: section(take("state_file"), "state_file", p),
        site: entries(take("site"), "site", p),
        route: entries(take("route"), "route", p),
        probe: entries(take("probe"), "probe", p),
        health: section(take("health"), "health", p),
        proxy: section(take("proxy"), "proxy", p),
        objectives: section(take("objectives"), "objectives", p),
        dns: section(take("dns"), "dns", p),
        geo: entries(take("geo"), "geo", p),
        cluster: section(take("cluster"), "cluster", p),
        webhook: entries(take("webhook"), "webhook", p),
        tier: entries(take("tier"), "tier", p),
        drill: entries(take("drill"), "drill", p),
        tls: section(take("tls"), "tls", p),
        limits: section(take("limits"), "limits", p),
    }
}

fn section<T: DeserializeOwned + Default>(
    value: Option<toml::Value>,
    path: &str,
    p: &mut Problems,
) -> T {
    match value {
        None => T::default(),
        Some(v) => deserialize(v, path, p).unwrap_or_default(),
    }
}

fn entries<T: DeserializeOwned>(
    value: Option<toml::Value>,
    path: &str,
    p: &mut Problems,
) -> Vec<T> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| deserialize(item, &format!("{path}[{i}]"), p))
            .collect(),
        Some(_) => {
            p.0.push((
                path.to_string(),
                format!("expected an array of tables ([[{path}]])"),
            ));
            Vec::new()
        }
    }
}

fn deserialize<T: DeserializeOwned>(value: toml::Value, path: &str, p: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let message = e.into_inner().to_string();
            let mut full = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            // serde names an unknown key in its message; point the path at that key.
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
            {
                if !full.ends_with(&format!(".{field}")) {
                    full = format!("{full}.{field}");
                }
            }
            let message = message.lines().next().unwrap_or_default().to_string();
            p.0.push((full, message));
            None
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dns_guard;
#[cfg(test)]
mod tests_retry_budget;
#[cfg(test)]
mod tests_tls;
