//! `pacer history`: runs, newest first, read straight from the database.

use std::process::ExitCode;

use clap::Args;

use super::source::Source;
use super::table::{Table, line, millis, short, when};
use super::{Context, print_json};
use crate::model::Status;
use crate::store::{HistoryQuery, RunRecord};
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
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
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
    let source = match Source::open(context)? {
        Some(source) => source,
        // Before pacerd's first start there is no history yet, which is no error for a listing.
        None if !args.follow => return print_runs(context, args, &[], false),
        None => return Err(Source::missing(context)),
    };
    let runs = source.runs(&query)?;
    if args.follow {
        return follow(context, &source, &query, runs);
    }
    print_runs(context, args, &runs, source.is_cluster())
}

fn print_runs(
    context: &Context,
    args: &HistoryArgs,
    runs: &[RunRecord],
    cluster: bool,
) -> anyhow::Result<ExitCode> {
    if context.json {
        print_json(&runs)?;
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs match");
        if let Some(job) = &args.job {
            super::note_unknown_job(context, job);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(columns(cluster));
    for run in runs {
        table.row(cells(run, cluster));
    }
    table.print();
    if let Some(last) = runs.last().filter(|last| {
        last.id > 1 && runs.len() == usize::try_from(args.limit).unwrap_or(usize::MAX)
    }) {
        println!("(more: {})", next_page(args, last.id));
    }
    Ok(ExitCode::SUCCESS)
}

/// The columns of a run's row, in the table and in `--follow`; a cluster's runs name their
/// node.
fn columns(cluster: bool) -> Vec<&'static str> {
    let mut columns = vec!["ID", "JOB", "STATUS"];
    if cluster {
        columns.push("NODE");
    }
    columns.extend(["TRIGGER", "SCHEDULED", "DURATION", "QUEUED", "MESSAGE"]);
    columns
}

/// A run's row: its cells under [`columns`].
fn cells(run: &RunRecord, cluster: bool) -> Vec<String> {
    let trigger = if run.attempt > 1 {
        format!("{} #{}", run.trigger, run.attempt)
    } else {
        run.trigger.to_string()
    };
    let mut cells = vec![run.id.to_string(), run.job.clone(), run.status.to_string()];
    if cluster {
        cells.push(run.node.clone().flatten().unwrap_or_else(|| "-".to_owned()));
    }
    cells.extend([
        trigger,
        when(Some(run.scheduled_at)),
        millis(run.duration_ms),
        millis(run.queue_ms),
        // What went wrong, or what the plugin said last when it succeeded.
        short(run.error.as_deref().or(run.message.as_deref()), 60),
    ]);
    cells
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
    source: &Source,
    query: &HistoryQuery,
    mut found: Vec<RunRecord>,
) -> anyhow::Result<ExitCode> {
    found.reverse();
    let known = source.last_statuses()?;
    let cluster = source.is_cluster();
    let mut printer = Printer::new(
        context.json,
        cluster,
        &found,
        known.keys().map(String::as_str),
    );
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
        let mut fresh = source.runs(&HistoryQuery {
            after: Some(seen),
            ..unfiltered.clone()
        })?;
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
            match source.run(id)? {
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
    cluster: bool,
    /// Column widths fixed before the first row, since rows come one at a time.
    widths: Vec<usize>,
    header: bool,
}

impl Printer {
    /// A printer whose columns fit `runs` and every job name in `names`.
    fn new<'a>(
        json: bool,
        cluster: bool,
        runs: &[RunRecord],
        names: impl Iterator<Item = &'a str>,
    ) -> Printer {
        let rows: Vec<Vec<String>> = runs.iter().map(|run| cells(run, cluster)).collect();
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
        let mut widths = vec![id, job, 9];
        if cluster {
            // Node ids are short host names, mostly.
            widths.push(16);
        }
        widths.extend([12, 25, 8, 8, 0]);
        for (width, title) in widths.iter_mut().zip(columns(cluster)) {
            *width = (*width).max(title.len());
        }
        Printer {
            json,
            cluster,
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
                let header: Vec<String> = columns(self.cluster)
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect();
                writeln!(out, "{}", line(&header, &self.widths))?;
                self.header = true;
            }
            let mut cells = cells(run, self.cluster);
            // A job added after the columns were laid out keeps them in line: its name is cut.
            cells[1] = short(Some(&cells[1]), self.widths[1]);
            writeln!(out, "{}", line(&cells, &self.widths))?;
        }
        out.flush()?;
        Ok(())
    }
}
