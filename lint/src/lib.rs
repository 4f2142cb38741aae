//! Architecture checks for the sitesteer workspace, run by `make lint` through
//! `cargo test -p sitesteer-lint`.
//!
//! The one check today: the top-level modules of every crate depend on each other one way
//! only (`cli → server → {control plane, data plane} → steer → …`). A module names another
//! through a `crate::` path (`use crate::steer::Attempts`, `use crate::{http, tcp}`, or inline
//! `crate::metrics::REGISTRY`); comments, string literals and `#[cfg(test)]` items do not count. A cycle is reported
//! with every step and the file and line that makes it.
//!
//! It reads source text instead of compiling, so it has no dependencies and runs in a second.
//! `super::` paths stay inside a module and so never make a cycle between top-level modules.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_docs)]

mod cfg_test;
mod graph;
mod refs;
mod strip;
mod tree;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use graph::{Cycle, Location, ModuleGraph};
pub use tree::workspace_crate_roots;

/// Why a crate could not be read.
#[derive(Debug)]
pub enum Error {
    /// A file or directory could not be read.
    Read(PathBuf, io::Error),
    /// `mod name;` names a file that does not exist.
    MissingModule {
        /// The file with the declaration.
        declared_in: PathBuf,
        /// Its line.
        line: usize,
        /// The module's name.
        name: String,
    },
    /// More files than any crate of ours has: a `#[path]` loop.
    TooManyFiles(PathBuf),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            Self::MissingModule {
                declared_in,
                line,
                name,
            } => write!(
                f,
                "{}:{line}: `mod {name};` has no file {name}.rs or {name}/mod.rs",
                declared_in.display()
            ),
            Self::TooManyFiles(path) => {
                write!(
                    f,
                    "{}: over 10,000 module files (a #[path] loop?)",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// Every module cycle in every crate of the workspace at `workspace`.
pub fn workspace_cycles(workspace: &Path) -> Result<Vec<Cycle>, Error> {
    let mut cycles = Vec::new();
    for root in workspace_crate_roots(workspace)? {
        cycles.extend(ModuleGraph::read(&root)?.cycles());
    }
    Ok(cycles)
}
