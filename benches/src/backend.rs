//! `bench-backend`: the tiny JSON backend of the throughput benchmark (`benches/run.sh`).
//!
//! Every HTTP/1.1 request (any method, any path; request bodies are not expected) gets the
//! same keep-alive answer, `200` with `{"ok":true}`. Pipelined requests are answered in one
//! write. It runs on one thread with a current-thread tokio runtime, parses nothing but the
//! end of the request head, and so costs a small fraction of what the proxies in front of it
//! cost: measured alone ("direct") it serves several times the requests per second of any
//! proxy on the same machine, so the proxy is the bottleneck of every proxied scenario.
//!
//! `bench-backend --listen 127.0.0.1:PORT [--listen ...]`
#![warn(unreachable_pub, missing_docs)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = br#"{"ok":true}"#;

fn response() -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    r.extend_from_slice(BODY);
    r
}

/// Counts complete request heads in `buf[..len]`, returning (count, bytes consumed).
fn complete_heads(buf: &[u8]) -> (usize, usize) {
    let mut count = 0;
    let mut consumed = 0;
    let mut i = 0;
    while i + 4 <= buf.len() {
        if &buf[i..i + 4] == b"\r\n\r\n" {
            count += 1;
            consumed = i + 4;
            i += 4;
        } else {
            i += 1;
        }
    }
    (count, consumed)
}

async fn serve(mut stream: TcpStream, answer: &'static [u8]) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut out = Vec::with_capacity(answer.len() * 4);
    loop {
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let (count, consumed) = complete_heads(&buf[..filled]);
        if count > 0 {
            out.clear();
            for _ in 0..count {
                out.extend_from_slice(answer);
            }
            if stream.write_all(&out).await.is_err() {
                return;
            }
            buf.copy_within(consumed..filled, 0);
            filled -= consumed;
        }
        if filled == buf.len() {
            return; // a request head larger than the buffer: not this benchmark's traffic
        }
    }
}

fn main() -> std::process::ExitCode {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(a) => addrs.push(a),
                Err(e) => {
                    eprintln!("bench-backend: bad --listen {v}: {e}");
                    return std::process::ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: bench-backend --listen 127.0.0.1:PORT [--listen ...]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if addrs.is_empty() {
        eprintln!("usage: bench-backend --listen 127.0.0.1:PORT [--listen ...]");
        return std::process::ExitCode::from(2);
    }
    let answer: &'static [u8] = Box::leak(response().into_boxed_slice());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-backend: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async move {
        let mut listeners = Vec::new();
        for a in &addrs {
            listeners.push(TcpListener::bind(a).await?);
        }
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok((s, _)) = l.accept().await {
                        tokio::spawn(serve(s, answer));
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-backend: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::complete_heads;

    #[test]
    fn counts_pipelined_heads() {
        assert_eq!(complete_heads(b"GET / HTTP/1.1\r\n\r\n"), (1, 18));
        assert_eq!(
            complete_heads(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET"),
            (2, 45)
        );
        assert_eq!(complete_heads(b"GET / HTTP/1.1\r\n"), (0, 0));
    }
}
