//! `pacer jobs`: every job of the config in force, asked of the daemon; when it is down, of the
//! config file and the database, saying so.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::source::Source;
use super::table::{Table, jitter, when};
use super::{Context, print_json, runtime};
use crate::config::{Environment, load, load_cluster_settings};
use crate::control::client::{ClientError, ask};
use crate::control::{JobInfo, Request, Response};
use crate::plugins::{Registry, ScanOptions};
use crate::time::to_ms;
use crate::worker::Launcher;

pub fn run(context: &Context) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let jobs = match ask(&settings.socket, &Request::Jobs) {
        Ok(Response::Jobs { jobs }) => with_cluster_outcomes(context, jobs)?,
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from pacerd: {other:?}"),
        Err(ClientError::NotRunning(_)) => from_files(context)?,
        Err(e) => return Err(e.into()),
    };
    if context.json {
        print_json(&jobs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec![
        "NAME",
        "SCHEDULE",
        "JITTER",
        "TIMEZONE",
        "PLUGIN",
        "NEXT FIRE",
        "LAST",
        "STATE",
    ]);
    for job in &jobs {
        let state = match (&job.problem, job.enabled, job.paused) {
            (Some(problem), _, _) => problem.clone(),
            (None, false, _) => "disabled".to_owned(),
            (None, true, true) => "paused".to_owned(),
            (None, true, false) => "active".to_owned(),
        };
        table.row(vec![
            job.name.clone(),
            job.schedule
                .clone()
                .unwrap_or_else(|| "(triggered only)".to_owned()),
            jitter(job.jitter_offset_ms.map(Duration::from_millis)),
            job.timezone.clone(),
            job.plugin.clone(),
            when(job.next_fire),
            job.last_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            state,
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// In a cluster, a job's last run may have been on any node: its outcome comes from the shared
/// database, not from what this node saw.
fn with_cluster_outcomes(
    context: &Context,
    mut jobs: Vec<JobInfo>,
) -> anyhow::Result<Vec<JobInfo>> {
    if load_cluster_settings(&context.config)
        .ok()
        .flatten()
        .is_none()
    {
        return Ok(jobs);
    }
    if let Some(source @ Source::Cluster(..)) = Source::open(context)? {
        let last = source.last_statuses()?;
        for job in &mut jobs {
            job.last_status = last.get(&job.name).copied();
        }
    }
    Ok(jobs)
}

/// What the daemon would answer, worked out from the config file and the database.
fn from_files(context: &Context) -> anyhow::Result<Vec<JobInfo>> {
    let config = load(&context.config, Environment::current()).map_err(|e| anyhow!("{e}"))?;
    let source = Source::open(context)?;
    // On stderr, so that --json output stays one JSON document.
    eprintln!(
        "pacerd is not running: read the jobs from {} and their states from {}",
        context.config.display(),
        match (&source, &config.cluster) {
            (Some(Source::Cluster(..)), Some(cluster)) => cluster.database.to_string(),
            _ => config.daemon.database.display().to_string(),
        }
    );
    let (states, last_status) = match &source {
        Some(source) => (source.job_states()?, source.last_statuses()?),
        None => (HashMap::new(), HashMap::new()),
    };
    let registry = runtime()?.block_on(Registry::discover(
        &config.daemon.plugin_dirs,
        &Launcher::current("pacer"),
        ScanOptions::for_current_user(),
    ));
    let now = jiff::Timestamp::now();
    Ok(config
        .jobs
        .iter()
        .map(|job| {
            let state = states.get(&job.name);
            let after = state
                .and_then(|s| s.last_fire)
                .map_or(now, |last| crate::time::from_ms(last).max(now));
            JobInfo::new(
                job,
                state.is_some_and(|s| s.paused),
                job.next_fire_after(after).map(to_ms),
                last_status.get(&job.name).copied(),
                registry.problem(&job.plugin, &config.daemon.plugin_dirs),
            )
        })
        .collect())
}
