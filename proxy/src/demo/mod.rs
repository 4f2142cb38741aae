//! Demo MCP sites: small, controllable MCP servers used to exercise the
//! proxy's health probing and traffic steering in tests, demos and benchmarks,
//! and `sitesteer demo`, which runs three of them behind the proxy.

pub mod site;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::cli::{runtime_result, EXIT_USAGE};
use crate::server::{self, RunError};
use site::DemoSite;

/// Arguments of `sitesteer demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The proxy's HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// The admin listener.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub admin: SocketAddr,
    /// First port of the three demo sites (on 127.0.0.1).
    #[arg(long, default_value_t = 18101)]
    pub site_base_port: u16,
}

/// Arguments of the hidden `sitesteer demo-site`.
#[derive(Debug, Args)]
pub struct DemoSiteArgs {
    /// Site name (returned in `x-demo-site`).
    #[arg(long)]
    pub name: String,
    /// HTTP listener.
    #[arg(long)]
    pub http: SocketAddr,
}

/// The demo sites: (name, region, tier).
const SITES: [(&str, &str, u8); 3] = [
    ("alpha", "us-east", 0),
    ("bravo", "us-west", 0),
    ("charlie", "eu", 1),
];

/// The config the demo runs with.
pub fn demo_config_text(args: &DemoArgs) -> String {
    let mut text = format!(
        "[listen]\nhttp = \"{}\"\nadmin = \"{}\"\n\n[health]\nrise = 2\nfall = 2\n\n\
         [[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\n\
         [[probe]]\nkind = \"mcp\"\npath = \"/mcp\"\ninterval = \"250ms\"\ntimeout = \"200ms\"\nmcp_protocol = \"2025-11-25\"\n",
        args.http, args.admin
    );
    for (i, (name, region, tier)) in SITES.iter().enumerate() {
        let port = args.site_base_port + i as u16;
        text.push_str(&format!(
            "\n[[site]]\nname = \"{name}\"\nregion = \"{region}\"\ntier = {tier}\n[site.endpoints]\nhttp = \"127.0.0.1:{port}\"\n"
        ));
    }
    text
}

/// `sitesteer demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    let text = demo_config_text(&args);
    let config = match sitesteer_config::parse(&text, "<demo>", Path::new(".")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sitesteer: the demo config is invalid: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sites: Vec<DemoSite> = SITES
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| DemoSite {
            name: name.to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], args.site_base_port + i as u16)),
        })
        .collect();
    print_banner(&args, &sites);
    runtime_result(server::run(config, || async move {
        for site in sites {
            let addr = site.http;
            let bound = site.bind().await.map_err(|source| RunError::Bind {
                addr,
                what: "demo site",
                source,
            })?;
            tokio::spawn(bound.serve(std::future::pending()));
        }
        Ok(())
    }))
}

fn print_banner(args: &DemoArgs, sites: &[DemoSite]) {
    let proxy = args.http;
    let admin = args.admin;
    println!("sitesteer demo: three MCP sites behind one front door\n");
    println!("  proxy (MCP Streamable HTTP)  http://{proxy}/mcp");
    println!("  admin API                    http://{admin}/api/v1/sites");
    println!("  metrics                      http://{admin}/metrics");
    for (site, (_, region, tier)) in sites.iter().zip(SITES) {
        println!(
            "  site {:<8} tier {tier}  {region:<8} http://{}  (control: /control)",
            site.name, site.http
        );
    }
    let first = sites
        .first()
        .map(|s| s.http.to_string())
        .unwrap_or_default();
    println!("\nTry:");
    println!("  curl -si http://{proxy}/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\");
    println!("       -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"hello\"}}}}}}'");
    println!(
        "  curl -s http://{admin}/api/v1/sites            # every site's state, score and latency"
    );
    println!("  curl -s -XPOST http://{first}/control -d '{{\"mode\":\"hang\"}}'   # make alpha hang; watch it go down");
    println!("  curl -s -XPOST http://{first}/control -d '{{\"mode\":\"ok\"}}'     # and recover");
    println!("\nCtrl-C stops the demo.\n");
}

/// `sitesteer demo-site`: one demo site in its own process.
pub fn run_site(args: DemoSiteArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return runtime_result(Err(format!("cannot start the runtime: {e}"))),
    };
    let addr = args.http;
    let result = runtime.block_on(async move {
        let bound = DemoSite {
            name: args.name,
            http: addr,
        }
        .bind()
        .await
        .map_err(|e| format!("cannot listen on {addr} (demo site): {e}"))?;
        println!("demo site listening on {}", bound.local_addr());
        bound
            .serve(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| format!("demo site stopped: {e}"))
    });
    runtime_result(result)
}
