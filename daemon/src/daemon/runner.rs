//! One admitted run, start to finish: spawn its worker, turn its record `running`, hand over
//! its params, supervise it, record how it ended, and tell the engine.
//!
//! A run's two records are held by the store and sent by the edge at the end of the step that
//! caused them ([`RunRecords::send`]): a run's end frees its slot at once
//! ([`Input::Exited`]), so the start of the run that takes the slot, spawned in the same step,
//! is committed in the same transaction as that end.

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
use crate::worker::{Launcher, Limits, Worker};

/// A run's own writes: its start (before its plugin may start) and its end. One daemon
/// writes them to its SQLite history; a node of a cluster to the shared database, fenced by
/// its incarnation.
pub trait RunRecords: Send + Sync + std::fmt::Debug {
    /// Turns the queued run `start.id` `running`; an error means it must not start. The write
    /// may be held until [`RunRecords::send`].
    fn start_run(&self, start: StartRun) -> RecordFuture;
    /// Takes back the start of run `id` if it is not written yet, so that the run stays
    /// `queued` (its start's future then fails); whether this store can (else the start is
    /// written whatever happens).
    fn withdraw_start(&self, id: RunId) -> bool;
    /// Records the run's end. The write may be held until [`RunRecords::send`].
    fn finish_run(&self, finish: Finish) -> RecordFuture;
    /// Sends the writes held so far, to be committed together.
    fn send(&self);
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

/// Starts one admitted run: its worker is spawned now and its `running` record held (the
/// caller sends it with the step's other records); the rest goes on in a task. `cancel`
/// resolves with a reason when the run must stop.
pub fn launch(env: &Arc<RunEnv>, start: Start, cancel: oneshot::Receiver<String>) {
    match env.launcher.spawn(&start.job.workdir) {
        Ok(worker) => {
            let (pid, spawned_after) = worker.process();
            let recorded = env.store.start_run(StartRun {
                id: start.run_id,
                started_at: worker.spawned_at_ms(),
                queue_ms: start.queue_ms,
                process: spawned_after.map(|t| (pid, t)),
            });
            tokio::spawn(execute(Arc::clone(env), start, worker, recorded, cancel));
        }
        Err(e) => {
            tokio::spawn(unspawned(Arc::clone(env), start, e));
        }
    }
}

/// A run whose worker could not be spawned: recorded as started and failed at once.
async fn unspawned(env: Arc<RunEnv>, start: Start, cause: std::io::Error) {
    let now = to_ms(env.clock.now());
    let id = start.run_id;
    let error = format!("cannot start the run's process: {cause}");
    tracing::error!(job = %start.job.name, run_id = id, "{error}");
    let started = env.store.start_run(StartRun {
        id,
        started_at: now,
        queue_ms: start.queue_ms,
        process: None,
    });
    env.store.send();
    let span = match started.await {
        Ok(()) => {
            report_started(&env, &start, now);
            let (finished_at, finished) = finish(
                &env,
                id,
                Status::Failed,
                Some(error.clone()),
                None,
                Vec::new(),
                0,
            );
            env.store.send();
            finished.await.then_some(RunSpan {
                started_at: now,
                finished_at,
            })
        }
        Err(_) => None,
    };
    report_finished(&env, &start, Status::Failed, Some(error), span);
}

/// The rest of a run, once its worker is spawned and its `running` record on its way.
async fn execute(
    env: Arc<RunEnv>,
    start: Start,
    mut worker: Worker,
    recorded: RecordFuture,
    cancel: oneshot::Receiver<String>,
) {
    let cancel = async move {
        match cancel.await {
            Ok(reason) => reason,
            // The edge dropped the sender: nobody will cancel this run.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::pin!(cancel);
    let job = Arc::clone(&start.job);
    let id = start.run_id;
    let started_at = worker.spawned_at_ms();
    // The start waits for the history; a stop meanwhile takes it back, so that nothing starts
    // once the daemon is stopping and no record says a run started before it could.
    let mut recorded = recorded;
    let stopped = tokio::select! {
        written = &mut recorded => Err(written),
        reason = &mut cancel => Ok(reason),
    };
    let written = match stopped {
        Err(written) => written,
        Ok(reason) => {
            let withdrawing = env.store.withdraw_start(id);
            match recorded.await {
                Err(_) if withdrawing => {
                    drop(
                        worker
                            .supervise(quick_stop(), std::future::ready(reason.clone()))
                            .await,
                    );
                    let _ = env.events.send(Input::Withdrawn {
                        key: start.key,
                        reason: format!("{reason} before its start could be recorded"),
                    });
                    return;
                }
                Err(e) => Err(e),
                Ok(()) => {
                    // Written before it could be taken back: it ends at once, its plugin never
                    // given its task.
                    report_started(&env, &start, started_at);
                    let ended = worker
                        .supervise(quick_stop(), std::future::ready(reason.clone()))
                        .await;
                    let (output, dropped) = ended.output.into_parts();
                    let (finished_at, finished) = finish(
                        &env,
                        id,
                        Status::Cancelled,
                        Some(reason.clone()),
                        None,
                        output,
                        dropped,
                    );
                    let _ = env.events.send(Input::Exited { key: start.key });
                    let span = finished.await.then_some(RunSpan {
                        started_at,
                        finished_at,
                    });
                    report_finished(&env, &start, Status::Cancelled, Some(reason), span);
                    return;
                }
            }
        }
    };
    if let Err(e) = written {
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
        output_limit: start.output_limit,
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
    let (finished_at, finished) = finish(&env, id, status, error.clone(), message, output, dropped);
    // The end is held before the slot is given back, so the edge sends it with the start of
    // the run that takes the slot.
    let _ = env.events.send(Input::Exited { key: start.key });
    let recorded = finished.await;
    log_finished(level, &job.name, id, status, error.as_deref().unwrap_or(""));
    // An end that was not stored has no span: nobody is told an outcome the history lacks.
    let span = recorded.then_some(RunSpan {
        started_at,
        finished_at,
    });
    report_finished(&env, &start, status, error, span);
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

/// Holds the run's final record; returns its `finished_at`, and what resolves once it is
/// written (`true`) or given up (`false`). The store retries what may pass (a full disk, a
/// lock), so the engine hears of the end only once it is recorded.
fn finish(
    env: &RunEnv,
    id: RunId,
    status: Status,
    error: Option<String>,
    message: Option<String>,
    output: Vec<u8>,
    output_dropped: u64,
) -> (i64, impl Future<Output = bool> + use<>) {
    let finished_at = to_ms(env.clock.now());
    let finished = env.store.finish_run(Finish {
        id,
        status,
        finished_at,
        error,
        message,
        output,
        output_dropped,
    });
    let written = async move {
        match finished.await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(run_id = id, "cannot record the end of the run: {e}");
                false
            }
        }
    };
    (finished_at, written)
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
