//! `pacerd`'s command line (in the library, so `pacer manual pacerd` can render its man page).

use std::path::PathBuf;

use clap::Parser;

/// Run scheduled jobs from a TOML file, each in its own process, and record every run.
///
/// pacerd reads cron-style schedules from its config file, runs each fire of a job as a child
/// process that loads the job's plugin, keeps load spikes flat with concurrency limits, and
/// records every run in SQLite. `pacer` shows the history and controls the daemon. SIGHUP
/// reloads the config; SIGTERM and SIGINT stop the daemon after giving running jobs
/// `shutdown_grace`.
#[derive(Debug, Parser)]
#[command(
    name = "pacerd",
    version,
    about = "Pacer's daemon: run scheduled jobs, each in its own process, and record every run"
)]
pub struct Args {
    /// The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}
