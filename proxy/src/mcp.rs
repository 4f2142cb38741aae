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

/// The JSON-RPC error code of MCP 2026-07-28 for standard headers (`Mcp-Method`, `Mcp-Name`)
/// that are missing, malformed or contradict the body; answered with HTTP 400.
pub const HEADER_MISMATCH: i64 = -32020;

/// `Mcp-Name` as the body carries it: a value in the spec's sentinel form
/// `=?base64?{standard Base64 of UTF-8}?=` decoded, any other value as it is; `None` when
/// the sentinel does not decode.
pub fn decode_header_value(value: &str) -> Option<String> {
    use base64::Engine;
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_string()),
    }
}

/// Why the `Mcp-Method` / `Mcp-Name` headers of a POST contradict its `body`, when they do:
/// the body is one JSON-RPC message whose `method`, or whose `params.name` (tools, prompts)
/// or `params.uri` (resources), is not what the header says, or a header value is malformed.
/// A body that is not a JSON object contradicts nothing here (the site answers it with a
/// parse error); its headers are still never trusted for safety.
pub fn header_mismatch(method: Option<&str>, name: Option<&str>, body: &[u8]) -> Option<String> {
    let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let body_method = message.get("method").and_then(Value::as_str);
    if let Some(claimed) = method {
        if Some(claimed) != body_method {
            return Some(format!(
                "the Mcp-Method header says {claimed:?} but the body's method is {}",
                body_method.map_or("missing".to_string(), |m| format!("{m:?}"))
            ));
        }
    }
    if let Some(claimed) = name {
        let Some(claimed) = decode_header_value(claimed) else {
            return Some("the Mcp-Name header is not valid =?base64?...?=".to_string());
        };
        let params = message.get("params");
        let body_name = ["name", "uri"]
            .iter()
            .find_map(|key| params.and_then(|p| p.get(key)).and_then(Value::as_str));
        if Some(claimed.as_str()) != body_name {
            return Some(format!(
                "the Mcp-Name header says {claimed:?} but the body names {}",
                body_name.map_or("nothing".to_string(), |n| format!("{n:?}"))
            ));
        }
    }
    None
}

/// The JSON-RPC error answer (HTTP 400) to a request whose headers contradict its body.
pub fn header_mismatch_answer(body: &[u8], why: &str) -> Vec<u8> {
    let id = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|m| m.get("id").cloned())
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or(Value::Null);
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": HEADER_MISMATCH, "message": format!("header mismatch: {why}; refused before any site saw it")},
    })
    .to_string()
    .into_bytes()
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

    #[test]
    fn headers_that_contradict_the_body_are_found() {
        let call =
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_all"}}"#;
        assert!(header_mismatch(Some("tools/call"), Some("delete_all"), call).is_none());
        assert!(header_mismatch(None, None, call).is_none());
        let why = header_mismatch(Some("ping"), None, call).expect("method");
        assert!(
            why.contains("\"ping\"") && why.contains("\"tools/call\""),
            "{why}"
        );
        assert!(header_mismatch(Some("tools/call"), Some("echo"), call).is_some());
        // The sentinel form is decoded before comparing; a broken one is malformed.
        let sentinel = "=?base64?ZGVsZXRlX2FsbA==?=";
        assert!(header_mismatch(Some("tools/call"), Some(sentinel), call).is_none());
        assert!(header_mismatch(None, Some("=?base64?!!?="), call).is_some());
        let read =
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
        assert!(header_mismatch(Some("resources/read"), Some("file:///a"), read).is_none());
        assert!(header_mismatch(Some("resources/read"), Some("file:///b"), read).is_some());
        // A response or a body without a method contradicts a method header.
        assert!(header_mismatch(
            Some("ping"),
            None,
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        )
        .is_some());
        // Not a JSON object: nothing to contradict (the site answers a parse error).
        assert!(header_mismatch(Some("ping"), None, b"not json").is_none());
        assert!(header_mismatch(Some("ping"), None, b"[1]").is_none());
        let answer: Value =
            serde_json::from_slice(&header_mismatch_answer(call, "x")).expect("json");
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["error"]["code"], HEADER_MISMATCH);
    }

    proptest::proptest! {
        #[test]
        fn header_checks_never_panic(method in ".{0,20}", name in ".{0,40}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = header_mismatch(Some(&method), Some(&name), &body);
            let _ = header_mismatch_answer(&body, &name);
        }
    }
}
