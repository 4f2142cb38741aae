//! `sitesteer drill SITE`: runs a drill and prints its report (Markdown, or JSON with
//! `--json`). Exit 0 when every objective is met, 3 when one is not, 2 when the drill could
//! not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sitesteer_config::DrillMode;

use super::{markdown, run, svg, DrillPlan};
use crate::ctl::CtlError;
use crate::exit::{EXIT_OBJECTIVE_MISSED, EXIT_RUNTIME, EXIT_USAGE};

/// `sitesteer drill` arguments.
#[derive(Debug, Args)]
pub(crate) struct DrillArgs {
    /// The site to take out.
    pub site: String,
    /// The admin API.
    #[arg(long, env = "SITESTEER_ADMIN", default_value = "http://127.0.0.1:9900")]
    pub admin: String,
    /// The admin token.
    #[arg(long, env = "SITESTEER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Whole drill, seconds: a third before the fault, a third out, a third after.
    #[arg(long, default_value_t = 9.0)]
    pub duration: f64,
    /// Synthetic MCP requests per second through the proxy.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// The fault: hang (every connection of sitesteer to the site hangs), drop (connects time
    /// out), slow (answers 200 ms late) or errors (HTTP 500), which act in the path and must
    /// be detected like real failures; or maintenance, kill-probe or blackhole, which tell
    /// sitesteer directly.
    #[arg(long, default_value = "hang", value_parser = parse_mode)]
    pub mode: DrillMode,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write report.md, report.json and timeline.svg into this folder.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Do not record the result in the incidents list.
    #[arg(long)]
    pub no_record: bool,
}

fn parse_mode(text: &str) -> Result<DrillMode, String> {
    DrillMode::parse(text).ok_or_else(|| {
        format!(
            "expected hang, drop, slow, errors, maintenance, kill-probe or blackhole, got {text:?}"
        )
    })
}

/// Runs `sitesteer drill`.
pub(crate) fn main(args: DrillArgs) -> ExitCode {
    if !(args.duration.is_finite() && (3.0..=3600.0).contains(&args.duration))
        || args.rate == 0
        || args.rate > 10_000
    {
        eprintln!("sitesteer: --duration must be 3 to 3600 seconds and --rate 1 to 10000");
        return ExitCode::from(EXIT_USAGE);
    }
    let plan = DrillPlan {
        admin: args.admin.clone(),
        token: args.token.clone(),
        site: args.site.clone(),
        mode: args.mode,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        record: !args.no_record,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sitesteer: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let report = match runtime.block_on(run(&plan)) {
        Ok(r) => r,
        Err(CtlError(code, message)) => {
            eprintln!("sitesteer: drill failed: {message}");
            return ExitCode::from(code);
        }
    };
    if let Some(dir) = &args.report_dir {
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(dir.join("timeline.svg"), svg(&report)))
            .and_then(|_| {
                std::fs::write(
                    dir.join("report.md"),
                    markdown(&report, Some("timeline.svg")),
                )
            })
            .and_then(|_| {
                std::fs::write(
                    dir.join("report.json"),
                    serde_json::to_vec_pretty(&report).unwrap_or_default(),
                )
            });
        if let Err(e) = written {
            eprintln!(
                "sitesteer: cannot write the report to {}: {e}",
                dir.display()
            );
            return ExitCode::from(EXIT_RUNTIME);
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!(
            "{}",
            markdown(&report, args.report_dir.as_ref().map(|_| "timeline.svg"))
        );
    }
    if report.met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_OBJECTIVE_MISSED)
    }
}
