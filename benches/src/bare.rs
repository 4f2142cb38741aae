//! The bare pingora round-robin proxy shared by `bare-pingora` (system allocator) and
//! `bare-pingora-mimalloc` (the allocator sitesteer links).
#![warn(unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};

struct RoundRobin {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for RoundRobin {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        Ok(Box::new(HttpPeer::new(
            self.upstreams[i],
            false,
            String::new(),
        )))
    }
}

fn usage() -> std::process::ExitCode {
    eprintln!(
        "usage: bare-pingora --listen ADDR --upstream ADDR [--upstream ADDR ...] [--threads N]"
    );
    std::process::ExitCode::from(2)
}

/// Parses the arguments and serves until killed.
pub(crate) fn main() -> std::process::ExitCode {
    let mut listen: Option<String> = None;
    let mut upstreams = Vec::new();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        match arg.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => match value.parse() {
                Ok(a) => upstreams.push(a),
                Err(_) => return usage(),
            },
            "--threads" => match value.parse() {
                Ok(n) if n > 0 => threads = n,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let (Some(listen), false) = (listen, upstreams.is_empty()) else {
        return usage();
    };
    let pid = std::process::id();
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: std::env::temp_dir()
            .join(format!("bare-pingora-{pid}.pid"))
            .display()
            .to_string(),
        upgrade_sock: std::env::temp_dir()
            .join(format!("bare-pingora-{pid}.upgrade.sock"))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let proxy = RoundRobin {
        upstreams,
        next: AtomicUsize::new(0),
    };
    let mut service = http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
