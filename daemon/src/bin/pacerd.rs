//! `pacerd`: the Pacer daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Run scheduled jobs from a TOML file, each in its own process, and record every run.
#[derive(Debug, Parser)]
#[command(name = "pacerd", version, about)]
struct Args {
    /// The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    if pacer::worker::child::is_worker_invocation() {
        pacer::worker::child::main();
    }
    let args = Args::parse();
    pacer::logging::init();
    let options = pacer::daemon::Options {
        config: pacer::config::ConfigPath::resolve(args.config).0,
    };
    match pacer::daemon::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
