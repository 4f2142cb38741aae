//! JSON-RPC 2.0 handling shared by every transport of a demo site.
//!
//! This module owns message validation, the MCP method dispatch
//! (`initialize`, `ping`, `tools/list`, `tools/call`), the two demo tools
//! (`echo`, `increment`) and how the site's [`Mode`] shapes the answers of the
//! message-oriented transports (WebSocket, HTTP+SSE, raw TCP). Transports only
//! move bytes; they all answer through [`handle_rpc`] or [`handle_in_mode`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::state::{Mode, SiteState};

/// Protocol versions this server speaks; the first one is preferred.
pub(super) const SUPPORTED_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// JSON-RPC error codes used by this server.
pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;
pub(super) const METHOD_NOT_FOUND: i64 = -32601;
pub(super) const INVALID_PARAMS: i64 = -32602;
/// Implementation-defined server error used by [`Mode::Error`].
pub(super) const INJECTED_FAILURE: i64 = -32000;

/// A well-formed JSON-RPC call: a request (with an id) or a notification.
#[derive(Debug)]
pub(super) struct Call {
    id: Option<Value>,
    method: String,
    params: Option<Value>,
}

impl Call {
    /// The called method.
    pub(super) fn method(&self) -> &str {
        &self.method
    }

    /// The id to put in a reply: the call's id if it is a string or number,
    /// `null` otherwise.
    pub(super) fn reply_id(&self) -> Value {
        match &self.id {
            Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
            _ => Value::Null,
        }
    }
}

/// A message that passed validation.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A request or notification.
    Call(Call),
    /// A response or error sent by the client: acknowledged, never answered.
    ClientReply,
}

/// What the dispatcher makes of one message.
#[derive(Debug)]
pub(super) enum Answer {
    /// Nothing to send back (a notification or a client's reply).
    Nothing,
    /// The message is not valid JSON-RPC; the body is the error to send
    /// (Streamable HTTP pairs it with a 400).
    Invalid(Value),
    /// The reply (result or error) to a well-formed request.
    Reply(Value),
}

/// A JSON-RPC success response.
pub(super) fn result_body(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// A JSON-RPC error response.
pub(super) fn error_body(id: Value, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    })
}

/// The well-formed but wrong answer of [`Mode::Badrpc`].
pub(super) fn garbage_body() -> Value {
    json!({ "jsonrpc": "2.0", "id": "not-yours", "result": "garbage" })
}

/// Checks that `message` is a single JSON-RPC 2.0 message; on failure returns
/// the error response to send.
pub(super) fn validate(message: Value) -> Result<Incoming, Value> {
    let mut message: Map<String, Value> = match message {
        Value::Object(map) => map,
        Value::Array(_) => {
            return Err(error_body(
                Value::Null,
                INVALID_REQUEST,
                "batch requests are not supported",
            ))
        }
        _ => {
            return Err(error_body(
                Value::Null,
                INVALID_REQUEST,
                "request must be a JSON object",
            ))
        }
    };
    let id = message.remove("id");
    let reply_id = match &id {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(error_body(
            reply_id,
            INVALID_REQUEST,
            "jsonrpc must be \"2.0\"",
        ));
    }
    let method = match message.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => {
            return Err(error_body(
                reply_id,
                INVALID_REQUEST,
                "method must be a string",
            ))
        }
        None if message.contains_key("result") || message.contains_key("error") => {
            return Ok(Incoming::ClientReply);
        }
        None => return Err(error_body(reply_id, INVALID_REQUEST, "missing method")),
    };
    Ok(Incoming::Call(Call {
        id,
        method,
        params: message.remove("params"),
    }))
}

/// Answers a validated call.
pub(super) fn answer(state: &SiteState, call: Call) -> Answer {
    let Call { id, method, params } = call;
    let Some(id) = id else {
        tracing::debug!(site = %state.name, method, "mcp notification");
        return Answer::Nothing;
    };
    if !matches!(id, Value::String(_) | Value::Number(_)) {
        return Answer::Invalid(error_body(
            Value::Null,
            INVALID_REQUEST,
            "id must be a string or number",
        ));
    }
    tracing::debug!(site = %state.name, method, "mcp request");
    let params = params.as_ref();
    Answer::Reply(match method.as_str() {
        "initialize" => initialize(state, id, params),
        "ping" => result_body(id, json!({})),
        "tools/list" => result_body(id, json!({ "tools": tool_list() })),
        "tools/call" => tools_call(state, id, params),
        _ => error_body(id, METHOD_NOT_FOUND, "method not found"),
    })
}

/// Validates and answers one message.
pub(super) fn dispatch(state: &SiteState, message: Value) -> Answer {
    match validate(message) {
        Ok(Incoming::Call(call)) => answer(state, call),
        Ok(Incoming::ClientReply) => Answer::Nothing,
        Err(error) => Answer::Invalid(error),
    }
}

/// The response to `message`: `Some` for requests (and malformed messages),
/// `None` for notifications and client replies.
pub(super) fn handle_rpc(state: &SiteState, message: Value) -> Option<Value> {
    match dispatch(state, message) {
        Answer::Nothing => None,
        Answer::Invalid(reply) | Answer::Reply(reply) => Some(reply),
    }
}

/// Whether `message` expects an answer (it is not a notification or a
/// client's reply).
fn expects_answer(message: &Value) -> bool {
    match message {
        Value::Object(map) => match map.get("method") {
            Some(_) => map.contains_key("id"),
            None => !(map.contains_key("result") || map.contains_key("error")),
        },
        _ => true,
    }
}

/// Answers a parsed message as `mode` dictates, without any delay: nothing
/// in [`Mode::Hang`], an injected error in [`Mode::Error`], garbage in
/// [`Mode::Badrpc`], the real answer otherwise.
pub(super) fn respond(state: &SiteState, mode: Mode, message: Value) -> Option<Value> {
    match mode {
        Mode::Hang | Mode::Drop => None,
        Mode::Error => expects_answer(&message).then(|| {
            let id = match message.get("id") {
                Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
                _ => Value::Null,
            };
            error_body(id, INJECTED_FAILURE, "injected failure")
        }),
        Mode::Badrpc => expects_answer(&message).then(garbage_body),
        Mode::Ok | Mode::Slow => handle_rpc(state, message),
    }
}

/// Whether the site's mode says to cut a message-oriented connection (a
/// WebSocket, a TCP connection) instead of answering ([`Mode::Drop`]).
pub(super) fn closes_connection(state: &SiteState) -> bool {
    state.control().mode == Mode::Drop
}

/// Answers one raw message of a message-oriented transport (a WebSocket
/// frame, a TCP line) under the site's current mode: [`Mode::Slow`] delays
/// it, [`Mode::Hang`] swallows it, and bad JSON gets a parse error.
pub(super) async fn handle_in_mode(state: &SiteState, bytes: &[u8]) -> Option<Value> {
    let control = state.control();
    match control.mode {
        Mode::Hang => {
            tracing::debug!(site = %state.name, "not answering a message (hang mode)");
            return None;
        }
        // The transports close the connection themselves (see `closes_connection`).
        Mode::Drop => return None,
        Mode::Slow => {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(control.delay_ms)) => {}
                () = state.shutting_down() => return None,
            }
        }
        Mode::Ok | Mode::Error | Mode::Badrpc => {}
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(message) => respond(state, control.mode, message),
        Err(_) if control.mode == Mode::Error => Some(error_body(
            Value::Null,
            INJECTED_FAILURE,
            "injected failure",
        )),
        Err(error) => {
            tracing::debug!(site = %state.name, %error, "unparseable JSON-RPC message");
            Some(error_body(Value::Null, PARSE_ERROR, "parse error"))
        }
    }
}

/// `initialize`: negotiates the protocol version. Sessions, where the
/// transport has them, are the transport's business.
fn initialize(state: &SiteState, id: Value, params: Option<&Value>) -> Value {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let version = requested
        .and_then(|v| SUPPORTED_VERSIONS.iter().find(|s| **s == v))
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[0]);
    result_body(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": format!("sitesteer-demo-{}", state.name), "version": "0.1.0" },
        }),
    )
}

fn tool_list() -> Value {
    json!([
        {
            "name": "echo",
            "title": "Echo",
            "description": "Returns the given text, tagged with the site that answered.",
            "inputSchema": {
                "type": "object",
                "properties": { "text": { "type": "string", "description": "Text to echo back." } },
                "required": ["text"],
            },
            "annotations": { "readOnlyHint": true, "idempotentHint": true },
        },
        {
            "name": "increment",
            "title": "Increment",
            "description": "Increments this site's counter and returns the new value.",
            "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false },
            "annotations": { "readOnlyHint": false, "idempotentHint": false, "destructiveHint": false },
        },
    ])
}

fn tools_call(state: &SiteState, id: Value, params: Option<&Value>) -> Value {
    let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
        return error_body(id, INVALID_PARAMS, "missing tool name");
    };
    let arguments = params.and_then(|p| p.get("arguments"));
    match name {
        "echo" => match arguments
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
        {
            Some(text) => result_body(
                id,
                json!({
                    "content": [{ "type": "text", "text": text }],
                    "structuredContent": { "text": text, "site": state.name },
                    "isError": false,
                }),
            ),
            // Input validation failures are tool execution errors (2025-11-25).
            None => result_body(
                id,
                json!({
                    "content": [{ "type": "text", "text": "argument `text` must be a string" }],
                    "isError": true,
                }),
            ),
        },
        "increment" => {
            let value = state
                .counter
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            tracing::debug!(site = %state.name, value, "demo counter incremented");
            result_body(
                id,
                json!({
                    "content": [{ "type": "text", "text": value.to_string() }],
                    "structuredContent": { "value": value, "site": state.name },
                    "isError": false,
                }),
            )
        }
        _ => error_body(id, INVALID_PARAMS, "unknown tool"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expects_answer_tells_requests_from_notifications() {
        assert!(expects_answer(
            &json!({"jsonrpc":"2.0","id":1,"method":"ping"})
        ));
        assert!(!expects_answer(
            &json!({"jsonrpc":"2.0","method":"notifications/initialized"})
        ));
        assert!(!expects_answer(
            &json!({"jsonrpc":"2.0","id":1,"result":{}})
        ));
        assert!(expects_answer(&json!([1, 2])));
        assert!(expects_answer(&json!({"jsonrpc":"2.0"})));
    }

    #[test]
    fn validation_errors_carry_the_id() {
        let error = validate(json!({"jsonrpc":"1.0","id":7,"method":"ping"})).expect_err("bad");
        assert_eq!(error["id"], 7);
        assert_eq!(error["error"]["code"], INVALID_REQUEST);
        let batch = validate(json!([])).expect_err("batch");
        assert_eq!(batch["id"], Value::Null);
        assert!(matches!(
            validate(json!({"jsonrpc":"2.0","id":1,"error":{}})),
            Ok(Incoming::ClientReply)
        ));
    }
}
