//! `pacer history`: runs, newest first, read straight from the database.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::table::{Table, line, millis, short, when};
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
    super::warn_damaged(&history, &settings.database);
    if args.follow {
        return follow(context, &history, &settings.database, &query, runs);
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
    "MESSAGE",
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
        // What went wrong, or what the plugin said last when it succeeded.
        short(run.error.as_deref().or(run.message.as_deref()), 60),
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
/// skipped fire), polling the database twice a second. Runs still queued or running are
/// printed once they end.
fn follow(
    context: &Context,
    history: &SqliteHistory,
    database: &Path,
    query: &HistoryQuery,
    mut found: Vec<RunRecord>,
) -> anyhow::Result<ExitCode> {
    found.reverse();
    let known = history.last_statuses()?;
    let mut printer = Printer::new(context.json, &found, known.keys().map(String::as_str));
    let mut seen = found.iter().map(|run| run.id).max().unwrap_or(0);
    let mut running: Vec<i64> = Vec::new();
    for run in found {
        if !run.status.is_final() {
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
        if let Some(damaged) = super::warn_damaged(history, database) {
            seen = seen.max(damaged);
        }
        fresh.reverse();
        for run in fresh {
            seen = seen.max(run.id);
            if !run.status.is_final() {
                running.push(run.id);
            } else if query.status.is_none_or(|status| status == run.status) {
                printer.print(&run)?;
            }
        }
        let mut still = Vec::new();
        for id in running {
            match history.run(id)? {
                Some(detail) if !detail.record.status.is_final() => still.push(id),
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
    /// Column widths fixed before the first row, since rows come one at a time.
    widths: Vec<usize>,
    header: bool,
}

impl Printer {
    /// A printer whose columns fit `runs` and every job name in `names`.
    fn new<'a>(json: bool, runs: &[RunRecord], names: impl Iterator<Item = &'a str>) -> Printer {
        let rows: Vec<Vec<String>> = runs.iter().map(cells).collect();
        let widest = |column: usize| rows.iter().map(|row| row[column].chars().count()).max();
        let job = names
            .map(|name| name.chars().count())
            .chain(widest(1))
            .max()
            .unwrap_or(0);
        let id = runs
            .iter()
            .map(|run| run.id)
            .max()
            .unwrap_or(0)
            .saturating_mul(10)
            .to_string()
            .len();
        // The widest value each other column can hold: a status, a trigger with an attempt, a
        // local time with a zone abbreviation, and durations up to a day.
        let mut widths = vec![id, job, 9, 12, 25, 8, 8, 0];
        for (width, title) in widths.iter_mut().zip(COLUMNS) {
            *width = (*width).max(title.len());
        }
        Printer {
            json,
            widths,
            header: false,
        }
    }

    fn print(&mut self, run: &RunRecord) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", serde_json::to_string(run)?)?;
        } else {
            if !self.header {
                let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
                writeln!(out, "{}", line(&header, &self.widths))?;
                self.header = true;
            }
            let mut cells = cells(run);
            // A job added after the columns were laid out keeps them in line: its name is cut.
            cells[1] = short(Some(&cells[1]), self.widths[1]);
            writeln!(out, "{}", line(&cells, &self.widths))?;
        }
        out.flush()?;
        Ok(())
    }
}
