//! What the proxy needs to know about MCP messages: which methods are safe to repeat on
//! another site, read from the `Mcp-Method` header (2026-07-28) or the JSON-RPC body.

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

/// Whether the JSON-RPC `method` is safe to send again.
pub fn is_safe_method(method: &str) -> bool {
    SAFE_METHODS.contains(&method)
}

/// The `method` of a single JSON-RPC message in `body`, if it has one.
pub fn method_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        method: Option<String>,
    }
    serde_json::from_slice::<Envelope>(body).ok()?.method
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_method_and_judges_it() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
        assert_eq!(method_of(body).as_deref(), Some("tools/list"));
        assert!(is_safe_method("tools/list"));
        assert!(!is_safe_method("tools/call"));
        assert_eq!(method_of(b"[1,2]"), None);
        assert_eq!(method_of(b"not json"), None);
    }
}
