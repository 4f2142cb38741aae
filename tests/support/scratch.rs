//! Scratch folders for configs, state files and logs, removed when the test is done.

use std::path::PathBuf;

use crate::free_port;

/// A scratch folder under the system temp dir, removed on drop unless `SITESTEER_KEEP_SCRATCH`
/// (or `CHAOS_KEEP`) is set, for a post-mortem.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new, empty folder named after `tag`, this process and a free port (so that tests
    /// running at once never share one).
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sitesteer-test-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let keep = ["SITESTEER_KEEP_SCRATCH", "CHAOS_KEEP"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if keep {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
