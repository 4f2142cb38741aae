//! The secrets sitesteer reads from files, at start and again on every reload: the admin
//! token (`[admin] token_file`) and the session keys (`proxy.session_key_file`, see
//! [`crate::session`]). A reload reads both before it changes anything and is refused when
//! either file is missing or bad; once the new config is in, both are installed, so a
//! rotated token writes, and a revoked one stops writing, from the reload's answer on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use sitesteer_config::{Config, ConfigError};

use crate::session::{KeyRing, SessionCodec};

/// The secret files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SecretFile {
    /// `[admin] token_file`.
    AdminToken,
    /// `proxy.session_key_file`.
    SessionKeys,
}

impl SecretFile {
    /// The config key that names the file.
    fn key(self) -> &'static str {
        match self {
            Self::AdminToken => "admin.token_file",
            Self::SessionKeys => "proxy.session_key_file",
        }
    }

    /// The error of this file at `path` that cannot be read or holds no usable secret.
    fn unreadable(self, path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
        move |source| SecretError::Unreadable {
            file: self,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl std::fmt::Display for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AdminToken => "the admin token file",
            Self::SessionKeys => "the session key file",
        })
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    /// The file cannot be read (or, for the session keys, holds no usable key ring).
    #[error("cannot read {file} {}: {source}", path.display())]
    Unreadable {
        /// Which file.
        file: SecretFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token file holds nothing but blanks.
    #[error("the admin token file {} is empty", .0.display())]
    EmptyToken(PathBuf),
}

impl SecretError {
    /// The config key that names the file.
    fn key(&self) -> &'static str {
        match self {
            Self::Unreadable { file, .. } => file.key(),
            Self::EmptyToken(_) => SecretFile::AdminToken.key(),
        }
    }

    /// As a config error of the key naming the file, for a refused reload.
    pub(crate) fn to_config_error(&self) -> ConfigError {
        ConfigError {
            path: self.key().to_string(),
            line: None,
            message: self.to_string(),
        }
    }
}

/// Reads the admin token `path` names (`None` without a token file): its text, trimmed.
pub(crate) fn read_token(path: Option<&Path>) -> Result<Option<String>, SecretError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(SecretFile::AdminToken.unreadable(path))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SecretError::EmptyToken(path.to_path_buf()));
    }
    Ok(Some(token.to_string()))
}

/// The admin token writes need, when one is configured. Clones share it, so a reload
/// reaches the admin listener and the drill scheduler at once.
#[derive(Clone, Default)]
pub(crate) struct AdminToken(Arc<ArcSwapOption<String>>);

impl AdminToken {
    /// A token cell holding `token`.
    pub(crate) fn new(token: Option<String>) -> Self {
        Self(Arc::new(ArcSwapOption::from(token.map(Arc::new))))
    }

    /// The token now.
    pub(crate) fn current(&self) -> Option<Arc<String>> {
        self.0.load_full()
    }

    /// Replaces the token.
    fn set(&self, token: Option<String>) {
        self.0.store(token.map(Arc::new));
    }
}

/// The secrets in use, and the key file they came from (a reload keeps the path: a new one
/// needs a restart, which the reload says).
#[derive(Clone)]
pub(crate) struct Secrets {
    /// The admin token.
    pub token: AdminToken,
    /// The session codec (its keys).
    pub codec: SessionCodec,
    /// The key file the codec was loaded from.
    key_file: PathBuf,
}

/// Secrets read and checked by [`Secrets::prepare`], not yet in use.
pub(crate) struct Prepared {
    token: Option<String>,
    keys: KeyRing,
}

impl Secrets {
    /// Reads both secret files of `config`, creating the key file when missing.
    pub(crate) fn open(config: &Config) -> Result<Self, SecretError> {
        let token = read_token(config.admin.token_file.as_deref())?;
        let key_file = config.proxy.session_key_file.clone();
        let codec = SessionCodec::load_or_create(&key_file)
            .map_err(SecretFile::SessionKeys.unreadable(&key_file))?;
        Ok(Self {
            token: AdminToken::new(token),
            codec,
            key_file,
        })
    }

    /// Reads and checks the files `config` names, changing nothing; every problem found.
    pub(crate) fn prepare(&self, config: &Config) -> Result<Prepared, Vec<SecretError>> {
        let token = read_token(config.admin.token_file.as_deref());
        let keys = KeyRing::read(&self.key_file)
            .map_err(SecretFile::SessionKeys.unreadable(&self.key_file));
        match (token, keys) {
            (Ok(token), Ok(keys)) => Ok(Prepared { token, keys }),
            (token, keys) => Err([token.err(), keys.err()].into_iter().flatten().collect()),
        }
    }

    /// Puts prepared secrets in use; returns how many session keys are in use.
    pub(crate) fn install(&self, prepared: Prepared) -> usize {
        let keys = prepared.keys.len();
        self.token.set(prepared.token);
        self.codec.install(prepared.keys);
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_reads_both_files_and_a_bad_one_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("sitesteer-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let token = dir.join("token");
        std::fs::write(&token, "first-token\n").expect("write");
        let text = format!(
            "[admin]\ntoken_file = {token:?}\n[proxy]\nsession_key_file = {:?}\n[[site]]\nname = \"a\"\n[site.endpoints]\nhttp = \"127.0.0.1:1\"\n",
            dir.join("key")
        );
        let config = sitesteer_config::parse(&text, "<test>", &dir).expect("valid");
        let secrets = Secrets::open(&config).expect("open");
        assert_eq!(
            secrets.token.current().as_deref().map(String::as_str),
            Some("first-token")
        );
        std::fs::write(&token, "second-token").expect("write");
        let prepared = secrets.prepare(&config).expect("good files");
        assert_eq!(
            secrets.token.current().as_deref().map(String::as_str),
            Some("first-token")
        );
        assert_eq!(secrets.install(prepared), 1);
        assert_eq!(
            secrets.token.current().as_deref().map(String::as_str),
            Some("second-token")
        );
        std::fs::write(&token, "  \n").expect("write");
        std::fs::write(dir.join("key"), "short").expect("write");
        let errors = secrets.prepare(&config).err().expect("both refused");
        let keys: Vec<&str> = errors.iter().map(SecretError::key).collect();
        assert_eq!(keys, ["admin.token_file", "proxy.session_key_file"]);
        assert_eq!(
            secrets.token.current().as_deref().map(String::as_str),
            Some("second-token")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
