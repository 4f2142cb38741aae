//! `sitesteer demo` and `sitesteer demo-site`, the command-line side of the demo sites (which
//! live in the `sitesteer-demo` crate): their arguments, the built-in config of the demo and
//! the front door started with it, the banner, and which exit code each failure gets.

use std::net::SocketAddr;
use std::path::Path;

use clap::Args;
use sitesteer_demo::{DemoSite, SiteError};

use crate::server::{self, RunError};

/// Arguments of `sitesteer demo`.
#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// The proxy's HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(super) http: SocketAddr,
    /// The proxy's raw TCP listener (newline-delimited JSON-RPC).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub(super) tcp: SocketAddr,
    /// The admin listener.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub(super) admin: SocketAddr,
    /// First port of the three demo sites (on 127.0.0.1); their TCP ports start 100 above.
    #[arg(long, default_value_t = 18101)]
    pub(super) site_base_port: u16,
}

/// Arguments of the hidden `sitesteer demo-site`.
#[derive(Debug, Args)]
pub(super) struct DemoSiteArgs {
    /// Site name (returned in `x-demo-site`).
    #[arg(long)]
    pub(super) name: String,
    /// HTTP listener (Streamable HTTP at /mcp, WebSocket at /mcp/ws, HTTP+SSE at /mcp/sse).
    #[arg(long)]
    pub(super) http: SocketAddr,
    /// Optional raw TCP listener (newline-delimited JSON-RPC).
    #[arg(long)]
    pub(super) tcp: Option<SocketAddr>,
}

/// The demo sites: (name, region, tier).
const SITES: [(&str, &str, u8); 3] = [
    ("alpha", "us-east", 0),
    ("bravo", "us-west", 0),
    ("charlie", "eu", 1),
];

/// The config the demo runs with; its state and session key live in `state_dir`.
fn demo_config_text(args: &DemoArgs, state_dir: &Path) -> String {
    let mut text = format!(
        "state_file = \"{state}/state.json\"\n\n[listen]\nhttp = \"{}\"\ntcp = \"{}\"\nadmin = \"{}\"\n\n\
         [proxy]\nsession_key_file = \"{state}/session.key\"\n\n[health]\nrise = 2\nfall = 2\n\n\
         [[probe]]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\n\
         [[probe]]\nkind = \"mcp\"\npath = \"/mcp\"\ninterval = \"250ms\"\ntimeout = \"200ms\"\nmcp_protocol = \"2025-11-25\"\n\n\
         [[probe]]\nkind = \"mcp\"\nendpoint = \"tcp\"\ninterval = \"250ms\"\ntimeout = \"200ms\"\n",
        args.http,
        args.tcp,
        args.admin,
        state = state_dir.display(),
    );
    for (i, (name, region, tier)) in SITES.iter().enumerate() {
        let (http, tcp) = site_ports(args, i);
        text.push_str(&format!(
            "\n[[site]]\nname = \"{name}\"\nregion = \"{region}\"\ntier = {tier}\n[site.endpoints]\n\
             http = \"127.0.0.1:{http}\"\nws = \"127.0.0.1:{http}\"\nsse = \"127.0.0.1:{http}\"\ntcp = \"127.0.0.1:{tcp}\"\n"
        ));
    }
    text
}

/// The (http, tcp) ports of demo site `i`.
fn site_ports(args: &DemoArgs, i: usize) -> (u16, u16) {
    let http = args.site_base_port.saturating_add(i as u16);
    (http, http.saturating_add(100))
}

/// Why `sitesteer demo` did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum DemoError {
    /// The built-in config did not validate.
    #[error("the demo config is invalid: {0}")]
    Config(#[source] sitesteer_config::ConfigErrors),
    /// The front door (or a demo site, started on its control runtime) failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl DemoError {
    /// The process exit code of this failure.
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            DemoError::Config(_) => crate::exit::EXIT_USAGE,
            DemoError::Run(_) => crate::exit::EXIT_RUNTIME,
        }
    }
}

/// `sitesteer demo`: three demo sites behind the front door, on the built-in config, until
/// the front door stops.
pub(super) fn run(args: DemoArgs) -> Result<(), DemoError> {
    let state_dir = std::env::temp_dir().join(format!("sitesteer-demo-{}", std::process::id()));
    let text = demo_config_text(&args, &state_dir);
    let config =
        sitesteer_config::parse(&text, "<demo>", Path::new(".")).map_err(DemoError::Config)?;
    let sites: Vec<DemoSite> = SITES
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| {
            let (http, tcp) = site_ports(&args, i);
            DemoSite {
                name: name.to_string(),
                http: SocketAddr::from(([127, 0, 0, 1], http)),
                tcp: Some(SocketAddr::from(([127, 0, 0, 1], tcp))),
            }
        })
        .collect();
    print_banner(&args, &sites);
    server::run(config, server::Origin { path: None }, || async move {
        for site in sites {
            site.spawn().await.map_err(|e| RunError::Bind {
                addr: e.http,
                what: "demo site",
                source: e.source,
            })?;
        }
        Ok(())
    })?;
    Ok(())
}

fn print_banner(args: &DemoArgs, sites: &[DemoSite]) {
    let (proxy, tcp, admin) = (args.http, args.tcp, args.admin);
    println!("sitesteer demo: three MCP sites behind one front door\n");
    println!("  MCP Streamable HTTP   http://{proxy}/mcp");
    println!("  MCP over WebSocket    ws://{proxy}/mcp/ws");
    println!("  MCP over SSE          http://{proxy}/mcp/sse");
    println!("  MCP over raw TCP      {tcp}  (newline-delimited JSON-RPC)");
    println!("  admin API             http://{admin}/api/v1/sites");
    println!("  metrics               http://{admin}/metrics");
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
    let echo = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
    println!("\nTry:");
    println!("  curl -si http://{proxy}/mcp -H 'content-type: application/json' \\");
    println!("       -H 'accept: application/json, text/event-stream' -d '{echo}'");
    println!("  curl -sN http://{proxy}/mcp/sse                # an SSE stream; its first event names the message URL");
    println!(
        "  echo '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}}' | nc -q1 {} {}   # raw TCP",
        tcp.ip(),
        tcp.port()
    );
    println!(
        "  curl -s http://{admin}/api/v1/sites             # every site's state, score and latency"
    );
    println!("  curl -s -XPOST http://{first}/control -d '{{\"mode\":\"hang\"}}'   # make alpha hang; watch it go down");
    println!("  curl -s -XPOST http://{first}/control -d '{{\"mode\":\"ok\"}}'     # and recover");
    println!("\nCtrl-C stops the demo.\n");
}

/// `sitesteer demo-site`: one demo site in its own process, until Ctrl-C.
pub(super) fn run_site(args: DemoSiteArgs) -> Result<(), SiteError> {
    sitesteer_demo::run_site(DemoSite {
        name: args.name,
        http: args.http,
        tcp: args.tcp,
    })
}
