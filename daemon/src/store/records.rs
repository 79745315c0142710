//! The rows of the history, as the daemon writes them and the CLI reads them.

use serde::Serialize;

use crate::model::{Status, Trigger};
use crate::time::json;

/// A run's id: the `runs` table's integer key, increasing with each record.
pub type RunId = i64;

/// A fire to record as a new row: `queued` when accepted, or `skipped` when a policy
/// declined it at once.
#[derive(Debug, Clone)]
pub struct NewFire {
    /// The job.
    pub job: String,
    /// The plugin name the job uses.
    pub plugin: String,
    /// Why it fires.
    pub trigger: Trigger,
    /// 1 for the first attempt, counting up on retries.
    pub attempt: u32,
    /// The due instant (jitter included; for a retry, the instant it may start), Unix ms.
    pub scheduled_at: i64,
    /// When the daemon accepted it, Unix ms.
    pub accepted_at: i64,
    /// The params the plugin will get (stored with secrets masked, for display).
    pub params: std::sync::Arc<serde_json::Value>,
    /// Whether they differ from the job's own params (a manual run's `--params`, a chained
    /// run's upstream): such params are kept whole while the fire waits, so that a restart
    /// runs it with exactly them.
    pub own_params: bool,
    /// Whether this fire advances the job's last scheduled fire (schedule and catch-up fires).
    pub advances_schedule: bool,
}

/// A change to the history that the daemon's core decided.
#[derive(Debug, Clone)]
pub enum Write {
    /// A fire was accepted: a new `queued` row; `reason` says what it waits for, if anything.
    Queued {
        /// The fire.
        fire: NewFire,
        /// Why it cannot start at once, if it cannot.
        reason: Option<String>,
    },
    /// A policy declined a fire at once: a new `skipped` row.
    Skipped {
        /// The fire.
        fire: NewFire,
        /// Which policy and why.
        reason: String,
    },
    /// What a queued fire waits for, found once it was recorded.
    Waiting {
        /// Its run.
        id: RunId,
        /// The limit that holds it.
        reason: String,
    },
    /// A queued fire will never start: it ends `skipped` or `cancelled`.
    Resolve {
        /// Its run.
        id: RunId,
        /// `skipped` or `cancelled`.
        status: Status,
        /// Why.
        reason: String,
    },
    /// A job's schedule moved on without a record (a paused job's fire), or a job was loaded
    /// (its fires count from then on): its last scheduled fire is at least `at`.
    LastFire {
        /// The job.
        job: String,
        /// Unix ms.
        at: i64,
        /// The job's timing as configured (schedule, zone, jitter), so a later start can tell
        /// whether it changed meanwhile.
        timing: Option<String>,
    },
    /// `pacer pause` or `resume`.
    Paused {
        /// The job.
        job: String,
        /// Whether it is paused now.
        paused: bool,
    },
}

/// A queued run whose process was just spawned: it becomes `running`.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// The run.
    pub id: RunId,
    /// When its process was spawned, Unix ms.
    pub started_at: i64,
    /// How long it waited for admission.
    pub queue_ms: i64,
    /// The worker's pid and the boot clock (in clock ticks) just before it was spawned, so a
    /// later daemon can tell the worker from an unrelated process that reused the pid.
    pub process: Option<(i32, u64)>,
}

/// A run's end.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The run.
    pub id: RunId,
    /// Its final status.
    pub status: Status,
    /// When its process was reaped and its slot released, Unix ms.
    pub finished_at: i64,
    /// Why it did not succeed, if it did not.
    pub error: Option<String>,
    /// What the plugin said last (`set_message`) when it succeeded.
    pub message: Option<String>,
    /// The tail of its output.
    pub output: Vec<u8>,
    /// Bytes of output dropped from the front to respect `output_limit`.
    pub output_dropped: u64,
}

/// A fire found `queued` when the daemon starts: it takes its place again.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedFire {
    /// Its run.
    pub id: RunId,
    /// The job.
    pub job: String,
    /// Why it fires.
    pub trigger: Trigger,
    /// Its attempt.
    pub attempt: u32,
    /// Its due instant (a retry's: when it may start), Unix ms.
    pub scheduled_at: i64,
    /// When it was accepted, Unix ms.
    pub accepted_at: i64,
    /// Its own params, if it had any (else the job's apply).
    pub params: Option<serde_json::Value>,
}

/// What the daemon persists per job between starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobState {
    /// The last scheduled fire that was recorded (or, for a new job, when it was loaded),
    /// Unix ms.
    pub last_fire: Option<i64>,
    /// `pacer pause` is in force.
    pub paused: bool,
    /// The job's timing when `last_fire` was written.
    pub timing: Option<String>,
}

/// A run left `running` by a daemon that died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedRun {
    /// The run.
    pub id: RunId,
    /// The job.
    pub job: String,
    /// The worker's pid and the boot tick it was spawned after, if they were recorded.
    pub process: Option<(i32, u64)>,
}

/// One row of `pacer history`, as `--json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// The job.
    pub job: String,
    /// The plugin name.
    pub plugin: String,
    /// What became of it.
    pub status: Status,
    /// Why it ran.
    pub trigger: Trigger,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The due instant, jitter included.
    #[serde(with = "json")]
    pub scheduled_at: i64,
    /// When its process was spawned.
    #[serde(
        serialize_with = "json::serialize_opt",
        deserialize_with = "json::deserialize_opt"
    )]
    pub started_at: Option<i64>,
    /// When its process was reaped.
    #[serde(
        serialize_with = "json::serialize_opt",
        deserialize_with = "json::deserialize_opt"
    )]
    pub finished_at: Option<i64>,
    /// `finished_at - started_at`.
    pub duration_ms: Option<i64>,
    /// Time spent waiting for admission.
    pub queue_ms: Option<i64>,
    /// Why it did not succeed (for a skipped fire, which policy declined it; for a queued
    /// one, what it waited for when it was accepted).
    pub error: Option<String>,
    /// What the plugin said last (`set_message`), for a run that succeeded.
    #[serde(default)]
    pub message: Option<String>,
    /// With `[cluster]`: the node that ran it (`Some(None)` while queued, or if it never
    /// started). One daemon's history has no nodes, and its runs no `node` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Option<String>>,
}

/// `pacer show`: a run with its output and params.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    /// The record.
    #[serde(flatten)]
    pub record: RunRecord,
    /// The captured output's tail, as text.
    pub output: String,
    /// Bytes dropped from the front of the output.
    pub output_dropped: u64,
    /// The params, with secret values masked.
    pub params: serde_json::Value,
}

/// Filters for `pacer history`.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only this job.
    pub job: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this trigger.
    pub trigger: Option<Trigger>,
    /// Scheduled at or after, Unix ms.
    pub since: Option<i64>,
    /// Scheduled before, Unix ms.
    pub until: Option<i64>,
    /// Only ids below this one (the next page).
    pub before: Option<RunId>,
    /// Only ids above this one (`--follow`).
    pub after: Option<RunId>,
    /// At most this many.
    pub limit: u32,
}

/// One row of `pacer stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStats {
    /// The job.
    pub job: String,
    /// Runs that started and ended.
    pub runs: u64,
    /// Of those, succeeded.
    pub succeeded: u64,
    /// Of those, failed, timed out or crashed.
    pub failed: u64,
    /// `succeeded / runs`, 0 when there were none.
    pub success_rate: f64,
    /// Median duration.
    pub p50_ms: Option<i64>,
    /// 95th percentile duration.
    pub p95_ms: Option<i64>,
    /// Longest duration.
    pub max_ms: Option<i64>,
    /// Mean time waiting for admission.
    pub mean_queue_ms: Option<f64>,
    /// Median lateness (start minus due time).
    pub p50_late_ms: Option<i64>,
    /// 95th percentile lateness.
    pub p95_late_ms: Option<i64>,
    /// Greatest lateness.
    pub max_late_ms: Option<i64>,
}
