//! One admitted run, start to finish: spawn its worker, turn its record `running`, hand over
//! its params, supervise it, record how it ended, and tell the engine.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Input, Start};
use crate::model::{RunSpan, Status, Trigger};
use crate::store::{Finish, RunId, StartRun};
use crate::time::{Clock, rfc3339_ms, to_ms};
use crate::worker::outcome::{classify, severity};
use crate::worker::protocol::{Assignment, Setup, Task};
use crate::worker::{Launcher, Limits};

/// A run's own writes: its start (before its plugin gets its params) and its end. One daemon
/// writes them to its SQLite history; a node of a cluster to the shared database, fenced by
/// its incarnation.
pub trait RunRecords: Send + Sync + std::fmt::Debug {
    /// Turns the queued run `start.id` `running`; an error means it must not start.
    fn start_run(&self, start: StartRun) -> RecordFuture;
    /// Records the run's end.
    fn finish_run(&self, finish: Finish) -> RecordFuture;
}

/// What a run's write resolves to: done, or why not.
pub type RecordFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What every run needs from the daemon.
#[derive(Debug)]
pub struct RunEnv {
    /// Where a run's start and end are recorded.
    pub store: Arc<dyn RunRecords>,
    /// Starts workers.
    pub launcher: Launcher,
    /// Captured output kept per run.
    pub output_limit: u64,
    /// Between SIGTERM and SIGKILL when a run is stopped.
    pub kill_grace: Duration,
    /// Where runs report back to the engine.
    pub events: mpsc::UnboundedSender<Input>,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// In a cluster, the node's lease, which every run's worker holds too.
    pub lease: Option<RunLease>,
}

/// The node's lease as its runs see it: a worker kills its run when `window` passes without a
/// renewal, which comes at each heartbeat that lands. The window ends before peers may take
/// the runs over, so a frozen node's runs are gone by then.
#[derive(Debug, Clone)]
pub struct RunLease {
    /// How long a renewal holds.
    pub window: Duration,
    /// Each renewal.
    pub renewals: tokio::sync::watch::Receiver<()>,
}

/// Carries out one admitted run; `cancel` resolves with a reason when it must stop.
pub async fn execute(env: Arc<RunEnv>, start: Start, cancel: oneshot::Receiver<String>) {
    let cancel = async move {
        match cancel.await {
            Ok(reason) => reason,
            // The edge dropped the sender: nobody will cancel this run.
            Err(_) => std::future::pending().await,
        }
    };
    let job = Arc::clone(&start.job);
    let id = start.run_id;
    let mut worker = match env.launcher.spawn(&job.workdir) {
        Ok(worker) => worker,
        Err(e) => {
            let now = to_ms(env.clock.now());
            let error = format!("cannot start the run's process: {e}");
            tracing::error!(job = %job.name, run_id = id, "{error}");
            let started = env
                .store
                .start_run(StartRun {
                    id,
                    started_at: now,
                    queue_ms: start.queue_ms,
                    process: None,
                })
                .await;
            let span = match started {
                Ok(()) => {
                    report_started(&env, &start, now);
                    let finished_at = finish(
                        &env,
                        id,
                        Status::Failed,
                        Some(error.clone()),
                        None,
                        Vec::new(),
                        0,
                    )
                    .await;
                    Some(RunSpan {
                        started_at: now,
                        finished_at,
                    })
                }
                Err(_) => None,
            };
            report_finished(&env, &start, Status::Failed, Some(error), span);
            return;
        }
    };
    let (pid, spawned_after) = worker.process();
    let started_at = worker.spawned_at_ms();
    if let Err(e) = env
        .store
        .start_run(StartRun {
            id,
            started_at,
            queue_ms: start.queue_ms,
            process: spawned_after.map(|t| (pid, t)),
        })
        .await
    {
        // Without a `running` record the plugin must not run: a run that started is never lost.
        let error = format!("cannot record the run's start, so it was not started: {e}");
        tracing::error!(job = %job.name, run_id = id, "{error}");
        drop(
            worker
                .supervise(quick_stop(), std::future::ready(error.clone()))
                .await,
        );
        report_finished(&env, &start, Status::Failed, Some(error), None);
        return;
    }
    report_started(&env, &start, started_at);
    tracing::info!(job = %job.name, run_id = id, trigger = %start.trigger, attempt = start.attempt, "run started");
    let deadline_ms = job
        .timeout
        .map(|t| started_at + i64::try_from(t.as_millis()).unwrap_or(i64::MAX / 2));
    let assignment = Assignment {
        plugin: start.plugin.clone(),
        setup: Setup {
            memory_limit: job.memory_limit,
            user: job.user.clone(),
            lease_ms: env
                .lease
                .as_ref()
                .map(|lease| u64::try_from(lease.window.as_millis()).unwrap_or(u64::MAX)),
        },
        task: Task::Run {
            expected_name: job.plugin.clone(),
            params: Arc::clone(&start.params),
            deadline_ms,
            env: run_environment(&start),
        },
    };
    if let Some(lease) = &env.lease {
        worker.renewed_by(lease.renewals.clone());
    }
    // A worker that died before reading this is classified from its exit below.
    let _ = worker.assign(&assignment).await;
    let limits = Limits {
        timeout: job.timeout,
        output_limit: env.output_limit,
        kill_grace: env.kill_grace,
    };
    let ended = worker.supervise(limits, cancel).await;
    let (status, error) = classify(&ended, job.memory_limit);
    let level = severity(&ended, status);
    let message = ended
        .reports
        .message
        .clone()
        .filter(|m| status == Status::Succeeded && !m.is_empty());
    let (output, dropped) = ended.output.into_parts();
    let finished_at = finish(&env, id, status, error.clone(), message, output, dropped).await;
    log_finished(level, &job.name, id, status, error.as_deref().unwrap_or(""));
    let span = RunSpan {
        started_at,
        finished_at,
    };
    report_finished(&env, &start, status, error, Some(span));
}

/// The end of a run, at the level [`severity`] chose (tracing needs the level at compile time).
fn log_finished(level: tracing::Level, job: &str, id: RunId, status: Status, error: &str) {
    match level {
        tracing::Level::ERROR => {
            tracing::error!(job = %job, run_id = id, status = %status, error, "run finished");
        }
        tracing::Level::WARN => {
            tracing::warn!(job = %job, run_id = id, status = %status, error, "run finished");
        }
        _ => tracing::info!(job = %job, run_id = id, status = %status, error, "run finished"),
    }
}

/// Stops a worker that must not run (no record could be written).
fn quick_stop() -> Limits {
    Limits {
        timeout: Some(Duration::ZERO),
        output_limit: 0,
        kill_grace: Duration::ZERO,
    }
}

/// Completes the run's record; returns its `finished_at`. The store retries what may pass (a
/// full disk, a lock), so the engine hears of the end only once it is recorded.
async fn finish(
    env: &RunEnv,
    id: RunId,
    status: Status,
    error: Option<String>,
    message: Option<String>,
    output: Vec<u8>,
    output_dropped: u64,
) -> i64 {
    let finished_at = to_ms(env.clock.now());
    let finished = Finish {
        id,
        status,
        finished_at,
        error,
        message,
        output,
        output_dropped,
    };
    if let Err(e) = env.store.finish_run(finished).await {
        tracing::error!(run_id = id, "cannot record the end of the run: {e}");
    }
    finished_at
}

fn report_started(env: &RunEnv, start: &Start, started_at: i64) {
    let _ = env.events.send(Input::Started {
        key: start.key,
        started_at,
    });
}

fn report_finished(
    env: &RunEnv,
    start: &Start,
    status: Status,
    error: Option<String>,
    span: Option<RunSpan>,
) {
    let _ = env.events.send(Input::Finished {
        key: start.key,
        status,
        error,
        span,
    });
}

/// The `PACER_*` variables of a run; a chained run also gets its upstream run's
/// `PACER_UPSTREAM_JOB`, `_ID`, `_STATUS` and `_ERROR`.
fn run_environment(start: &Start) -> Vec<(String, String)> {
    let mut env = vec![
        ("PACER_JOB".to_owned(), start.job.name.clone()),
        ("PACER_RUN_ID".to_owned(), start.run_id.to_string()),
        ("PACER_ATTEMPT".to_owned(), start.attempt.to_string()),
        ("PACER_TRIGGER".to_owned(), start.trigger.to_string()),
        (
            "PACER_SCHEDULED_AT".to_owned(),
            rfc3339_ms(start.scheduled_at),
        ),
    ];
    let upstream = start
        .params
        .get("upstream")
        .filter(|_| start.trigger == Trigger::Chained);
    if let Some(upstream) = upstream {
        for (key, name) in [
            ("job", "JOB"),
            ("id", "ID"),
            ("status", "STATUS"),
            ("error", "ERROR"),
        ] {
            let value = match &upstream[key] {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            env.push((format!("PACER_UPSTREAM_{name}"), value));
        }
    }
    env
}
