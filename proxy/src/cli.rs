//! The command line: parses arguments and dispatches to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::{runtime_result, EXIT_USAGE};
use crate::server;

mod demo;

/// sitesteer: an edge health-probe and traffic-steering proxy for MCP sites.
#[derive(Debug, Parser)]
#[command(name = "sitesteer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start three local demo sites, the proxy in front of them and the admin listener.
    Demo(demo::DemoArgs),
    /// Run the front door from a config file.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "sitesteer.toml")]
        config: PathBuf,
        /// Take the listening sockets over from the sitesteer running with this config:
        /// start this, then send the old process SIGQUIT (within 5 seconds).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file: exit 0 when valid, 1 with every error otherwise.
    Check {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Operator client of the admin API.
    Ctl(crate::ctl::CtlArgs),
    /// A real failover drill against a running sitesteer, reported against the objectives.
    Drill(crate::drill::cli::DrillArgs),
    /// Bridge a stdio MCP client (one that launches a command) to the front door.
    Stdio {
        /// The front door's MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
        #[arg(long)]
        url: String,
    },
    /// Run one demo MCP site (used by tests and benchmarks).
    #[command(hide = true)]
    DemoSite(demo::DemoSiteArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing();
    match cli.command {
        Command::Check { config } => match load_checked(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} sites, {} routes, {} probes)",
                    config.display(),
                    c.sites.len(),
                    c.routes.len(),
                    c.probes.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config, upgrade } => match load_checked(&config) {
            Ok(c) => runtime_result(server::run_with(
                c,
                server::Origin { path: Some(config) },
                server::RunOptions { upgrade },
                || async { Ok(()) },
            )),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Demo(args) => match demo::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sitesteer: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Ctl(args) => crate::ctl::main(args),
        Command::Drill(args) => crate::drill::cli::main(args),
        Command::Stdio { url } => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return runtime_result(Err(format!("cannot start the runtime: {e}"))),
            };
            runtime_result(runtime.block_on(crate::stdio::run(&url)))
        }
        Command::DemoSite(args) => runtime_result(demo::run_site(args)),
    }
}

/// Loads and validates the config, then reads the TLS files it names (certificates and keys
/// that do not load are config errors too, named by their key).
fn load_checked(
    path: &std::path::Path,
) -> Result<sitesteer_config::Config, sitesteer_config::ConfigErrors> {
    let config = sitesteer_config::load(path)?;
    crate::tls::check(&config, &path.display().to_string())?;
    Ok(config)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,pingora_proxy=error,pingora_core=warn,hickory_server=warn")
    });
    let _ = tracing_log::LogTracer::init();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    // `LogTracer::init` lets every `log` record through (TRACE), so each of pingora's
    // per-request `debug!`/`trace!` calls went through the dispatcher and the filter only to
    // be dropped. Capping `log` at the filter's most verbose level makes a disabled record
    // cost one comparison at its call site.
    tracing_log::log::set_max_level(tracing_log::AsLog::as_log(
        &tracing::level_filters::LevelFilter::current(),
    ));
}
