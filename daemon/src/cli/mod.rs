//! `pacer`: query the history and control the daemon. One module per verb.
//!
//! `history`, `show`, `stats` and `nodes` read the database directly (read-only; with
//! `[cluster]`, the database the nodes share), so they work while the daemon is down. `jobs` and `plugins` ask the daemon and fall back to the config file and the
//! database. `status`, `run`, `cancel`, `pause`, `resume` and `reload` need the daemon. Every verb reads only `[daemon]` to find the socket and
//! database, except where it needs the jobs, so an error among the jobs does not stop it.

mod check;
mod control;
mod generate;
mod history;
mod jobs;
mod nodes;
mod plugins;
mod show;
mod source;
mod stats;
mod status;
mod table;
mod why;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};

use crate::config::{ConfigPath, DaemonSettings, load_daemon_settings};
use crate::control::Request as ControlRequest;
use crate::store::History;

/// Query Pacer's run history and control the pacerd daemon.
#[derive(Debug, Parser)]
#[command(
    name = "pacer",
    version,
    about = "Query Pacer's run history and control the pacerd daemon",
    propagate_version = true
)]
pub struct Args {
    /// The config file [env: PACER_CONFIG] [default: /etc/pacer/pacer.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs, newest first.
    History(history::HistoryArgs),
    /// One run in full, with its captured output.
    Show {
        /// The run's id.
        id: i64,
    },
    /// Every job: schedule, zone, plugin, next fire, last status.
    Jobs,
    /// Per job: runs, success rate, duration and lateness percentiles.
    Stats(stats::StatsArgs),
    /// Validate the config and each job's params; print each job's next fires.
    Check(check::CheckArgs),
    /// Plugins found: name, version, ABI version, path, state.
    Plugins,
    /// Whether pacerd runs, and how loaded it is.
    Status,
    /// Start a run now (trigger `manual`), through the job's policies.
    Run {
        /// The job.
        job: String,
        /// JSON object merged over the job's params.
        #[arg(long, value_name = "JSON", value_parser = params_arg)]
        params: Option<serde_json::Value>,
        /// Wait for the run (and its retries) to end; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a running run (recorded `cancelled`).
    Cancel {
        /// The run's id.
        id: i64,
    },
    /// Stop firing a job (survives restarts).
    Pause {
        /// The job.
        job: String,
    },
    /// Fire a paused job again.
    Resume {
        /// The job.
        job: String,
    },
    /// Re-read the config (like SIGHUP) and report the outcome.
    Reload,
    /// With [cluster]: every node, its state, last heartbeat, clock offset, runs in flight
    /// and config drift.
    Nodes,
    /// A job's recent fires and what became of each, and its next fire.
    Why {
        /// The job.
        job: String,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: generate::CompletionShell,
    },
    /// Write every man page (roff) into DIR, for packaging.
    #[command(hide = true)]
    Manual {
        /// Where the pages go.
        dir: PathBuf,
    },
}

/// What a verb needs besides its own arguments.
#[derive(Debug)]
struct Context {
    config: PathBuf,
    json: bool,
}

impl Context {
    fn settings(&self) -> anyhow::Result<DaemonSettings> {
        load_daemon_settings(&self.config).map_err(|errors| anyhow!("{errors}"))
    }
}

/// Runs one verb and returns the exit code (0 ok, 1 error or failed check).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let context = Context {
        config: ConfigPath::resolve(args.config).0,
        json: args.json,
    };
    match args.command {
        Command::History(history) => history::run(&context, &history),
        Command::Show { id } => show::run(&context, id),
        Command::Jobs => jobs::run(&context),
        Command::Stats(stats) => stats::run(&context, &stats),
        Command::Check(check) => check::run(&context, &check),
        Command::Plugins => plugins::run(&context),
        Command::Status => status::run(&context),
        Command::Run { job, params, wait } => control::run(&context, &job, params, wait),
        Command::Cancel { id } => control::cancel(&context, id),
        Command::Pause { job } => control::simple(&context, &ControlRequest::Pause { job }),
        Command::Resume { job } => control::simple(&context, &ControlRequest::Resume { job }),
        Command::Reload => control::simple(&context, &ControlRequest::Reload),
        Command::Why { job } => why::run(&context, &job),
        Command::Nodes => nodes::run(&context),
        Command::Completions { shell } => generate::completions(shell),
        Command::Manual { dir } => generate::manual(&dir),
    }
}

/// After a query by job found nothing: says so when the name is in no config either, with the
/// name a typo meant. A job removed from the config keeps its history, so this is a note on
/// stderr, not an error; a config that cannot be read says nothing here.
fn note_unknown_job(context: &Context, job: &str) {
    let Ok(config) = crate::config::load(&context.config, crate::config::Environment::current())
    else {
        return;
    };
    if config.job(job).is_some() {
        return;
    }
    match config.nearest_job(job) {
        Some(near) => eprintln!("pacer: no job `{job}` in the config: did you mean `{near}`?"),
        None => eprintln!("pacer: no job `{job}` in the config (pacer jobs lists them)"),
    }
}

/// Ends the CLI quietly, as other Unix tools do, when its reader goes away (`pacer history |
/// head`).
pub fn quiet_on_closed_pipe() {
    crate::sys::restore_default_actions(&[nix::sys::signal::Signal::SIGPIPE]);
}

/// `--since`, `--until`, `--from`: an RFC 3339 instant or a duration ago, read by clap so that a
/// bad one is a usage error (exit 2) like any other.
fn instant_arg(text: &str) -> Result<jiff::Timestamp, String> {
    crate::time::parse_instant_or_ago(text, jiff::Timestamp::now()).map_err(|e| e.to_string())
}

/// `--params`: a JSON object.
fn params_arg(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("must be a JSON object such as '{\"key\": \"value\"}'".to_owned())
    }
}

/// Warns on stderr about each row of `database` that `history` left out because it does not
/// decode: the listing goes on without it, and the operator learns which row to look at.
/// Returns the greatest run id among them, so that `--follow` moves past them.
fn warn_damaged(history: &dyn History, database: &Path) -> Option<i64> {
    let damaged = history.take_damaged();
    for row in &damaged {
        eprintln!(
            "pacer: warning: left out a damaged row of {}: {row} (docs/failures.md)",
            database.display()
        );
    }
    damaged.iter().filter_map(|row| row.id).max()
}

/// Prints `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A single-threaded runtime for the verbs that start worker processes.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
