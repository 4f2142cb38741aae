//! The raw TCP transport of a demo site (erlmcp's `tcp` transport).
//!
//! This module owns the optional TCP listener's accept loop and the
//! per-connection loop: newline-delimited JSON-RPC, one message per line and
//! one response per line, answered through [`rpc::handle_in_mode`] so the
//! site's mode applies per line. Bad JSON gets a parse error line and the
//! connection stays open; a line over [`MAX_LINE_BYTES`] gets an error line
//! and the connection is closed. Shutdown stops accepting and ends every
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::rpc::{self, INVALID_REQUEST};
use crate::state::SiteState;
use crate::transports::{OpenConnection, Transport};

/// Longest accepted line, in bytes, not counting the newline.
pub(super) const MAX_LINE_BYTES: usize = 1 << 20;
/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long, and how many bytes, unread input is drained before closing on an
/// over-long line, so that the error line is not lost to a TCP reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 4 << 20;

/// Accepts connections until the site shuts down, then waits for the open
/// ones to finish (they end on shutdown too).
pub(super) async fn serve(listener: TcpListener, state: Arc<SiteState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(Arc::clone(&state), stream, peer));
                }
                Err(error) => {
                    tracing::warn!(site = %state.name, %error, "demo site tcp accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = state.shutting_down() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    tracing::debug!(site = %state.name, "demo site tcp listener stopped");
}

/// What reading one line produced.
enum Line {
    /// A complete line (without its line ending), or the last unterminated one.
    Message(Vec<u8>),
    /// The peer closed the connection.
    Eof,
    /// The line exceeds [`MAX_LINE_BYTES`].
    TooLong,
}

/// Reads one line of at most [`MAX_LINE_BYTES`] bytes into `buffer`.
async fn read_line(
    reader: &mut BufReader<TcpStream>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Line> {
    buffer.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = (&mut *reader).take(limit).read_until(b'\n', buffer).await?;
    if read == 0 {
        return Ok(Line::Eof);
    }
    // The framing rules live in `crate::framing`, shared with the fuzzer.
    // The line is a prefix of what was read.
    let Some(len) = crate::framing::classify(buffer, MAX_LINE_BYTES).map(<[u8]>::len) else {
        return Ok(Line::TooLong);
    };
    buffer.truncate(len);
    Ok(Line::Message(std::mem::take(buffer)))
}

/// Writes one JSON value followed by a newline.
async fn write_line(reader: &mut BufReader<TcpStream>, value: &Value) -> std::io::Result<()> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    reader.get_mut().write_all(&line).await
}

/// Half-closes the connection and discards what the peer still sends (for a
/// bounded time and size) so the last reply reaches it before the close.
async fn linger(reader: &mut BufReader<TcpStream>) {
    if reader.get_mut().shutdown().await.is_err() {
        return;
    }
    let mut rest = (&mut *reader).take(LINGER_BYTES);
    let mut sink = tokio::io::sink();
    let _ = tokio::time::timeout(LINGER_TIME, tokio::io::copy(&mut rest, &mut sink)).await;
}

/// Answers the lines of one connection until it closes, misbehaves or the
/// site shuts down.
async fn serve_connection(state: Arc<SiteState>, stream: TcpStream, peer: SocketAddr) {
    let _open = OpenConnection::new(Arc::clone(&state.transports), Transport::Tcp);
    if let Err(error) = stream.set_nodelay(true) {
        tracing::trace!(%error, "failed to set TCP_NODELAY");
    }
    tracing::debug!(site = %state.name, %peer, "tcp connection opened");
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        let line = tokio::select! {
            line = read_line(&mut reader, &mut buffer) => line,
            () = state.shutting_down() => break,
        };
        let line = match line {
            Ok(Line::Message(line)) => line,
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                tracing::debug!(site = %state.name, %peer, limit = MAX_LINE_BYTES, "tcp line too long");
                let error = rpc::error_body(Value::Null, INVALID_REQUEST, "line too long");
                if let Err(error) = write_line(&mut reader, &error).await {
                    tracing::debug!(site = %state.name, %peer, %error, "tcp write failed");
                }
                linger(&mut reader).await;
                break;
            }
            Err(error) => {
                tracing::debug!(site = %state.name, %peer, %error, "tcp read failed");
                break;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        state.transports.count_message(Transport::Tcp);
        if rpc::closes_connection(&state) {
            tracing::debug!(site = %state.name, %peer, "cutting a tcp connection (drop mode)");
            break;
        }
        let Some(reply) = rpc::handle_in_mode(&state, &line).await else {
            continue;
        };
        if let Err(error) = write_line(&mut reader, &reply).await {
            tracing::debug!(site = %state.name, %peer, %error, "tcp write failed");
            break;
        }
    }
    if let Err(error) = reader.get_mut().shutdown().await {
        tracing::trace!(site = %state.name, %peer, %error, "tcp shutdown failed");
    }
    tracing::debug!(site = %state.name, %peer, "tcp connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{send, TestSite, TEST_TIMEOUT};
    use serde_json::json;
    use tokio::io::AsyncBufReadExt;

    struct Client {
        reader: BufReader<TcpStream>,
    }

    impl Client {
        async fn connect(site: &TestSite) -> Client {
            let addr = site.tcp.expect("tcp listener");
            let stream = TcpStream::connect(addr).await.expect("connect");
            Client {
                reader: BufReader::new(stream),
            }
        }

        async fn write(&mut self, bytes: &[u8]) {
            self.reader.get_mut().write_all(bytes).await.expect("write");
        }

        async fn read(&mut self) -> Option<Value> {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).await.expect("read");
            (read > 0).then(|| serde_json::from_str(&line).expect("json line"))
        }

        async fn call(&mut self, line: &str) -> Value {
            self.write(format!("{line}\n").as_bytes()).await;
            self.read().await.expect("reply")
        }
    }

    #[tokio::test]
    async fn tcp_lines_bad_json_and_modes() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let site = TestSite::start_with("tcp-site", true).await;
            let mut client = Client::connect(&site).await;
            site.wait_connections(json!({"ws":0,"sse":0,"tcp":1})).await;

            let pong = client.call(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
            assert_eq!(pong, json!({"jsonrpc":"2.0","id":1,"result":{}}));
            let bad = client.call("{nope").await;
            assert_eq!(bad["error"]["code"], -32700);
            // Still open after bad input; a notification then a request in
            // one write, with CRLF, get exactly one answer.
            client
                .write(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\r\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"increment\"}}\r\n")
                .await;
            let inc = client.read().await.expect("reply");
            assert_eq!(inc["id"], 2);
            assert_eq!(inc["result"]["structuredContent"]["value"], 1);

            send(site.addr, "POST", "/control", &[], r#"{"mode":"error"}"#).await;
            let failed = client.call(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#).await;
            assert_eq!(failed["error"]["code"], -32000);
            send(site.addr, "POST", "/control", &[], r#"{"mode":"hang"}"#).await;
            client.write(b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\"}\n").await;
            let quiet = tokio::time::timeout(Duration::from_millis(200), client.read()).await;
            assert!(quiet.is_err(), "hang mode must not answer");
            send(site.addr, "POST", "/control", &[], r#"{"mode":"ok"}"#).await;
            let back = client.call(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#).await;
            assert_eq!(back["id"], 5);
            let control = send(site.addr, "GET", "/control", &[], "").await.json();
            assert_eq!(control["messages"]["tcp"], 7);

            drop(client);
            site.wait_connections(json!({"ws":0,"sse":0,"tcp":0})).await;

            // Over-long line: an error line, then the connection is closed.
            let mut long = Client::connect(&site).await;
            let mut huge = vec![b'x'; MAX_LINE_BYTES + 10];
            huge.push(b'\n');
            long.write(&huge).await;
            let error = long.read().await.expect("error line");
            assert_eq!(error["error"]["code"], INVALID_REQUEST);
            assert!(long.read().await.is_none(), "connection must be closed");
            drop(long);
            site.wait_connections(json!({"ws":0,"sse":0,"tcp":0})).await;

            // Shutdown closes open connections and stops the listener.
            let mut open = Client::connect(&site).await;
            site.wait_connections(json!({"ws":0,"sse":0,"tcp":1})).await;
            let tcp = site.tcp.expect("tcp");
            site.stop().await;
            assert!(open.read().await.is_none());
            assert!(TcpStream::connect(tcp).await.is_err());
        })
        .await
        .expect("test timed out");
    }
}
