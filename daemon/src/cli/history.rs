//! `pacer history`: runs, newest first, read straight from the database.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;

use super::table::{Table, millis, short, when};
use super::{Context, print_json};
use crate::model::Status;
use crate::store::sqlite::SqliteHistory;
use crate::store::{History, HistoryQuery};
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
    let runs = SqliteHistory::open(&settings.database)?.runs(&query)?;
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
