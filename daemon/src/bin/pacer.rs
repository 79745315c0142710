//! `pacer`: the Pacer command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if pacer::worker::child::is_worker_invocation() {
        pacer::worker::child::main();
    }
    pacer::cli::quiet_on_closed_pipe();
    let args = pacer::cli::Args::parse();
    match pacer::cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pacer: {error:#}");
            ExitCode::FAILURE
        }
    }
}
