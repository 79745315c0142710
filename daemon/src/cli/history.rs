//! `pacer history`: runs, newest first, read straight from the database.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;

use super::table::{Table, millis, short, when};
use super::{Context, print_json};
use crate::model::Status;
use crate::store::sqlite::SqliteHistory;
use crate::store::{History, HistoryQuery, RunRecord};
use crate::time::{parse_instant_or_ago, to_ms};

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
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Scheduled before T: RFC 3339, or a duration ago.
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// At most N runs.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: u32,
    /// Only runs older than ID (the next page).
    #[arg(long, value_name = "ID")]
    before: Option<i64>,
    /// Then print runs as they finish, until interrupted (with --json: one object per line).
    #[arg(long)]
    follow: bool,
}

pub fn run(context: &Context, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let now = jiff::Timestamp::now();
    let instant = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
        text.as_deref()
            .map(|t| {
                parse_instant_or_ago(t, now)
                    .map(to_ms)
                    .map_err(|e| anyhow!("--{flag}: {e}"))
            })
            .transpose()
    };
    let query = HistoryQuery {
        job: args.job.clone(),
        status: args.status,
        since: instant(&args.since, "since")?,
        until: instant(&args.until, "until")?,
        before: args.before,
        after: None,
        limit: args.limit,
    };
    let settings = context.settings()?;
    let history = SqliteHistory::open(&settings.database)?;
    let runs = history.runs(&query)?;
    if args.follow {
        return follow(context, &history, &query, runs);
    }
    if context.json {
        print_json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs match");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec![
        "ID",
        "JOB",
        "STATUS",
        "TRIGGER",
        "SCHEDULED",
        "DURATION",
        "QUEUED",
        "ERROR",
    ]);
    for run in &runs {
        let trigger = if run.attempt > 1 {
            format!("{} #{}", run.trigger, run.attempt)
        } else {
            run.trigger.to_string()
        };
        table.row(vec![
            run.id.to_string(),
            run.job.clone(),
            run.status.to_string(),
            trigger,
            when(Some(run.scheduled_at)),
            millis(run.duration_ms),
            millis(run.queue_ms),
            short(run.error.as_deref(), 60),
        ]);
    }
    table.print();
    if let Some(last) = runs
        .last()
        .filter(|_| runs.len() == usize::try_from(args.limit).unwrap_or(usize::MAX))
    {
        println!("(more: pacer history --before {})", last.id);
    }
    Ok(ExitCode::SUCCESS)
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
            if !self.header {
                writeln!(
                    out,
                    "{:<8} {:<20} {:<10} {:<9} {:<25} {:<9} ERROR",
                    "ID", "JOB", "STATUS", "TRIGGER", "SCHEDULED", "DURATION"
                )?;
                self.header = true;
            }
            writeln!(
                out,
                "{:<8} {:<20} {:<10} {:<9} {:<25} {:<9} {}",
                run.id,
                run.job,
                run.status,
                run.trigger,
                when(Some(run.scheduled_at)),
                millis(run.duration_ms),
                short(run.error.as_deref(), 80)
            )?;
        }
        out.flush()?;
        Ok(())
    }
}
