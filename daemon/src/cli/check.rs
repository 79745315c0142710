//! `pacer check`: is the config valid, does every job's plugin exist and accept its params,
//! and when will each job fire next.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::table::{Table, jitter, when};
use super::{Context, print_json, runtime};
use crate::config::{Config, Environment, Job, load};
use crate::control::client::ask;
use crate::control::{Request, Response};
use crate::plugins::{Registry, ScanOptions};
use crate::time::to_ms;
use crate::worker::protocol::{Assignment, Setup, Task};
use crate::worker::{Ended, Launcher, Stop, perform};

/// How long one plugin may take to validate its jobs' params: this, plus
/// [`VALIDATE_TIMEOUT_PER_JOB`] for each job.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// What each job adds to [`VALIDATE_TIMEOUT`], so a hundred thousand jobs get their time too.
const VALIDATE_TIMEOUT_PER_JOB: Duration = Duration::from_millis(1);

/// What `pacer check` prints.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How many fires to list per job.
    #[arg(long, value_name = "N", default_value_t = 5)]
    next: usize,
    /// List fires strictly after T (RFC 3339, or a duration ago); default: now.
    #[arg(long, value_name = "T", value_parser = super::instant_arg)]
    from: Option<jiff::Timestamp>,
}

/// One job's verdict, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Verdict {
    job: Option<String>,
    /// Shown in the table only: the JSON keeps the contract's fields.
    #[serde(skip)]
    jitter: Option<Duration>,
    #[serde(serialize_with = "serialize_instants")]
    next: Vec<i64>,
    error: Option<String>,
    /// Shown in the table's problem column when there is no error: why fewer fires than asked
    /// for are listed.
    #[serde(skip)]
    note: Option<String>,
}

fn serialize_instants<S: serde::Serializer>(values: &[i64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|ms| crate::time::rfc3339_ms(*ms)))
}

pub fn run(context: &Context, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let from = args.from.unwrap_or_else(jiff::Timestamp::now);
    let verdicts = match load(&context.config, daemon_environment(context)) {
        Ok(config) => check_jobs(&config, from, args.next)?,
        Err(errors) => errors
            .0
            .iter()
            .map(|error| Verdict {
                job: None,
                jitter: None,
                next: Vec::new(),
                error: Some(error.to_string()),
                note: None,
            })
            .collect(),
    };
    let failed = verdicts.iter().any(|v| v.error.is_some());
    if context.json {
        print_json(&verdicts)?;
    } else if verdicts.is_empty() {
        println!(
            "no jobs in {} (nor in its jobs.d/): add [[jobs]] tables to schedule something",
            context.config.display()
        );
    } else {
        print_table(&verdicts);
        if failed {
            eprintln!("pacer check: the config has errors (see above)");
        } else {
            println!("{} job(s) OK", verdicts.len());
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What `user` is judged against: the privileges of the pacerd that answers on the config's
/// socket, which is where the jobs will run (root checking a config for the packaged service
/// must hear what that service will say), else this process's own.
fn daemon_environment(context: &Context) -> Environment {
    let daemon = context
        .settings()
        .ok()
        .and_then(|settings| ask(&settings.socket, &Request::Status).ok());
    match daemon {
        Some(Response::Status(status)) => Environment::of_process(status.pid),
        _ => None,
    }
    .unwrap_or_else(Environment::current)
}

fn check_jobs(
    config: &Config,
    from: jiff::Timestamp,
    count: usize,
) -> anyhow::Result<Vec<Verdict>> {
    let launcher = Launcher::current("pacer");
    let runtime = runtime()?;
    let registry = runtime.block_on(Registry::discover(
        &config.daemon.plugin_dirs,
        &launcher,
        ScanOptions::for_current_user(),
    ));
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut by_plugin: BTreeMap<&str, Vec<&Arc<Job>>> = BTreeMap::new();
    for job in &config.jobs {
        match registry.problem(&job.plugin, &config.daemon.plugin_dirs) {
            Some(problem) => {
                errors.insert(
                    job.name.clone(),
                    format!("{}: {problem}", job.place(job.plugin_at)),
                );
            }
            None => by_plugin.entry(job.plugin.as_str()).or_default().push(job),
        }
    }
    for (plugin, jobs) in by_plugin {
        let Some(info) = registry.get(plugin) else {
            continue;
        };
        let assignment = Assignment {
            plugin: info.path.clone(),
            setup: Setup::default(),
            task: Task::Validate {
                expected_name: plugin.to_owned(),
                params: jobs.iter().map(|job| job.params.clone()).collect(),
            },
        };
        let workdir = &jobs[0].workdir;
        let timeout = VALIDATE_TIMEOUT
            + VALIDATE_TIMEOUT_PER_JOB
                .saturating_mul(u32::try_from(jobs.len()).unwrap_or(u32::MAX));
        let outcome = runtime.block_on(perform(&launcher, workdir, &assignment, timeout));
        let results = match outcome {
            Ok(ended) => verdicts(plugin, &jobs, ended),
            Err(e) => vec![Some(format!("cannot start a process to validate: {e}")); jobs.len()],
        };
        for (job, result) in jobs.iter().zip(results) {
            if let Some(reason) = result {
                errors.insert(
                    job.name.clone(),
                    format!(
                        "{}: params of `{}`: {reason}",
                        job.place(job.params_at),
                        job.name
                    ),
                );
            }
        }
    }
    Ok(config
        .jobs
        .iter()
        .map(|job| {
            let next = next_fires(job, from, count);
            let ended = job.has_timed_schedule() && next.len() < count;
            Verdict {
                job: Some(job.name.clone()),
                jitter: job.jitter.map(|_| job.jitter_offset),
                next,
                error: errors.remove(&job.name),
                note: ended.then(ended_note),
            }
        })
        .collect())
}

/// A schedule's search never gives up before the last instant there is, so a listing cut
/// short ends there; it says so rather than `ok`.
fn ended_note() -> String {
    format!(
        "no further fire before supported time ends at {}",
        crate::time::rfc3339_ms(to_ms(jiff::Timestamp::MAX))
    )
}

/// One verdict per job of `jobs` from what the worker reported. A worker that ended early
/// reported on the jobs before the one it ended on: that one is named as the cause, and the
/// jobs after it were never looked at.
fn verdicts(plugin: &str, jobs: &[&Arc<Job>], ended: Ended) -> Vec<Option<String>> {
    let mut results = ended.reports.validated;
    results.truncate(jobs.len());
    if results.len() == jobs.len() {
        return results;
    }
    if let Some(reason) = ended.reports.refused {
        results.resize(jobs.len(), Some(reason));
        return results;
    }
    let how = match ended.stop {
        Some(Stop::TimedOut(after)) => format!("did not finish within {after:?}"),
        _ => format!("crashed ({})", ended.exit),
    };
    let culprit = jobs[results.len()].name.clone();
    results.push(Some(format!(
        "plugin `{plugin}` {how} while validating these params"
    )));
    results.resize(
        jobs.len(),
        Some(format!(
            "not validated: plugin `{plugin}` {how} on the params of `{culprit}` before"
        )),
    );
    results
}

/// The next `count` fires strictly after `from`, jitter included.
fn next_fires(job: &Job, from: jiff::Timestamp, count: usize) -> Vec<i64> {
    let mut fires = Vec::with_capacity(count);
    let mut after = from;
    while fires.len() < count {
        let Some(next) = job.next_fire_after(after) else {
            break;
        };
        fires.push(to_ms(next));
        after = next;
    }
    fires
}

fn print_table(verdicts: &[Verdict]) {
    let mut table = Table::new(vec!["JOB", "JITTER", "NEXT FIRES", "PROBLEM"]);
    for verdict in verdicts {
        let next = if verdict.next.is_empty() {
            "-".to_owned()
        } else {
            verdict
                .next
                .iter()
                .map(|ms| when(Some(*ms)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.row(vec![
            verdict.job.clone().unwrap_or_else(|| "(config)".to_owned()),
            jitter(verdict.jitter),
            next,
            verdict
                .error
                .clone()
                .or_else(|| verdict.note.clone())
                .unwrap_or_else(|| "ok".to_owned()),
        ]);
    }
    table.print();
}
