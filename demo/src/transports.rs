//! Per-transport bookkeeping of a demo site.
//!
//! This module owns the [`Transport`] enum naming the four ways a demo site
//! speaks MCP (Streamable HTTP, WebSocket, HTTP+SSE, raw TCP), the counters of
//! messages received and connections currently open per transport, and the
//! [`OpenConnection`] guard that keeps the open count honest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

/// A transport a demo site serves MCP over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    /// Streamable HTTP, `POST /mcp`.
    Http,
    /// WebSocket, `GET /mcp/ws`.
    Ws,
    /// MCP 2024-11-05 HTTP+SSE, `GET|POST /mcp/sse`.
    Sse,
    /// Newline-delimited JSON-RPC on the optional TCP listener.
    Tcp,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Http,
        Transport::Ws,
        Transport::Sse,
        Transport::Tcp,
    ];

    /// Name used in logs and in `GET /control`.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Tcp => "tcp",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters for one transport.
#[derive(Default)]
struct Counters {
    /// JSON-RPC messages received (including malformed ones).
    messages: AtomicU64,
    /// Connections (or streams) currently open.
    open: AtomicU64,
}

/// Message and open-connection counters of every transport of one site.
#[derive(Default)]
pub(super) struct TransportStats {
    counters: [Counters; 4],
}

impl TransportStats {
    /// Counts one message received over `transport`.
    pub(super) fn count_message(&self, transport: Transport) {
        self.counters[transport.index()]
            .messages
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Messages received so far over `transport`.
    pub(super) fn messages(&self, transport: Transport) -> u64 {
        self.counters[transport.index()]
            .messages
            .load(Ordering::Relaxed)
    }

    /// Connections currently open over `transport`.
    pub(super) fn open(&self, transport: Transport) -> u64 {
        self.counters[transport.index()]
            .open
            .load(Ordering::Relaxed)
    }

    /// `{"ws":N,"sse":N,"tcp":N}`: open connections of the long-lived transports.
    pub(super) fn connections_json(&self) -> Value {
        json!({
            "ws": self.open(Transport::Ws),
            "sse": self.open(Transport::Sse),
            "tcp": self.open(Transport::Tcp),
        })
    }

    /// `{"http":N,"ws":N,"sse":N,"tcp":N}`: messages received per transport.
    pub(super) fn messages_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for transport in Transport::ALL {
            map.insert(
                transport.as_str().to_string(),
                Value::from(self.messages(transport)),
            );
        }
        Value::Object(map)
    }
}

/// Counts one open connection of a transport for as long as it lives.
pub(super) struct OpenConnection {
    stats: Arc<TransportStats>,
    transport: Transport,
}

impl OpenConnection {
    /// Marks one connection of `transport` as open until the guard is dropped.
    pub(super) fn new(stats: Arc<TransportStats>, transport: Transport) -> OpenConnection {
        stats.counters[transport.index()]
            .open
            .fetch_add(1, Ordering::Relaxed);
        OpenConnection { stats, transport }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.counters[self.transport.index()]
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_open_connections() {
        let stats = Arc::new(TransportStats::default());
        let first = OpenConnection::new(Arc::clone(&stats), Transport::Ws);
        let second = OpenConnection::new(Arc::clone(&stats), Transport::Ws);
        let tcp = OpenConnection::new(Arc::clone(&stats), Transport::Tcp);
        assert_eq!(stats.connections_json(), json!({"ws":2,"sse":0,"tcp":1}));
        drop(first);
        drop(tcp);
        assert_eq!(stats.open(Transport::Ws), 1);
        drop(second);
        assert_eq!(stats.connections_json(), json!({"ws":0,"sse":0,"tcp":0}));
        stats.count_message(Transport::Http);
        assert_eq!(
            stats.messages_json(),
            json!({"http":1,"ws":0,"sse":0,"tcp":0})
        );
    }
}
