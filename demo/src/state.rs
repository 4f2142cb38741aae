//! The state every transport of a demo site shares: its [`Mode`], its
//! control settings and its [`SiteState`] (sessions, counters, shutdown).
//!
//! A leaf below the transports and the JSON-RPC dispatch, so that they can
//! all read it without depending on the site's router and lifecycle.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::HeaderValue;
use serde::Serialize;
use tokio::sync::watch;

use crate::sessions::{Sessions, SseSessions};
use crate::transports::TransportStats;

/// How a demo site misbehaves, set through its control endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Answer normally.
    Ok,
    /// Sleep `delay_ms` before answering (each HTTP request, WebSocket frame
    /// or TCP line).
    Slow,
    /// Answer 500 with a JSON body; WebSocket and TCP messages get a JSON-RPC
    /// error -32000 "injected failure".
    Error,
    /// Never answer; the request stays open until the client gives up or the
    /// site shuts down (then it gets a 503). Open WebSockets and TCP
    /// connections stay open but stop answering.
    Hang,
    /// HTTP looks fine (`/health` answers 200) but every MCP request gets a
    /// malformed JSON-RPC answer: what an `mcp` probe must catch and an `http`
    /// probe cannot.
    Badrpc,
    /// Close connections mid-response: an HTTP answer gets its headers and
    /// the first bytes of its body, then the connection is cut; WebSocket and
    /// TCP connections are closed on their next message.
    Drop,
}

/// Current control settings, as read and written through `/control`.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Control {
    pub(crate) mode: Mode,
    pub(crate) delay_ms: u64,
}

/// Shared state of one site, used by every transport.
pub(crate) struct SiteState {
    /// The site's name.
    pub(crate) name: String,
    /// The name as the value of `x-demo-site`.
    pub(crate) site_header: HeaderValue,
    /// The body of `GET /`.
    pub(crate) root_body: Bytes,
    /// The body of the health routes.
    pub(crate) health_body: Bytes,
    /// The mode and delay, set through `/control`.
    pub(crate) control: Mutex<Control>,
    /// Streamable HTTP sessions.
    pub(crate) sessions: Mutex<Sessions>,
    /// HTTP+SSE streams by session id.
    pub(crate) sse: Mutex<SseSessions>,
    /// The `increment` tool's counter.
    pub(crate) counter: AtomicU64,
    /// Messages and open connections per transport.
    pub(crate) transports: Arc<TransportStats>,
    /// Turns true when the site shuts down.
    pub(crate) shutdown_rx: watch::Receiver<bool>,
}

/// Locks a mutex, recovering the data if a previous holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SiteState {
    /// The current mode and delay.
    pub(crate) fn control(&self) -> Control {
        *lock(&self.control)
    }

    /// Resolves once the site is shutting down (or the server is gone).
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown_rx.clone();
        // An Err means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|down| *down).await;
    }
}
