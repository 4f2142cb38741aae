//! The demo MCP site server.
//!
//! This module owns one demo "site": its configuration ([`DemoSite`]), its
//! listeners and lifecycle ([`BoundDemoSite`]), the shared per-site state, the
//! HTTP router and the knobs used to make it misbehave on purpose ([`Mode`]).
//! The site is a small but real MCP server speaking four transports, each in
//! its own module, all answering through the same JSON-RPC dispatch
//! ([`crate::rpc`]):
//!
//! - Streamable HTTP (spec 2025-11-25) at `POST|DELETE /mcp` ([`crate::streamable`]);
//! - WebSocket at `GET /mcp/ws` ([`crate::ws`]);
//! - HTTP+SSE (spec 2024-11-05) at `GET|POST /mcp/sse` ([`crate::sse`]);
//! - newline-delimited JSON-RPC on an optional raw TCP listener ([`crate::tcp`]).
//!
//! Other routes:
//! - `GET /` returns a tiny `{"site":"NAME"}` body (for load benchmarks).
//! - `GET /health`, `/ready`, `/live` return `{"status":"ok","site":"NAME"}`.
//! - `GET|POST /control` reads or sets the site's [`Mode`]; `GET` also reports
//!   open connections and message counts per transport. The control endpoint
//!   is never affected by the mode; every other route is.
//!
//! Every HTTP response carries the header `x-demo-site: NAME`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sessions::{Sessions, SseSessions};
use crate::state::{lock, Control, Mode, SiteState};
use crate::transports::TransportStats;
use crate::{rpc, tcp, ws};
use crate::{sse, streamable};

/// Header naming the demo site on every response.
const SITE_HEADER: HeaderName = HeaderName::from_static("x-demo-site");
/// Delay used by [`Mode::Slow`] when `/control` is not given one.
const DEFAULT_DELAY_MS: u64 = 200;
/// Path of the control endpoint, which is exempt from the mode.
const CONTROL_PATH: &str = "/control";
/// The body length [`Mode::Drop`] promises, of which it sends only a part.
const DROP_PROMISED_BYTES: usize = 1024;
/// How long [`Mode::Drop`] waits after the first bytes before cutting the
/// connection, so that the headers and those bytes are on the wire first.
const DROP_PAUSE: Duration = Duration::from_millis(20);

/// Configuration of one demo site: its name and the addresses to listen on.
#[derive(Clone, Debug)]
pub struct DemoSite {
    /// Site name, reported in `x-demo-site`, bodies and `serverInfo`.
    pub name: String,
    /// HTTP address to bind (port 0 picks a free port); serves Streamable
    /// HTTP, WebSocket and HTTP+SSE.
    pub http: SocketAddr,
    /// Raw TCP address to bind (newline-delimited JSON-RPC), if any.
    pub tcp: Option<SocketAddr>,
}

/// Why a demo site's listeners could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {}{} (demo site): {source}", .http, or_tcp(.tcp))]
pub struct BindError {
    /// The HTTP address asked for.
    pub http: SocketAddr,
    /// The raw TCP address asked for, if any.
    pub tcp: Option<SocketAddr>,
    /// The OS error (or [`std::io::ErrorKind::InvalidInput`] for a name that cannot be an
    /// HTTP header value).
    pub source: std::io::Error,
}

/// ` or ADDR` when the site has a TCP listener (either of the two may be the one that failed).
fn or_tcp(tcp: &Option<SocketAddr>) -> String {
    tcp.map(|tcp| format!(" or {tcp}")).unwrap_or_default()
}

/// A demo site whose listeners are bound but which is not serving yet.
pub(crate) struct BoundDemoSite {
    listener: TcpListener,
    local_addr: SocketAddr,
    tcp_listener: Option<TcpListener>,
    local_tcp_addr: Option<SocketAddr>,
    router: Router,
    state: Arc<SiteState>,
    shutdown_tx: watch::Sender<bool>,
}

/// Body accepted by `POST /control`.
#[derive(Debug, Deserialize)]
struct ControlRequest {
    mode: Mode,
    delay_ms: Option<u64>,
}

impl DemoSite {
    /// Binds the listeners and serves in a task of the current tokio runtime for as long as
    /// the runtime runs. Fails, before serving, when a listener cannot be bound.
    pub async fn spawn(self) -> Result<(), BindError> {
        let bound = self.bind().await?;
        tokio::spawn(bound.serve(std::future::pending()));
        Ok(())
    }

    /// Binds the listeners (returns Err on bind failure, before serving) and
    /// returns a [`BoundDemoSite`] whose [`BoundDemoSite::serve`] serves until
    /// its `shutdown` future resolves.
    ///
    /// Also fails with [`std::io::ErrorKind::InvalidInput`] if `name` cannot be
    /// used as an HTTP header value.
    pub(crate) async fn bind(self) -> Result<BoundDemoSite, BindError> {
        let (http, tcp) = (self.http, self.tcp);
        self.bind_listeners()
            .await
            .map_err(|source| BindError { http, tcp, source })
    }

    async fn bind_listeners(self) -> std::io::Result<BoundDemoSite> {
        let site_header = HeaderValue::from_str(&self.name).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "demo site name is not a valid HTTP header value",
            )
        })?;
        let listener = TcpListener::bind(self.http).await?;
        let local_addr = listener.local_addr()?;
        let tcp_listener = match self.tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let local_tcp_addr = tcp_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
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
            sse: Mutex::new(SseSessions::default()),
            counter: AtomicU64::new(0),
            transports: Arc::new(TransportStats::default()),
            shutdown_rx,
        });
        let router = router(Arc::clone(&state));
        tracing::debug!(site = %state.name, addr = %local_addr, tcp = ?local_tcp_addr, "demo site bound");
        Ok(BoundDemoSite {
            listener,
            local_addr,
            tcp_listener,
            local_tcp_addr,
            router,
            state,
            shutdown_tx,
        })
    }
}

impl BoundDemoSite {
    /// The HTTP listener's address (with the real port if 0 was asked).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP listener's address, if the site has one.
    pub(crate) fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.local_tcp_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting on both
    /// listeners, releases hanging requests (they get a 503), ends SSE
    /// streams, WebSockets and TCP connections, and waits for open HTTP and
    /// TCP connections to finish.
    pub(crate) async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let BoundDemoSite {
            listener,
            local_addr,
            tcp_listener,
            local_tcp_addr,
            router,
            state,
            shutdown_tx,
        } = self;
        let shutdown_tx = Arc::new(shutdown_tx);
        let signal = {
            let shutdown_tx = Arc::clone(&shutdown_tx);
            async move {
                shutdown.await;
                shutdown_tx.send_replace(true);
            }
        };
        let tcp_task =
            tcp_listener.map(|listener| tokio::spawn(tcp::serve(listener, Arc::clone(&state))));
        let listener =
            axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::trace!(%error, "failed to set TCP_NODELAY");
                }
            });
        tracing::info!(site = %state.name, addr = %local_addr, tcp = ?local_tcp_addr, "demo site serving");
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await;
        // Also stops the TCP side if the HTTP server ended on its own.
        shutdown_tx.send_replace(true);
        if let Some(task) = tcp_task {
            if let Err(error) = task.await {
                tracing::warn!(site = %state.name, %error, "demo site tcp listener task failed");
            }
        }
        tracing::info!(site = %state.name, addr = %local_addr, "demo site stopped");
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
        .route(
            "/mcp",
            get(streamable::mcp_get)
                .post(streamable::mcp_post)
                .delete(streamable::mcp_delete),
        )
        .route("/mcp/ws", get(ws::upgrade))
        .route("/mcp/sse", get(sse::open).post(sse::post))
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
                (StatusCode::OK, Json(rpc::garbage_body())).into_response()
            }
            // The other transports garble their JSON-RPC answers themselves.
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
            Mode::Drop => dropped_response(),
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

/// The answer of [`Mode::Drop`]: headers promising [`DROP_PROMISED_BYTES`]
/// bytes, a few of them, then a body error that makes the server cut the
/// connection mid-response.
fn dropped_response() -> Response {
    use futures_util::stream::{self, StreamExt};
    let first = stream::once(async { Ok(Bytes::from_static(b"{\"partial\":\"")) });
    let cut = stream::once(async {
        tokio::time::sleep(DROP_PAUSE).await;
        Err(std::io::Error::other(
            "connection dropped mid-response (drop mode)",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header(axum::http::header::CONTENT_LENGTH, DROP_PROMISED_BYTES)
        .body(axum::body::Body::from_stream(first.chain(cut)))
        .unwrap_or_else(|_| shutting_down_response())
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

/// `GET /control`: the mode, plus open connections and messages per transport.
async fn control_get(State(state): State<Arc<SiteState>>) -> Json<Value> {
    let control = state.control();
    Json(json!({
        "mode": control.mode,
        "delay_ms": control.delay_ms,
        "connections": state.transports.connections_json(),
        "messages": state.transports.messages_json(),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{send, TestSite, TEST_TIMEOUT};
    use std::time::Instant;

    #[tokio::test]
    async fn control_modes() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start("beta").await;
            let addr = site.addr;

            let state = send(addr, "GET", "/control", &[], "").await.json();
            assert_eq!(state["mode"], "ok");
            assert_eq!(state["delay_ms"], 200);
            assert_eq!(state["connections"], json!({"ws":0,"sse":0,"tcp":0}));
            assert_eq!(state["messages"]["http"], 0);

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

    #[tokio::test]
    async fn drop_cuts_http_answers_and_tcp_connections_mid_way() {
        use http_body_util::BodyExt;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start_with("epsilon", true).await;
            send(site.addr, "POST", "/control", &[], r#"{"mode":"drop"}"#).await;

            // HTTP: the headers and the first bytes arrive, then the connection is cut.
            let stream = tokio::net::TcpStream::connect(site.addr)
                .await
                .expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            let request = hyper::Request::get("/health")
                .header("host", site.addr.to_string())
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("request");
            let response = sender.send_request(request).await.expect("headers arrive");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["x-demo-site"], "epsilon");
            assert_eq!(response.headers()["content-length"], "1024");
            let body = response.into_body().collect().await;
            assert!(body.is_err(), "the body must be cut short");

            // TCP: the connection closes instead of answering.
            let tcp = tokio::net::TcpStream::connect(site.tcp.expect("tcp"))
                .await
                .expect("connect tcp");
            let mut reader = tokio::io::BufReader::new(tcp);
            reader
                .get_mut()
                .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n")
                .await
                .expect("write");
            let mut line = String::new();
            let read = reader.read_line(&mut line).await.unwrap_or(0);
            assert_eq!(read, 0, "closed without an answer, got {line:?}");

            // The control endpoint is exempt and brings the site back.
            send(site.addr, "POST", "/control", &[], r#"{"mode":"ok"}"#).await;
            assert_eq!(
                send(site.addr, "GET", "/health", &[], "").await.status,
                StatusCode::OK
            );
            site.stop().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn bad_name_is_rejected_before_bind() {
        let site = DemoSite {
            name: "bad\nname".to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp: None,
        };
        let error = site.bind().await.err().expect("must fail");
        assert_eq!(error.source.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn tcp_bind_failure_is_reported_before_serving() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp = taken.local_addr().expect("addr");
        let site = DemoSite {
            name: "delta".to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp: Some(tcp),
        };
        let error = site.bind().await.err().expect("must fail");
        assert_eq!(error.source.kind(), std::io::ErrorKind::AddrInUse);
        // The message `sitesteer demo-site` prints names both listeners.
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "cannot listen on 127.0.0.1:0 or {tcp} (demo site): "
            )),
            "{message}"
        );
    }
}
