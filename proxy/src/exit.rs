//! The exit codes of every `sitesteer` command, and the helper that turns a runtime result
//! into one. A leaf module: it imports nothing from the crate, so the commands (`run`,
//! `check`, `ctl`, `drill`, `demo`) use it without importing the command line that
//! dispatches to them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success ([`ExitCode::SUCCESS`]) |
//! | 1 | [`EXIT_USAGE`]: a usage or validation error (bad arguments, an invalid config, a request the admin API refused) |
//! | 2 | [`EXIT_RUNTIME`]: a runtime failure (the runtime, a listener, an unreachable admin API) |
//! | 3 | [`EXIT_OBJECTIVE_MISSED`]: `sitesteer drill` ran, and the site missed an objective |

use std::process::ExitCode;

/// Exit code for usage and validation errors.
pub(crate) const EXIT_USAGE: u8 = 1;
/// Exit code for runtime failures.
pub(crate) const EXIT_RUNTIME: u8 = 2;
/// Exit code of a drill that missed an objective.
pub(crate) const EXIT_OBJECTIVE_MISSED: u8 = 3;

/// Maps a runtime result to an exit code, printing the error as one sentence.
pub(crate) fn runtime_result<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sitesteer: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
