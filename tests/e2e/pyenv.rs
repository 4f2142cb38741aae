//! Real MCP clients and servers nobody here wrote, from the Python venv that `make venv`
//! builds (the official MCP Python SDK and `websockets`), run as child processes that print
//! JSON lines.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::harness::Proc;

/// Most stderr kept per script, for failure messages.
const MAX_STDERR: usize = 64 << 10;

/// The venv's Python (`SITESTEER_PYTHON`, else `<workspace>/build/venv/bin/python`); panics
/// with what to do when it is missing or lacks the packages.
pub(crate) fn python() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let python = std::env::var_os("SITESTEER_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    sitesteer_test_support::workspace_root().join("build/venv/bin/python")
                });
            let ok = Command::new(&python)
                .args(["-c", "import mcp, websockets"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                Ok(python)
            } else {
                Err(format!(
                    "{} cannot import mcp and websockets: run `make venv` (or point \
                     SITESTEER_PYTHON at a Python that has mcp==1.26.0 and websockets==15.0.1)",
                    python.display()
                ))
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A Python script from `tests/e2e/py` running as a child; its stdout JSON lines arrive as
/// events. Killed on drop.
pub(crate) struct PyProc {
    /// What ran, for messages.
    pub label: String,
    /// Every event read so far.
    pub seen: Vec<Value>,
    lines: mpsc::UnboundedReceiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// The process, killed on drop.
    _proc: Proc,
}

impl PyProc {
    /// Starts `tests/e2e/py/<script>` with `args`.
    pub(crate) fn spawn(script: &str, args: &[&str]) -> Self {
        let path = sitesteer_test_support::workspace_root()
            .join("tests/e2e/py")
            .join(script);
        let mut child = Command::new(python())
            .arg(&path)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "raw", "line": line}));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut s = sink.lock().expect("stderr");
                if s.len() < MAX_STDERR {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Self {
            label: format!("{script} {}", args.join(" ")),
            seen: Vec::new(),
            lines,
            stderr,
            _proc: Proc { child },
        }
    }

    /// What the script wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Waits up to `limit` for the event named `name`; panics, with everything the script
    /// said, on timeout, on exit, or on an `error` or `gave_up` event.
    pub(crate) async fn expect(&mut self, name: &str, limit: Duration) -> Value {
        self.try_expect(name, limit)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::expect`], with the failure (and everything the script said) as `Err`.
    pub(crate) async fn try_expect(
        &mut self,
        name: &str,
        limit: Duration,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.recv()).await;
            let event = match next {
                Ok(Some(event)) => event,
                Ok(None) => return Err(self.failure(&format!("exited before `{name}`"))),
                Err(_) => return Err(self.failure(&format!("no `{name}` within {limit:?}"))),
            };
            self.seen.push(event.clone());
            match event["event"].as_str() {
                Some(n) if n == name => return Ok(event),
                Some("error" | "gave_up") => {
                    return Err(self.failure(&format!("failed before `{name}`")))
                }
                _ => {}
            }
        }
    }

    /// The events named `name` seen so far.
    pub(crate) fn seen_named(&self, name: &str) -> Vec<&Value> {
        self.seen.iter().filter(|e| e["event"] == name).collect()
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{}: {what}\nevents: {:#?}\nstderr:\n{}",
            self.label,
            self.seen,
            self.stderr()
        )
    }
}
