//! `pacer why J`: a job's recent fires and what became of each, and its next fire. The history
//! holds every run and skipped fire; the daemon adds what leaves no record (fires of a paused
//! job) and what has none yet (fires waiting for a slot).

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use serde::Serialize;

use super::source::Source;
use super::table::{Table, millis, when};
use super::{Context, print_json};
use crate::config::{Environment, load};
use crate::control::client::{ClientError, ask};
use crate::control::{Request, Response, Waiting, WhyInfo};
use crate::model::Status;
use crate::store::{HistoryQuery, RunRecord};
use crate::time::{json, to_ms};

/// How many fires `why` tells about.
const FIRES: usize = 20;

/// `pacer why --json`.
#[derive(Debug, Serialize)]
struct Why {
    job: String,
    #[serde(serialize_with = "json::serialize_opt")]
    next_fire: Option<i64>,
    fires: Vec<Fire>,
}

/// One fire and what became of it.
#[derive(Debug, Serialize)]
struct Fire {
    #[serde(serialize_with = "json::serialize")]
    scheduled_at: i64,
    /// A run status, `queued` or `paused`.
    outcome: String,
    run_id: Option<i64>,
    reason: Option<String>,
}

pub fn run(context: &Context, job: &str) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let daemon = match ask(
        &settings.socket,
        &Request::Why {
            job: job.to_owned(),
        },
    ) {
        Ok(Response::Why(info)) => info,
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from pacerd: {other:?}"),
        Err(ClientError::NotRunning(_)) => from_config(context, job)?,
        Err(e) => return Err(e.into()),
    };
    let runs = match Source::open(context)? {
        Some(source) => source.runs(&HistoryQuery {
            job: Some(job.to_owned()),
            limit: FIRES as u32,
            ..HistoryQuery::default()
        })?,
        None => Vec::new(),
    };
    let now = to_ms(jiff::Timestamp::now());
    let mut fires: Vec<Fire> = runs
        .iter()
        .map(|run| {
            // A queued record says what held it when it was accepted; the daemon knows what
            // holds it now.
            let live = daemon
                .waiting
                .iter()
                .find(|waiting| waiting.run_id == Some(run.id));
            match live {
                Some(waiting) if run.status == Status::Queued => queued(waiting, now),
                _ => from_run(run, now),
            }
        })
        .collect();
    fires.extend(daemon.paused_fires.iter().map(|at| Fire {
        scheduled_at: *at,
        outcome: "paused".to_owned(),
        run_id: None,
        reason: Some(format!("the job was paused (pacer resume {job})")),
    }));
    fires.extend(
        daemon
            .waiting
            .iter()
            .filter(|waiting| {
                waiting
                    .run_id
                    .is_none_or(|id| !runs.iter().any(|run| run.id == id))
            })
            .map(|waiting| queued(waiting, now)),
    );
    fires.sort_by(|a, b| {
        b.scheduled_at
            .cmp(&a.scheduled_at)
            .then(b.run_id.cmp(&a.run_id))
    });
    fires.truncate(FIRES);
    let why = Why {
        job: job.to_owned(),
        next_fire: daemon.next_fire,
        fires,
    };
    if context.json {
        print_json(&why)?;
        return Ok(ExitCode::SUCCESS);
    }
    let next = match why.next_fire {
        Some(at) => format!("next fire {}", when(Some(at))),
        None => "no next fire (it runs only when triggered, at boot, or is disabled)".to_owned(),
    };
    let paused = if daemon.paused { " (paused)" } else { "" };
    println!("{job}: {next}{paused}");
    if why.fires.is_empty() {
        println!("no fires recorded yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["DUE", "OUTCOME", "RUN", "WHY"]);
    for fire in &why.fires {
        table.row(vec![
            when(Some(fire.scheduled_at)),
            fire.outcome.clone(),
            fire.run_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            fire.reason.clone().unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// A fire waiting now, in the daemon's words.
fn queued(waiting: &Waiting, now: i64) -> Fire {
    Fire {
        scheduled_at: waiting.scheduled_at,
        outcome: "queued".to_owned(),
        run_id: waiting.run_id,
        reason: Some(format!(
            "{} for {} so far",
            waiting.reason,
            millis(Some(now - waiting.since))
        )),
    }
}

/// A recorded run in words: its error, how long it ran or waited.
fn from_run(run: &RunRecord, now: i64) -> Fire {
    let mut reasons = Vec::new();
    match run.status {
        Status::Running => reasons.push(format!(
            "running for {}",
            millis(run.started_at.map(|started| now - started))
        )),
        Status::Succeeded => {}
        _ => reasons.extend(run.error.clone()),
    }
    if let Some(wait) = run.queue_ms.filter(|wait| *wait >= 1_000) {
        reasons.push(format!("waited {} for a slot", millis(Some(wait))));
    }
    Fire {
        scheduled_at: run.scheduled_at,
        outcome: run.status.to_string(),
        run_id: Some(run.id),
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

/// What the config says when the daemon is down: the next fire, and nothing in flight.
fn from_config(context: &Context, job: &str) -> anyhow::Result<WhyInfo> {
    let config = load(&context.config, Environment::current()).map_err(|e| anyhow!("{e}"))?;
    let Some(found) = config.job(job) else {
        bail!(
            "no job `{job}` in {} (pacer jobs lists them)",
            context.config.display()
        );
    };
    Ok(WhyInfo {
        next_fire: found
            .next_fire_after(jiff::Timestamp::now())
            .filter(|_| found.enabled)
            .map(to_ms),
        paused: false,
        paused_fires: Vec::new(),
        waiting: Vec::new(),
    })
}
