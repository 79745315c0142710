//! `pacerd`: the Pacer daemon.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if pacer::worker::child::is_worker_invocation() {
        pacer::worker::child::main();
    }
    let args = pacer::daemon::Args::parse();
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
