//! Test helpers shared by the demo site's transport tests: starting a site
//! on 127.0.0.1:0 and sending plain HTTP/1.1 requests to it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::site::DemoSite;

/// Upper bound of every demo site test.
pub(super) const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A fully read HTTP response.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A demo site serving in a background task.
pub(super) struct TestSite {
    pub(super) addr: SocketAddr,
    pub(super) tcp: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestSite {
    /// Starts an HTTP-only site.
    pub(super) async fn start(name: &str) -> TestSite {
        TestSite::start_with(name, false).await
    }

    /// Starts a site, with a TCP listener if `tcp`.
    pub(super) async fn start_with(name: &str, tcp: bool) -> TestSite {
        let site = DemoSite {
            name: name.to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            tcp: tcp.then(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        };
        let bound = site.bind().await.expect("bind");
        let addr = bound.local_addr();
        let tcp = bound.local_tcp_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        TestSite {
            addr,
            tcp,
            stop: Some(stop),
            task,
        }
    }

    /// Shuts the site down and waits for `serve` to return.
    pub(super) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("join").expect("serve");
    }

    /// `connections` from `GET /control`.
    pub(super) async fn connections(&self) -> Value {
        send(self.addr, "GET", "/control", &[], "").await.json()["connections"].clone()
    }

    /// Polls `GET /control` until `connections` equals `expected`.
    pub(super) async fn wait_connections(&self, expected: Value) {
        loop {
            if self.connections().await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole reply.
pub(super) async fn send(
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
