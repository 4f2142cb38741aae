//! Webhooks: every event POSTed as JSON to each configured URL, with retries and
//! exponential backoff. Each webhook has its own bounded queue and task, so a slow or dead
//! receiver never blocks the data plane or other receivers; when a queue is full, events are
//! dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use sitesteer_config::Webhook;
use sitesteer_probes::probe::client;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::events::{Event, EventLog};
use crate::metrics::Metrics;

/// Events queued per webhook before new ones are dropped.
pub(crate) const QUEUE: usize = 1024;
/// First pause between attempts (doubled after each failure, up to [`MAX_BACKOFF`]).
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts one delivery task per webhook, fed from the events log.
pub(crate) fn start(hooks: &[Webhook], events: &Arc<EventLog>, metrics: &Arc<Metrics>) {
    if hooks.is_empty() {
        return;
    }
    let mut queues = Vec::new();
    for hook in hooks {
        let (tx, rx) = mpsc::channel::<Arc<Event>>(QUEUE);
        tokio::spawn(deliver(hook.clone(), rx, metrics.clone()));
        queues.push(tx);
    }
    let mut live = events.subscribe();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        loop {
            let event = match live.recv().await {
                Ok(e) => Arc::new(e),
                Err(RecvError::Lagged(n)) => {
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["dropped"])
                        .inc_by(n);
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            for q in &queues {
                if q.try_send(event.clone()).is_err() {
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["dropped"])
                        .inc();
                }
            }
        }
    });
}

async fn deliver(hook: Webhook, mut queue: mpsc::Receiver<Arc<Event>>, metrics: Arc<Metrics>) {
    let host = hook.addr.to_string();
    while let Some(event) = queue.recv().await {
        let body = Bytes::from(serde_json::to_vec(&*event).unwrap_or_default());
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=hook.attempts {
            let sent = tokio::time::timeout(
                hook.timeout,
                client::request(
                    hook.addr,
                    Method::POST,
                    &hook.path,
                    &host,
                    &[("content-type", "application/json".to_string())],
                    Some(body.clone()),
                ),
            )
            .await;
            match sent {
                Ok(Ok(answer)) if answer.status.is_success() => {
                    metrics.webhook_deliveries.with_label_values(&["ok"]).inc();
                    break;
                }
                _ if attempt == hook.attempts => {
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["failed"])
                        .inc();
                    tracing::warn!(url = %hook.url, event = event.id, attempts = attempt, "webhook delivery failed; event given up");
                }
                _ => {
                    metrics
                        .webhook_deliveries
                        .with_label_values(&["retry"])
                        .inc();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
