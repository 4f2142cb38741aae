//! What a shed request hears: every site that could take it is at its cap
//! (`[[site]] max_in_flight`) and no slot freed within `proxy.queue_timeout` (or the queue
//! was full). HTTP gets `503` with `Retry-After` and a JSON body (a JSON-RPC error for an
//! MCP POST, with the request's id); a TCP client gets one JSON-RPC error line, as a client
//! over `limits.max_connections` does ([`crate::limits::TCP_REFUSAL`]).

use serde_json::Value;

/// The status of a shed request.
pub(crate) const STATUS: u16 = 503;

/// Seconds a shed client is asked to wait (`Retry-After`): caps are about bursts.
pub(crate) const RETRY_AFTER_S: u32 = 1;

/// The JSON-RPC error code of a shed request (in the range JSON-RPC leaves to
/// implementations; `-32000` is the overload code the TCP refusal uses too).
const OVERLOADED: i64 = -32000;

const MESSAGE: &str = "overloaded: every site is at its max_in_flight; retry after 1s";

/// The body of a shed HTTP request: a JSON-RPC error answering `id` when the request is a
/// JSON-RPC call, else `{"error": ...}` as the other refusals ([`crate::limits::fail_body`]).
pub(crate) fn http_body(id: Option<&Value>) -> Vec<u8> {
    let body = match id {
        Some(id) => serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": OVERLOADED, "message": MESSAGE, "data": {"retry_after_s": RETRY_AFTER_S}},
        }),
        None => serde_json::json!({"error": MESSAGE}),
    };
    body.to_string().into_bytes()
}

/// The line a shed TCP client reads before the close.
pub(crate) const TCP_LINE: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"overloaded: every site is at its max_in_flight; retry after 1s\"}}\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mcp_call_gets_a_json_rpc_error_with_its_id_and_anything_else_an_error_object() {
        let rpc: Value = serde_json::from_slice(&http_body(Some(&Value::from(7)))).unwrap();
        assert_eq!(rpc["id"], 7);
        assert_eq!(rpc["error"]["code"], OVERLOADED);
        let plain: Value = serde_json::from_slice(&http_body(None)).unwrap();
        assert!(plain["error"].as_str().unwrap().contains("max_in_flight"));
        let line: Value = serde_json::from_slice(TCP_LINE.trim_ascii_end()).unwrap();
        assert_eq!(line["error"]["message"], MESSAGE);
    }
}
