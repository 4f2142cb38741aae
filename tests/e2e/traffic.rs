//! Steady test traffic through the proxy: a few workers sending GETs and safe MCP calls,
//! each outcome recorded with its time and the site that served it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{get, mcp};

/// One request's outcome.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// When it was sent, since the traffic started.
    pub sent: Duration,
    /// How long the answer (or the failure) took.
    pub took: Duration,
    /// The serving site (`x-sitesteer-site`), empty on failure.
    pub site: String,
    /// `Err` with what went wrong.
    pub result: Result<(), String>,
}

/// Running traffic; `stop` returns every outcome.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// When the traffic started.
    pub started: Instant,
}

impl Traffic {
    /// Starts `workers` loops against `proxy`, each pausing `pause` between requests.
    pub(crate) fn start(proxy: SocketAddr, workers: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let workers = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                let outcomes = outcomes.clone();
                tokio::spawn(async move {
                    let mut i = 0usize;
                    // Bounded: at most 100k requests per worker, and the caller's stop.
                    while !stop.load(Ordering::Relaxed) && i < 100_000 {
                        let sent = started.elapsed();
                        let asked = Instant::now();
                        let answer = match (w + i) % 3 {
                            0 => get(proxy, "/health").await,
                            1 => mcp(proxy, "ping", json!({}), None).await,
                            _ => mcp(proxy, "tools/list", json!({}), None).await,
                        };
                        let took = asked.elapsed();
                        let outcome = match answer {
                            Ok(a) if a.status == 200 => Outcome {
                                sent,
                                took,
                                site: a.header("x-sitesteer-site").to_string(),
                                result: Ok(()),
                            },
                            Ok(a) => Outcome {
                                sent,
                                took,
                                site: String::new(),
                                result: Err(format!(
                                    "HTTP {}: {}",
                                    a.status,
                                    String::from_utf8_lossy(&a.body)
                                )),
                            },
                            Err(e) => Outcome {
                                sent,
                                took,
                                site: String::new(),
                                result: Err(e),
                            },
                        };
                        outcomes.lock().expect("outcomes").push(outcome);
                        i += 1;
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            outcomes,
            workers,
            started,
        }
    }

    /// Time since the traffic started.
    pub(crate) fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the workers and returns every outcome, in send order.
    pub(crate) async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let mut out = self.outcomes.lock().expect("outcomes").clone();
        out.sort_by_key(|o| o.sent);
        out
    }
}

/// Fails the test, naming the first few, when any outcome failed; `during` says when.
pub(crate) fn assert_none_failed(outcomes: &[Outcome], during: &str) {
    let failed = failures(outcomes);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed {during}: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The failed outcomes.
pub(crate) fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.result.is_err()).collect()
}

/// Outcomes sent in `[from, to)` served by `site`.
pub(crate) fn served_by(outcomes: &[Outcome], site: &str, from: Duration, to: Duration) -> usize {
    outcomes
        .iter()
        .filter(|o| o.sent >= from && o.sent < to && o.site == site)
        .count()
}
