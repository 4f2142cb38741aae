//! Where the `sitesteer` binary under test and the workspace are.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The binary registered by [`use_sitesteer_bin`].
static REGISTERED: OnceLock<PathBuf> = OnceLock::new();

/// The workspace's root folder (this crate lives in its `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Registers the binary under test, once per process: the e2e suite passes
/// `env!("CARGO_BIN_EXE_sitesteer")`, which cargo builds before it runs the suite. Later calls
/// keep the first path. Returns the path [`sitesteer_bin`] will answer.
pub fn use_sitesteer_bin(path: impl Into<PathBuf>) -> PathBuf {
    let path = path.into();
    REGISTERED.get_or_init(|| path);
    sitesteer_bin()
}

/// The `sitesteer` binary under test: `SITESTEER_BIN` if set (`make chaos` points it at the
/// release build), else the one registered with [`use_sitesteer_bin`]. Panics with what to do
/// when neither names one, rather than testing some stale build by accident.
pub fn sitesteer_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SITESTEER_BIN") {
        return PathBuf::from(bin);
    }
    REGISTERED.get().cloned().unwrap_or_else(|| {
        panic!(
            "no sitesteer binary: set SITESTEER_BIN, or call use_sitesteer_bin(env!(\"CARGO_BIN_EXE_sitesteer\")) first"
        )
    })
}
