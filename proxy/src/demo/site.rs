//! The demo MCP site server.
//!
//! This module owns one demo "site": a small but real MCP server (Model
//! Context Protocol, Streamable HTTP transport, spec 2025-11-25) served with
//! axum, plus the knobs used to make it misbehave on purpose.
//!
//! Routes:
//! - `GET /` returns a tiny `{"site":"NAME"}` body (for load benchmarks).
//! - `GET /health`, `/ready`, `/live` return `{"status":"ok","site":"NAME"}`.
//! - `POST /mcp` speaks JSON-RPC 2.0 (single messages only) with the tools
//!   `echo` (read-only, idempotent) and `increment` (mutating counter).
//! - `DELETE /mcp` forgets a session; `GET /mcp` answers 405.
//! - `GET|POST /control` reads or sets the site's [`Mode`]. The control
//!   endpoint is never affected by the mode; every other route is.
//!
//! Every response carries the header `x-demo-site: NAME`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Header naming the demo site on every response.
const SITE_HEADER: HeaderName = HeaderName::from_static("x-demo-site");
/// MCP session header (Streamable HTTP transport).
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// MCP protocol version header sent by clients after initialization.
const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// Protocol versions this server speaks; the first one is preferred.
const SUPPORTED_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// Maximum number of live sessions per site; the oldest is evicted beyond it.
const MAX_SESSIONS: usize = 10_000;
/// Delay used by [`Mode::Slow`] when `/control` is not given one.
const DEFAULT_DELAY_MS: u64 = 200;
/// Path of the control endpoint, which is exempt from the mode.
const CONTROL_PATH: &str = "/control";

/// JSON-RPC error codes used by this server.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// Implementation-defined server error used for unknown sessions.
const SESSION_NOT_FOUND: i64 = -32001;

/// How a demo site misbehaves, set through its control endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Answer normally.
    Ok,
    /// Sleep `delay_ms` before answering.
    Slow,
    /// Answer 500 with a JSON body.
    Error,
    /// Never answer; the request stays open until the client gives up or the
    /// site shuts down (then it gets a 503).
    Hang,
    /// HTTP looks fine (`/health` answers 200) but every `POST /mcp` gets a malformed
    /// JSON-RPC answer: what an `mcp` probe must catch and an `http` probe cannot.
    Badrpc,
}

/// Configuration of one demo site: its name and the address to listen on.
#[derive(Clone, Debug)]
pub struct DemoSite {
    /// Site name, reported in `x-demo-site`, bodies and `serverInfo`.
    pub name: String,
    /// Address to bind (port 0 picks a free port).
    pub http: std::net::SocketAddr,
}

/// A demo site whose listener is bound but which is not serving yet.
pub struct BoundDemoSite {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    name: String,
    shutdown_tx: watch::Sender<bool>,
}

/// Current control settings, as read and written through `/control`.
#[derive(Clone, Copy, Debug, Serialize)]
struct Control {
    mode: Mode,
    delay_ms: u64,
}

/// Body accepted by `POST /control`.
#[derive(Debug, Deserialize)]
struct ControlRequest {
    mode: Mode,
    delay_ms: Option<u64>,
}

/// Sessions in creation order, bounded to [`MAX_SESSIONS`].
#[derive(Default)]
struct Sessions {
    next_seq: u64,
    by_id: HashMap<String, u64>,
    by_age: BTreeMap<u64, String>,
}

impl Sessions {
    /// Records a new session, evicting the oldest ones if the map is full.
    fn insert(&mut self, id: String) {
        while self.by_id.len() >= MAX_SESSIONS {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if let Some(previous) = self.by_id.insert(id.clone(), seq) {
            self.by_age.remove(&previous);
        }
        self.by_age.insert(seq, id);
    }

    fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Forgets a session; returns whether it existed.
    fn remove(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(seq) => {
                self.by_age.remove(&seq);
                true
            }
            None => false,
        }
    }
}

/// Shared state of one site.
struct SiteState {
    name: String,
    site_header: HeaderValue,
    root_body: Bytes,
    health_body: Bytes,
    control: Mutex<Control>,
    sessions: Mutex<Sessions>,
    counter: AtomicU64,
    shutdown_rx: watch::Receiver<bool>,
}

/// Locks a mutex, recovering the data if a previous holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SiteState {
    fn control(&self) -> Control {
        *lock(&self.control)
    }

    /// Resolves once the site is shutting down (or the server is gone).
    async fn shutting_down(&self) {
        let mut rx = self.shutdown_rx.clone();
        // An Err means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|down| *down).await;
    }
}

impl DemoSite {
    /// Binds the listener (returns Err on bind failure, before serving) and
    /// returns a [`BoundDemoSite`] whose [`BoundDemoSite::serve`] serves until
    /// its `shutdown` future resolves.
    ///
    /// Also fails with [`std::io::ErrorKind::InvalidInput`] if `name` cannot be
    /// used as an HTTP header value.
    pub async fn bind(self) -> std::io::Result<BoundDemoSite> {
        let site_header = HeaderValue::from_str(&self.name).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "demo site name is not a valid HTTP header value",
            )
        })?;
        let listener = TcpListener::bind(self.http).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let root_body = Bytes::from(json!({ "site": self.name }).to_string());
        let health_body = Bytes::from(json!({ "status": "ok", "site": self.name }).to_string());
        let state = Arc::new(SiteState {
            name: self.name,
            site_header,
            root_body,
            health_body,
            control: Mutex::new(Control {
                mode: Mode::Ok,
                delay_ms: DEFAULT_DELAY_MS,
            }),
            sessions: Mutex::new(Sessions::default()),
            counter: AtomicU64::new(0),
            shutdown_rx,
        });
        let router = router(Arc::clone(&state));
        tracing::debug!(site = %state.name, addr = %local_addr, "demo site bound");
        Ok(BoundDemoSite {
            listener,
            local_addr,
            router,
            name: state.name.clone(),
            shutdown_tx,
        })
    }
}

impl BoundDemoSite {
    /// The address the listener is bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, releases any
    /// hanging requests (they get a 503) and waits for open connections to
    /// finish.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let BoundDemoSite {
            listener,
            local_addr,
            router,
            name,
            shutdown_tx,
        } = self;
        let signal = async move {
            shutdown.await;
            shutdown_tx.send_replace(true);
        };
        let listener =
            axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::trace!(%error, "failed to set TCP_NODELAY");
                }
            });
        tracing::info!(site = %name, addr = %local_addr, "demo site serving");
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await;
        tracing::info!(site = %name, addr = %local_addr, "demo site stopped");
        result
    }
}

/// Builds the site's router.
fn router(state: Arc<SiteState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/ready", get(health))
        .route("/live", get(health))
        .route("/mcp", get(mcp_get).post(mcp_post).delete(mcp_delete))
        .route(CONTROL_PATH, get(control_get).post(control_post))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            site_layer,
        ))
        .with_state(state)
}

/// Applies the site's mode (except on `/control`) and tags the response.
async fn site_layer(State(state): State<Arc<SiteState>>, req: Request, next: Next) -> Response {
    let mut response = if req.uri().path() == CONTROL_PATH {
        next.run(req).await
    } else {
        let control = state.control();
        match control.mode {
            Mode::Ok => next.run(req).await,
            Mode::Badrpc
                if req.uri().path() == "/mcp" && req.method() == axum::http::Method::POST =>
            {
                (
                    StatusCode::OK,
                    Json(json!({ "jsonrpc": "2.0", "id": "not-yours", "result": "garbage" })),
                )
                    .into_response()
            }
            Mode::Badrpc => next.run(req).await,
            Mode::Slow => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(control.delay_ms)) => {
                        next.run(req).await
                    }
                    () = state.shutting_down() => shutting_down_response(),
                }
            }
            Mode::Error => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "injected failure", "mode": "error", "site": state.name })),
            )
                .into_response(),
            Mode::Hang => {
                tracing::debug!(site = %state.name, path = %req.uri().path(), "hanging request");
                state.shutting_down().await;
                shutting_down_response()
            }
        }
    };
    response
        .headers_mut()
        .insert(SITE_HEADER, state.site_header.clone());
    response
}

fn shutting_down_response() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": "demo site shutting down" })),
    )
        .into_response()
}

fn json_bytes(body: Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

async fn root(State(state): State<Arc<SiteState>>) -> Response {
    json_bytes(state.root_body.clone())
}

async fn health(State(state): State<Arc<SiteState>>) -> Response {
    json_bytes(state.health_body.clone())
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))).into_response()
}

async fn control_get(State(state): State<Arc<SiteState>>) -> Json<Control> {
    Json(state.control())
}

async fn control_post(State(state): State<Arc<SiteState>>, body: Bytes) -> Response {
    let request: ControlRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("invalid control request: {error}") })),
            )
                .into_response();
        }
    };
    let new = Control {
        mode: request.mode,
        delay_ms: request.delay_ms.unwrap_or(DEFAULT_DELAY_MS),
    };
    *lock(&state.control) = new;
    tracing::info!(site = %state.name, mode = ?new.mode, delay_ms = new.delay_ms, "demo site mode changed");
    Json(new).into_response()
}

/// `GET /mcp`: no server-initiated SSE stream is offered.
async fn mcp_get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(ALLOW, HeaderValue::from_static("POST, DELETE"))],
    )
        .into_response()
}

/// `DELETE /mcp`: terminates the session named by `Mcp-Session-Id`.
async fn mcp_delete(State(state): State<Arc<SiteState>>, headers: HeaderMap) -> Response {
    let Some(value) = headers.get(&SESSION_HEADER) else {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "missing Mcp-Session-Id header",
        );
    };
    let removed = value
        .to_str()
        .map(|id| lock(&state.sessions).remove(id))
        .unwrap_or(false);
    if removed {
        tracing::debug!(site = %state.name, "mcp session deleted");
        StatusCode::NO_CONTENT.into_response()
    } else {
        session_not_found(Value::Null)
    }
}

/// Builds a JSON-RPC error response with the given HTTP status.
fn rpc_error_response(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": code, "message": message },
        })),
    )
        .into_response()
}

fn session_not_found(id: Value) -> Response {
    rpc_error_response(
        StatusCode::NOT_FOUND,
        id,
        SESSION_NOT_FOUND,
        "session not found",
    )
}

fn rpc_result(id: Value, result: Value) -> Response {
    Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}

/// `POST /mcp`: one JSON-RPC message over Streamable HTTP.
async fn mcp_post(
    State(state): State<Arc<SiteState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(_) => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                "parse error",
            );
        }
    };
    let Value::Object(message) = message else {
        let text = if message.is_array() {
            "batch requests are not supported"
        } else {
            "request must be a JSON object"
        };
        return rpc_error_response(StatusCode::BAD_REQUEST, Value::Null, INVALID_REQUEST, text);
    };
    let id = message.get("id").cloned();
    // Reply ids must be strings or numbers; anything else is echoed as null.
    let reply_id = match &id {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            reply_id,
            INVALID_REQUEST,
            "jsonrpc must be \"2.0\"",
        );
    }
    let method = match message.get("method") {
        Some(Value::String(method)) => method.as_str(),
        Some(_) => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                reply_id,
                INVALID_REQUEST,
                "method must be a string",
            );
        }
        // A JSON-RPC response or error sent by the client: acknowledge it.
        None if message.contains_key("result") || message.contains_key("error") => {
            return StatusCode::ACCEPTED.into_response();
        }
        None => {
            return rpc_error_response(
                StatusCode::BAD_REQUEST,
                reply_id,
                INVALID_REQUEST,
                "missing method",
            );
        }
    };
    if method != "initialize" {
        if let Some(value) = headers.get(&SESSION_HEADER) {
            let known = value
                .to_str()
                .map(|sid| lock(&state.sessions).contains(sid))
                .unwrap_or(false);
            if !known {
                tracing::debug!(site = %state.name, method, "unknown mcp session");
                return session_not_found(reply_id);
            }
        }
        if let Some(value) = headers.get(&PROTOCOL_HEADER) {
            let supported = value
                .to_str()
                .map(|v| SUPPORTED_VERSIONS.contains(&v))
                .unwrap_or(false);
            if !supported {
                return rpc_error_response(
                    StatusCode::BAD_REQUEST,
                    reply_id,
                    INVALID_REQUEST,
                    "unsupported MCP-Protocol-Version",
                );
            }
        }
    }
    let Some(id) = id else {
        // Notification (e.g. notifications/initialized): nothing to return.
        tracing::debug!(site = %state.name, method, "mcp notification");
        return StatusCode::ACCEPTED.into_response();
    };
    if !matches!(id, Value::String(_) | Value::Number(_)) {
        return rpc_error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            INVALID_REQUEST,
            "id must be a string or number",
        );
    }
    tracing::debug!(site = %state.name, method, "mcp request");
    let params = message.get("params");
    match method {
        "initialize" => initialize(&state, id, params),
        "ping" => rpc_result(id, json!({})),
        "tools/list" => rpc_result(id, json!({ "tools": tool_list() })),
        "tools/call" => tools_call(&state, id, params),
        _ => rpc_error_response(StatusCode::OK, id, METHOD_NOT_FOUND, "method not found"),
    }
}

fn initialize(state: &SiteState, id: Value, params: Option<&Value>) -> Response {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let version = requested
        .and_then(|v| SUPPORTED_VERSIONS.iter().find(|s| **s == v))
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[0]);
    let session_id = format!("{:032x}", fastrand::u128(..));
    lock(&state.sessions).insert(session_id.clone());
    tracing::debug!(site = %state.name, protocol_version = version, "mcp session created");
    let mut response = rpc_result(
        id,
        json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": format!("sitesteer-demo-{}", state.name), "version": "0.1.0" },
        }),
    );
    if let Ok(value) = HeaderValue::from_str(&session_id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
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

fn tools_call(state: &SiteState, id: Value, params: Option<&Value>) -> Response {
    let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
        return rpc_error_response(StatusCode::OK, id, INVALID_PARAMS, "missing tool name");
    };
    let arguments = params.and_then(|p| p.get("arguments"));
    match name {
        "echo" => match arguments
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
        {
            Some(text) => rpc_result(
                id,
                json!({
                    "content": [{ "type": "text", "text": text }],
                    "structuredContent": { "text": text, "site": state.name },
                    "isError": false,
                }),
            ),
            // Input validation failures are tool execution errors (2025-11-25).
            None => rpc_result(
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
            rpc_result(
                id,
                json!({
                    "content": [{ "type": "text", "text": value.to_string() }],
                    "structuredContent": { "value": value, "site": state.name },
                    "isError": false,
                }),
            )
        }
        _ => rpc_error_response(StatusCode::OK, id, INVALID_PARAMS, "unknown tool"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use std::time::Instant;
    use tokio::sync::oneshot;

    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("json body")
        }
    }

    struct TestSite {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl TestSite {
        async fn start(name: &str) -> TestSite {
            let site = DemoSite {
                name: name.to_string(),
                http: SocketAddr::from(([127, 0, 0, 1], 0)),
            };
            let bound = site.bind().await.expect("bind");
            let addr = bound.local_addr();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(bound.serve(async move {
                let _ = stopped.await;
            }));
            TestSite {
                addr,
                stop: Some(stop),
                task,
            }
        }

        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            self.task.await.expect("join").expect("serve");
        }
    }

    async fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let response = sender.send_request(request).await.expect("send");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn rpc(addr: SocketAddr, session: Option<&str>, body: Value) -> Reply {
        let headers: Vec<(&str, &str)> =
            session.map(|s| ("mcp-session-id", s)).into_iter().collect();
        send(addr, "POST", "/mcp", &headers, &body.to_string()).await
    }

    async fn initialize(addr: SocketAddr) -> String {
        let reply = rpc(
            addr,
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"test","version":"0"}}}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.json();
        assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(body["result"]["serverInfo"]["name"], "sitesteer-demo-alpha");
        assert_eq!(
            body["result"]["capabilities"]["tools"]["listChanged"],
            false
        );
        let sid = reply
            .headers
            .get("mcp-session-id")
            .expect("session header")
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(sid.len(), 32);
        assert!(sid.chars().all(|c| c.is_ascii_hexdigit()));
        sid
    }

    #[tokio::test]
    async fn mcp_session_lifecycle() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("alpha").await;
            let addr = site.addr;

            let root = send(addr, "GET", "/", &[], "").await;
            assert_eq!(root.status, StatusCode::OK);
            assert_eq!(root.json(), json!({"site":"alpha"}));
            assert_eq!(root.headers["x-demo-site"], "alpha");
            let health = send(addr, "GET", "/ready", &[], "").await;
            assert_eq!(health.json(), json!({"status":"ok","site":"alpha"}));

            let sid = initialize(addr).await;
            let note = rpc(
                addr,
                Some(&sid),
                json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
            assert_eq!(note.status, StatusCode::ACCEPTED);
            assert!(note.body.is_empty());

            let ping = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":2,"method":"ping"})).await;
            assert_eq!(ping.status, StatusCode::OK);
            assert_eq!(ping.headers["x-demo-site"], "alpha");
            assert_eq!(ping.json()["result"], json!({}));
            assert_eq!(ping.json()["id"], 2);

            let list = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":3,"method":"tools/list"})).await;
            let tools = list.json()["result"]["tools"].clone();
            assert_eq!(tools[0]["name"], "echo");
            assert_eq!(tools[0]["annotations"]["idempotentHint"], true);
            assert_eq!(tools[1]["name"], "increment");
            assert_eq!(tools[1]["annotations"]["readOnlyHint"], false);

            let echo = rpc(
                addr,
                Some(&sid),
                json!({"jsonrpc":"2.0","id":"e","method":"tools/call",
                       "params":{"name":"echo","arguments":{"text":"hello"}}}),
            )
            .await;
            let result = echo.json()["result"].clone();
            assert_eq!(result["content"][0]["text"], "hello");
            assert_eq!(result["structuredContent"], json!({"text":"hello","site":"alpha"}));
            assert_eq!(result["isError"], false);

            for expected in 1..=2 {
                let inc = rpc(
                    addr,
                    None,
                    json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"increment"}}),
                )
                .await;
                assert_eq!(inc.json()["result"]["structuredContent"]["value"], expected);
            }

            let unknown_tool = rpc(
                addr,
                Some(&sid),
                json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"nope"}}),
            )
            .await;
            assert_eq!(unknown_tool.json()["error"]["code"], INVALID_PARAMS);
            let unknown_method = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":6,"method":"nope"})).await;
            assert_eq!(unknown_method.json()["error"]["code"], METHOD_NOT_FOUND);
            let bad = send(addr, "POST", "/mcp", &[], "{not json").await;
            assert_eq!(bad.status, StatusCode::BAD_REQUEST);
            assert_eq!(bad.json()["error"]["code"], PARSE_ERROR);
            let get = send(addr, "GET", "/mcp", &[], "").await;
            assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);

            let stranger = "0123456789abcdef0123456789abcdef";
            let unknown = rpc(addr, Some(stranger), json!({"jsonrpc":"2.0","id":7,"method":"ping"})).await;
            assert_eq!(unknown.status, StatusCode::NOT_FOUND);
            assert_eq!(unknown.json()["error"]["code"], SESSION_NOT_FOUND);
            assert_eq!(unknown.headers["x-demo-site"], "alpha");

            let deleted = send(addr, "DELETE", "/mcp", &[("mcp-session-id", &sid)], "").await;
            assert!(deleted.status.is_success());
            let reused = rpc(addr, Some(&sid), json!({"jsonrpc":"2.0","id":8,"method":"ping"})).await;
            assert_eq!(reused.status, StatusCode::NOT_FOUND);
            let again = send(addr, "DELETE", "/mcp", &[("mcp-session-id", &sid)], "").await;
            assert_eq!(again.status, StatusCode::NOT_FOUND);

            site.stop().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn control_modes() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("beta").await;
            let addr = site.addr;

            let state = send(addr, "GET", "/control", &[], "").await;
            assert_eq!(state.json(), json!({"mode":"ok","delay_ms":200}));

            let set = send(addr, "POST", "/control", &[], r#"{"mode":"error"}"#).await;
            assert_eq!(set.json(), json!({"mode":"error","delay_ms":200}));
            let failing = send(addr, "GET", "/health", &[], "").await;
            assert_eq!(failing.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(failing.headers["x-demo-site"], "beta");
            assert!(failing.json().is_object());
            let control = send(addr, "GET", "/control", &[], "").await;
            assert_eq!(control.status, StatusCode::OK);

            let rejected = send(addr, "POST", "/control", &[], r#"{"mode":"sideways"}"#).await;
            assert_eq!(rejected.status, StatusCode::BAD_REQUEST);

            send(
                addr,
                "POST",
                "/control",
                &[],
                r#"{"mode":"slow","delay_ms":150}"#,
            )
            .await;
            let started = Instant::now();
            let slow = send(addr, "GET", "/", &[], "").await;
            assert_eq!(slow.status, StatusCode::OK);
            assert!(started.elapsed() >= Duration::from_millis(150));

            send(addr, "POST", "/control", &[], r#"{"mode":"ok"}"#).await;
            let healthy = send(addr, "GET", "/health", &[], "").await;
            assert_eq!(healthy.status, StatusCode::OK);
            assert_eq!(healthy.headers["x-demo-site"], "beta");

            site.stop().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn hang_is_released_by_shutdown() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("gamma").await;
            let addr = site.addr;
            send(addr, "POST", "/control", &[], r#"{"mode":"hang"}"#).await;
            let hung = tokio::spawn(send(addr, "GET", "/", &[], ""));
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!hung.is_finished());
            // Shutdown must complete even with a hanging request in flight.
            site.stop().await;
            let reply = hung.await.expect("join");
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        })
        .await
        .expect("test timed out");
    }

    #[test]
    fn sessions_are_bounded() {
        let mut sessions = Sessions::default();
        for i in 0..(MAX_SESSIONS + 5) {
            sessions.insert(format!("s{i}"));
        }
        assert_eq!(sessions.by_id.len(), MAX_SESSIONS);
        assert_eq!(sessions.by_age.len(), MAX_SESSIONS);
        assert!(!sessions.contains("s0"));
        assert!(!sessions.contains("s4"));
        assert!(sessions.contains("s5"));
        assert!(sessions.remove("s5"));
        assert!(!sessions.remove("s5"));
    }

    #[tokio::test]
    async fn bad_name_is_rejected_before_bind() {
        let site = DemoSite {
            name: "bad\nname".to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let error = site.bind().await.err().expect("must fail");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}
