//! `pacer history`: runs, newest first, read straight from the database.

use std::process::ExitCode;

use clap::Args;

use super::table::{Table, millis, short, when};
use super::{Context, print_json};
use crate::model::Status;
use crate::store::sqlite::SqliteHistory;
use crate::store::{History, HistoryQuery, RunRecord, StoreError};
use crate::time::{rfc3339_ms, to_ms};

/// How many runs `pacer history` lists without `--limit`.
const DEFAULT_LIMIT: u32 = 50;

/// Filters for `pacer history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this job.
    #[arg(long, value_name = "J")]
    job: Option<String>,
    /// Only this status (running, succeeded, failed, timed_out, crashed, skipped, cancelled, abandoned).
    #[arg(long, value_name = "S")]
    status: Option<Status>,
    /// Scheduled at or after T: RFC 3339, or a duration ago such as 2h.
    #[arg(long, value_name = "T", value_parser = super::instant_arg)]
    since: Option<jiff::Timestamp>,
    /// Scheduled before T: RFC 3339, or a duration ago.
    #[arg(long, value_name = "T", value_parser = super::instant_arg)]
    until: Option<jiff::Timestamp>,
    /// At most N runs.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT)]
    limit: u32,
    /// Only runs older than ID (the next page).
    #[arg(long, value_name = "ID")]
    before: Option<i64>,
    /// Then print runs as they finish, until interrupted (with --json: one object per line).
    #[arg(long)]
    follow: bool,
}

pub fn run(context: &Context, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let query = HistoryQuery {
        job: args.job.clone(),
        status: args.status,
        trigger: None,
        since: args.since.map(to_ms),
        until: args.until.map(to_ms),
        before: args.before,
        after: None,
        limit: args.limit,
    };
    let settings = context.settings()?;
    let history = match SqliteHistory::open(&settings.database) {
        Ok(history) => history,
        // Before pacerd's first start there is no history yet, which is no error for a listing.
        Err(StoreError::Missing(_)) if !args.follow => {
            return print_runs(context, args, &[]);
        }
        Err(e) => return Err(e.into()),
    };
    let runs = history.runs(&query)?;
    if args.follow {
        return follow(context, &history, &query, runs);
    }
    print_runs(context, args, &runs)
}

fn print_runs(
    context: &Context,
    args: &HistoryArgs,
    runs: &[RunRecord],
) -> anyhow::Result<ExitCode> {
    if context.json {
        print_json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs match");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(COLUMNS.to_vec());
    for run in runs {
        table.row(cells(run));
    }
    table.print();
    if let Some(last) = runs.last().filter(|last| {
        last.id > 1 && runs.len() == usize::try_from(args.limit).unwrap_or(usize::MAX)
    }) {
        println!("(more: {})", next_page(args, last.id));
    }
    Ok(ExitCode::SUCCESS)
}

/// The columns of a run's row, in the table and in `--follow`.
const COLUMNS: [&str; 8] = [
    "ID",
    "JOB",
    "STATUS",
    "TRIGGER",
    "SCHEDULED",
    "DURATION",
    "QUEUED",
    "ERROR",
];

/// A run's row: its cells under [`COLUMNS`].
fn cells(run: &RunRecord) -> Vec<String> {
    let trigger = if run.attempt > 1 {
        format!("{} #{}", run.trigger, run.attempt)
    } else {
        run.trigger.to_string()
    };
    vec![
        run.id.to_string(),
        run.job.clone(),
        run.status.to_string(),
        trigger,
        when(Some(run.scheduled_at)),
        millis(run.duration_ms),
        millis(run.queue_ms),
        short(run.error.as_deref(), 60),
    ]
}

/// The command that lists the next page: the same filters, before the page's oldest run.
fn next_page(args: &HistoryArgs, oldest: i64) -> String {
    let mut command = String::from("pacer history");
    if let Some(job) = &args.job {
        command.push_str(&format!(" --job {job}"));
    }
    if let Some(status) = args.status {
        command.push_str(&format!(" --status {status}"));
    }
    for (flag, at) in [("--since", args.since), ("--until", args.until)] {
        if let Some(at) = at {
            command.push_str(&format!(" {flag} {}", rfc3339_ms(to_ms(at))));
        }
    }
    if args.limit != DEFAULT_LIMIT {
        command.push_str(&format!(" --limit {}", args.limit));
    }
    command.push_str(&format!(" --before {oldest}"));
    command
}

/// Prints the runs found, oldest first, then every run that finishes from now on (and every
/// skipped fire), polling the database twice a second.
fn follow(
    context: &Context,
    history: &SqliteHistory,
    query: &HistoryQuery,
    mut found: Vec<RunRecord>,
) -> anyhow::Result<ExitCode> {
    found.reverse();
    let mut printer = Printer::new(context.json);
    let mut seen = found.iter().map(|run| run.id).max().unwrap_or(0);
    let mut running: Vec<i64> = Vec::new();
    for run in found {
        if run.status == Status::Running {
            running.push(run.id);
        } else {
            printer.print(&run)?;
        }
    }
    // New runs may start running and finish later; --status filters them once finished.
    let unfiltered = HistoryQuery {
        status: None,
        before: None,
        until: None,
        limit: 1_000,
        ..query.clone()
    };
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut fresh = history.runs(&HistoryQuery {
            after: Some(seen),
            ..unfiltered.clone()
        })?;
        fresh.reverse();
        for run in fresh {
            seen = seen.max(run.id);
            if run.status == Status::Running {
                running.push(run.id);
            } else if query.status.is_none_or(|status| status == run.status) {
                printer.print(&run)?;
            }
        }
        let mut still = Vec::new();
        for id in running {
            match history.run(id)? {
                Some(detail) if detail.record.status == Status::Running => still.push(id),
                Some(detail) if query.status.is_none_or(|s| s == detail.record.status) => {
                    printer.print(&detail.record)?;
                }
                Some(_) | None => {}
            }
        }
        running = still;
    }
}

/// Prints followed runs one line each: a table row, or a JSON object.
struct Printer {
    json: bool,
    header: bool,
}

impl Printer {
    fn new(json: bool) -> Printer {
        Printer {
            json,
            header: false,
        }
    }

    fn print(&mut self, run: &RunRecord) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string(run)?)?;
        } else {
            // Rows come one at a time, so columns get fixed widths (a long job name shifts its
            // own row only).
            const WIDTHS: [usize; 7] = [8, 20, 10, 12, 25, 9, 7];
            let line = |cells: &[String]| {
                let mut line = String::new();
                for (cell, width) in cells.iter().zip(WIDTHS) {
                    line.push_str(&format!("{cell:<width$} "));
                }
                line.push_str(cells.last().map_or("", String::as_str));
                line.trim_end().to_owned()
            };
            if !self.header {
                let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
                writeln!(out, "{}", line(&header))?;
                self.header = true;
            }
            writeln!(out, "{}", line(&cells(run)))?;
        }
        out.flush()?;
        Ok(())
    }
}
