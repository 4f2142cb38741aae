//! `idle-conns`: opens many long-lived connections through a proxy and holds them idle, for
//! the memory-per-connection benchmark (`benches/scale.sh`).
//!
//! `idle-conns --addr 127.0.0.1:PORT --kind ws|sse --count N [--hold SECONDS]`
//!
//! `ws`: a WebSocket upgrade of `GET /mcp/ws` (it must answer `101`); `sse`: `GET /mcp/sse`
//! with `Accept: text/event-stream` (it must answer `200` with `text/event-stream`). After
//! the answer's head the connection is left alone: nothing more is written, and whatever
//! the server sends is read and dropped so no buffer grows. Connects run 128 at a time.
//! When all are open it prints one line `open N failed M` to stdout, then holds them for
//! `--hold` seconds (default 3600) or until stdin closes, whichever comes first.
#![warn(unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ws,
    Sse,
}

fn request(kind: Kind, host: &str) -> String {
    match kind {
        Kind::Ws => format!(
            "GET /mcp/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        Kind::Sse => {
            format!("GET /mcp/sse HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n")
        }
    }
}

/// Opens one connection and reads the answer's head; returns the stream.
async fn open(addr: &str, kind: Kind) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request(kind, addr).as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 256];
    loop {
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the answer".into());
        }
        head.extend_from_slice(&byte[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > 16 * 1024 {
            return Err("answer head too large".into());
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let ok = match kind {
        Kind::Ws => text.starts_with("http/1.1 101"),
        Kind::Sse => text.starts_with("http/1.1 200") && text.contains("text/event-stream"),
    };
    if ok {
        Ok(stream)
    } else {
        Err(format!(
            "unexpected answer: {}",
            text.lines().next().unwrap_or("")
        ))
    }
}

fn main() -> std::process::ExitCode {
    let mut addr = None;
    let mut kind = None;
    let mut count = 0usize;
    let mut hold = 3600u64;
    let mut args = std::env::args().skip(1);
    while let (Some(k), Some(v)) = (args.next(), args.next()) {
        match k.as_str() {
            "--addr" => addr = Some(v),
            "--kind" => {
                kind = match v.as_str() {
                    "ws" => Some(Kind::Ws),
                    "sse" => Some(Kind::Sse),
                    _ => None,
                }
            }
            "--count" => count = v.parse().unwrap_or(0),
            "--hold" => hold = v.parse().unwrap_or(3600),
            _ => {}
        }
    }
    let (Some(addr), Some(kind), true) = (addr, kind, count > 0) else {
        eprintln!("usage: idle-conns --addr HOST:PORT --kind ws|sse --count N [--hold SECONDS]");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("idle-conns: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let addr: Arc<str> = Arc::from(addr);
        let gate = Arc::new(Semaphore::new(128));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (addr, gate, failed) = (addr.clone(), gate.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.ok();
                let result = open(&addr, kind).await;
                drop(permit);
                match result {
                    Ok(s) => Some(s),
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("idle-conns: {e}");
                        }
                        None
                    }
                }
            }));
        }
        let mut streams = Vec::with_capacity(count);
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                streams.push(s);
            }
        }
        println!(
            "open {} failed {}",
            streams.len(),
            failed.load(Ordering::Relaxed)
        );
        // Drain whatever the servers send (keep-alive comments, pings) so nothing piles up.
        for mut s in streams {
            tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
        let stdin_closed = async {
            let mut line = String::new();
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
            while let Ok(n) = stdin.read_line(&mut line).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = stdin_closed => {}
            _ = tokio::time::sleep(Duration::from_secs(hold)) => {}
        }
    });
    std::process::ExitCode::SUCCESS
}
