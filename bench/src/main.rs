//! `pacer-bench`: runs each scenario, prints a table, and with `--json PATH` writes the figures
//! (each a median over its repetitions) under the keys `docs/performance.md` describes.

mod daemon;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Measure Pacer.
#[derive(Debug, Parser)]
#[command(name = "pacer-bench", version, about)]
struct Args {
    /// A shorter run of every scenario, for CI-sized checks.
    #[arg(long)]
    quick: bool,
    /// Also write the figures as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match scenarios::run_all(args.quick, &args.only) {
        Ok(report) => {
            report.print();
            if let Some(path) = &args.json
                && let Err(e) = report.write_json(path)
            {
                eprintln!("pacer-bench: cannot write {}: {e:#}", path.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pacer-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
