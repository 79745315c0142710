//! `pacer stats`: per-job figures over the history.

use std::process::ExitCode;

use clap::Args;

use super::source::Source;
use super::table::{Table, millis};
use super::{Context, print_json};
use crate::time::to_ms;

/// What `pacer stats` covers.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this job.
    #[arg(long, value_name = "J")]
    job: Option<String>,
    /// Runs scheduled at or after T: RFC 3339, or a duration ago such as 7d.
    #[arg(long, value_name = "T", value_parser = super::instant_arg)]
    since: Option<jiff::Timestamp>,
}

pub fn run(context: &Context, args: &StatsArgs) -> anyhow::Result<ExitCode> {
    let since = args.since.map(to_ms);
    let stats = match Source::open(context)? {
        Some(source) => source.stats(args.job.as_deref(), since)?,
        // Before pacerd's first start there are no runs to count, which is no error.
        None => Vec::new(),
    };
    if context.json {
        print_json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() {
        println!("no finished runs match");
        if let Some(job) = &args.job {
            super::note_unknown_job(context, job);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec![
        "JOB", "RUNS", "OK", "FAILED", "SUCCESS", "P50", "P95", "MAX", "QUEUE", "LATE P50",
        "LATE P95", "LATE MAX",
    ]);
    for s in &stats {
        table.row(vec![
            s.job.clone(),
            s.runs.to_string(),
            s.succeeded.to_string(),
            s.failed.to_string(),
            format!("{:.1}%", s.success_rate * 100.0),
            millis(s.p50_ms),
            millis(s.p95_ms),
            millis(s.max_ms),
            millis(s.mean_queue_ms.map(|q| q.round() as i64)),
            millis(s.p50_late_ms),
            millis(s.p95_late_ms),
            millis(s.max_late_ms),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
