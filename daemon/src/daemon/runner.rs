//! One admitted run, start to finish: spawn its worker, record it, hand over its params,
//! supervise it, record how it ended, and tell the engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::defaults::KILL_GRACE;
use crate::dispatch::{Admitted, Request, RunUpdate, SlotId};
use crate::model::{Status, Trigger};
use crate::store::{Finish, NewRun, RunId, Store};
use crate::time::{Clock, rfc3339_ms, to_ms};
use crate::worker::outcome::{classify, severity};
use crate::worker::protocol::{Assignment, Setup, Task};
use crate::worker::{Launcher, Limits};

/// What every run needs from the daemon.
#[derive(Debug)]
pub struct RunEnv {
    /// The history.
    pub store: Arc<dyn Store>,
    /// Starts workers.
    pub launcher: Launcher,
    /// Captured output kept per run.
    pub output_limit: u64,
    /// Where runs report back.
    pub events: mpsc::UnboundedSender<RunEvent>,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
}

/// What a run tells the engine.
#[derive(Debug)]
pub enum RunEvent {
    /// Its record exists.
    Started {
        /// Its slot.
        slot: SlotId,
        /// Its id.
        id: RunId,
        /// `started_at - scheduled_at`.
        lateness_ms: i64,
    },
    /// Its processes are gone and its record is complete.
    Finished {
        /// Its slot, to release.
        slot: SlotId,
        /// Its id, if its record could be written.
        id: Option<RunId>,
        /// How it ended.
        status: Status,
        /// Why, if it did not succeed.
        error: Option<String>,
        /// Its spawn and reap, when it got that far.
        span: Option<RunSpan>,
        /// The request it served (retries and chains start from it).
        request: Request,
    },
}

/// When a run's process was spawned and reaped, Unix ms, as its record holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSpan {
    /// Its `started_at`.
    pub started_at: i64,
    /// Its `finished_at`.
    pub finished_at: i64,
}

impl RunSpan {
    /// Its `duration_ms`.
    pub fn duration_ms(self) -> i64 {
        self.finished_at - self.started_at
    }
}

/// Carries out one admitted request whose plugin lives at `plugin_path`.
pub async fn execute(env: Arc<RunEnv>, admitted: Admitted, plugin_path: PathBuf) {
    let Admitted {
        slot,
        request,
        queue_ms,
        cancel,
    } = admitted;
    let job = Arc::clone(&request.job);
    let cancel = async move {
        match cancel.await {
            Ok(reason) => reason,
            // The engine dropped the sender: nobody will cancel this run.
            Err(_) => std::future::pending().await,
        }
    };
    let new_run = |started_at, process| NewRun {
        job: job.name.clone(),
        plugin: job.plugin.clone(),
        trigger: request.trigger,
        attempt: request.attempt,
        scheduled_at: request.scheduled_at,
        started_at,
        queue_ms,
        params: request.params.clone(),
        process,
        advances_schedule: request.advances_schedule,
    };
    let mut worker = match env.launcher.spawn(&job.workdir) {
        Ok(worker) => worker,
        Err(e) => {
            let now = to_ms(env.clock.now());
            let error = format!("cannot start the run's process: {e}");
            tracing::error!(job = %job.name, "{error}");
            let recorded = env.store.start_run(new_run(now, None)).await;
            let id = match recorded {
                Ok(id) => {
                    request.tell(RunUpdate::Started {
                        id,
                        attempt: request.attempt,
                    });
                    finish(&env, id, Status::Failed, Some(error.clone()), Vec::new(), 0).await;
                    request.tell(RunUpdate::Finished {
                        id,
                        status: Status::Failed,
                        error: Some(error.clone()),
                    });
                    Some(id)
                }
                Err(_) => None,
            };
            report_finished(&env, slot, id, Status::Failed, Some(error), None, request);
            return;
        }
    };
    let (pid, spawned_after) = worker.process();
    let started_at = worker.spawned_at_ms();
    let id = match env
        .store
        .start_run(new_run(started_at, spawned_after.map(|t| (pid, t))))
        .await
    {
        Ok(id) => id,
        Err(e) => {
            // Without a record the plugin must not run: a run that started is never lost.
            let error = format!("cannot record the run, so it was not started: {e}");
            tracing::error!(job = %job.name, "{error}");
            drop(
                worker
                    .supervise(quick_stop(), std::future::ready(error.clone()))
                    .await,
            );
            request.tell(RunUpdate::Skipped {
                reason: error.clone(),
            });
            report_finished(&env, slot, None, Status::Failed, Some(error), None, request);
            return;
        }
    };
    let _ = env.events.send(RunEvent::Started {
        slot,
        id,
        lateness_ms: started_at - request.scheduled_at,
    });
    request.tell(RunUpdate::Started {
        id,
        attempt: request.attempt,
    });
    tracing::info!(job = %job.name, run_id = id, trigger = %request.trigger, attempt = request.attempt, "run started");
    let deadline_ms = job
        .timeout
        .map(|t| started_at + i64::try_from(t.as_millis()).unwrap_or(i64::MAX / 2));
    let assignment = Assignment {
        plugin: plugin_path,
        setup: Setup {
            memory_limit: job.memory_limit,
            user: job.user.clone(),
        },
        task: Task::Run {
            expected_name: job.plugin.clone(),
            params: request.params.clone(),
            deadline_ms,
            env: run_environment(&request, id),
        },
    };
    // A worker that died before reading this is classified from its exit below.
    let _ = worker.assign(&assignment).await;
    let limits = Limits {
        timeout: job.timeout,
        output_limit: env.output_limit,
        kill_grace: KILL_GRACE,
    };
    let ended = worker.supervise(limits, cancel).await;
    let (status, error) = classify(&ended, job.memory_limit);
    let level = severity(&ended, status);
    let (output, dropped) = ended.output.into_parts();
    let finished_at = finish(&env, id, status, error.clone(), output, dropped).await;
    request.tell(RunUpdate::Finished {
        id,
        status,
        error: error.clone(),
    });
    log_finished(level, &job.name, id, status, error.as_deref().unwrap_or(""));
    let span = RunSpan {
        started_at,
        finished_at,
    };
    report_finished(&env, slot, Some(id), status, error, Some(span), request);
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

/// Completes the run's record; returns its `finished_at`.
async fn finish(
    env: &RunEnv,
    id: RunId,
    status: Status,
    error: Option<String>,
    output: Vec<u8>,
    output_dropped: u64,
) -> i64 {
    let finished_at = to_ms(env.clock.now());
    let finished = Finish {
        id,
        status,
        finished_at,
        error,
        output,
        output_dropped,
    };
    if let Err(e) = env.store.finish_run(finished).await {
        tracing::error!(run_id = id, "cannot record the end of the run: {e}");
    }
    finished_at
}

fn report_finished(
    env: &RunEnv,
    slot: SlotId,
    id: Option<RunId>,
    status: Status,
    error: Option<String>,
    span: Option<RunSpan>,
    request: Request,
) {
    let _ = env.events.send(RunEvent::Finished {
        slot,
        id,
        status,
        error,
        span,
        request,
    });
}

/// The `PACER_*` variables of a run; a chained run also gets its upstream run's
/// `PACER_UPSTREAM_JOB`, `_ID`, `_STATUS` and `_ERROR`.
fn run_environment(request: &Request, id: RunId) -> Vec<(String, String)> {
    let mut env = vec![
        ("PACER_JOB".to_owned(), request.job.name.clone()),
        ("PACER_RUN_ID".to_owned(), id.to_string()),
        ("PACER_ATTEMPT".to_owned(), request.attempt.to_string()),
        ("PACER_TRIGGER".to_owned(), request.trigger.to_string()),
        (
            "PACER_SCHEDULED_AT".to_owned(),
            rfc3339_ms(request.scheduled_at),
        ),
    ];
    let upstream = request
        .params
        .get("upstream")
        .filter(|_| request.trigger == Trigger::Chained);
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
