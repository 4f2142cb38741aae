//! What the proxy needs to know about MCP messages: the method (from the `Mcp-Method` header
//! of 2026-07-28 or the JSON-RPC body), which methods are safe to repeat on another site, and
//! how to read a JSON-RPC message from a plain JSON or an SSE body.

use serde_json::Value;

/// Methods that only read, so a retry on another site cannot repeat a side effect.
const SAFE_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// Method names used as metric labels; anything else is `other` (bounded cardinality).
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
];

/// Whether the JSON-RPC `method` is safe to send again.
pub fn is_safe_method(method: &str) -> bool {
    SAFE_METHODS.contains(&method)
}

/// `method` as a metrics label: itself when known, else `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The `method` and, for `tools/call`, the tool name of a single JSON-RPC message in `body`.
pub fn method_of(body: &[u8]) -> Option<(String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Params {
        name: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        method: Option<String>,
        params: Option<Params>,
    }
    let env = serde_json::from_slice::<Envelope>(body).ok()?;
    Some((env.method?, env.params.and_then(|p| p.name)))
}

/// The JSON-RPC message in an answer body: plain JSON, or the first SSE `data:` event
/// that parses.
pub fn message_of(body: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Some(v);
    }
    sse_messages(std::str::from_utf8(body).ok()?)
        .into_iter()
        .next()
}

/// The JSON values of the `data:` events of an SSE body, in order; events whose data does not
/// parse are skipped, and a last event without its blank line counts.
pub fn sse_messages(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            if let Ok(v) = serde_json::from_str(&data) {
                out.push(v);
            }
            data.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_method_and_judges_it() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert_eq!(
            method_of(body),
            Some(("tools/call".into(), Some("echo".into())))
        );
        assert!(is_safe_method("tools/list"));
        assert!(!is_safe_method("tools/call"));
        assert_eq!(method_of(b"[1,2]"), None);
        assert_eq!(method_of(b"not json"), None);
        assert_eq!(method_label("tools/list"), "tools/list");
        assert_eq!(method_label("x/evil-cardinality"), "other");
    }
}
