//! The control socket: requests from `pacer` to `pacerd` and their answers, one JSON object
//! per line. The daemon side is in [`server`], the CLI side in [`client`].

pub mod client;
pub mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Job;
use crate::model::Status;
use crate::plugins::PluginInfo;
use crate::store::RunId;
use crate::time::json;

/// The longest request line the daemon reads (`pacer run --params` included): far below what
/// would let a few clients make the daemon hold much memory.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The version of the socket's protocol this daemon speaks. A request may say which version it
/// was written for (`"api": 1`); one that names another is refused rather than misread.
/// Versions only grow: a change that old clients could misread gets a new version.
pub const API_VERSION: u64 = 1;

/// What a `pacer run` (or an application enqueuing work) learns about its fire, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunUpdate {
    /// The fire is accepted and waits: its record exists, `queued`, with this id.
    Queued {
        /// Its run id.
        id: RunId,
        /// What it waits for.
        reason: String,
    },
    /// The run started (its record is `running`).
    Started {
        /// Its id.
        id: RunId,
        /// Its attempt.
        attempt: u32,
    },
    /// A policy declined it, for this reason; its record is `skipped`.
    Skipped {
        /// The skipped record, when it could be written.
        id: Option<RunId>,
        /// Which policy and why.
        reason: String,
    },
    /// The run ended (a retry may follow, with another id).
    Finished {
        /// Its id.
        id: RunId,
        /// How it ended.
        status: Status,
        /// Why, if it did not succeed.
        error: Option<String>,
    },
}

/// In-flight and queued counts of a pool, or of all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Runs in flight.
    pub in_flight: u32,
    /// Fires waiting.
    pub queued: u32,
}

/// What the CLI asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon up, and how loaded is it.
    Status,
    /// Every job of the config in force, with its next fire.
    Jobs,
    /// Every plugin library found.
    Plugins,
    /// Start a run of `job` now (trigger `manual`), through the same policies as any fire.
    Run {
        /// The job.
        job: String,
        /// Merged over the job's params (top-level keys replace the job's).
        #[serde(default)]
        params: Option<serde_json::Value>,
        /// Keep answering until the run (and its retries) ended.
        #[serde(default)]
        wait: bool,
    },
    /// Stop a running or queued run (recorded `cancelled`).
    Cancel {
        /// The run.
        id: i64,
    },
    /// Stop firing `job` (persisted, so it survives restarts).
    Pause {
        /// The job.
        job: String,
    },
    /// Fire `job` again.
    Resume {
        /// The job.
        job: String,
    },
    /// Re-read the config and apply the difference (like SIGHUP).
    Reload,
    /// What the daemon knows of a job's recent fires that the history does not hold.
    Why {
        /// The job.
        job: String,
    },
}

impl Request {
    /// Whether the request changes the daemon's state, and so needs root or the socket's group.
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Request::Status | Request::Jobs | Request::Plugins | Request::Why { .. }
        )
    }

    /// The verb as the CLI spells it.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Jobs => "jobs",
            Request::Plugins => "plugins",
            Request::Run { .. } => "run",
            Request::Cancel { .. } => "cancel",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::Reload => "reload",
            Request::Why { .. } => "why",
        }
    }
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// For [`Request::Status`].
    Status(StatusInfo),
    /// For [`Request::Jobs`].
    Jobs {
        /// In config order.
        jobs: Vec<JobInfo>,
    },
    /// For [`Request::Plugins`].
    Plugins {
        /// In discovery order.
        plugins: Vec<PluginInfo>,
    },
    /// What became of a manual run, as it happens.
    Run(RunUpdate),
    /// For [`Request::Why`].
    Why(WhyInfo),
    /// The request was carried out; the message says what happened.
    Done {
        /// For the operator.
        message: String,
    },
    /// The request failed; the message says why.
    Error {
        /// For the operator.
        message: String,
    },
}

/// `pacer status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Always true when the daemon answers.
    pub running: bool,
    /// The daemon's pid.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Runs in flight.
    pub in_flight: u32,
    /// Fires waiting for a slot.
    pub queued: u32,
    /// Per pool.
    pub pools: BTreeMap<String, Load>,
    /// Why new starts wait although slots are free (PSI), if they do.
    pub waiting_on: Option<String>,
    /// Why the history cannot be written now, if it cannot (fires wait until it can).
    #[serde(default)]
    pub history_error: Option<String>,
    /// The daemon is stopping: it starts nothing more and waits for its runs to end and be
    /// recorded.
    #[serde(default)]
    pub stopping: bool,
    /// With `[cluster]`: this node's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// With `[cluster]`: the shared database (`user@host:port/database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl JobInfo {
    /// The row for `job` given its runtime state.
    pub fn new(
        job: &Job,
        paused: bool,
        next_fire: Option<i64>,
        last_status: Option<Status>,
        problem: Option<String>,
    ) -> JobInfo {
        JobInfo {
            name: job.name.clone(),
            schedule: job.schedule_text.clone(),
            timezone: job.timezone.name.clone(),
            plugin: job.plugin.clone(),
            enabled: job.enabled,
            paused,
            next_fire: next_fire.filter(|_| job.enabled),
            last_status,
            problem,
            jitter_offset_ms: job
                .jitter
                .map(|_| u64::try_from(job.jitter_offset.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// One row of `pacer jobs --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job.
    pub name: String,
    /// The schedule line, or null for jobs that only run when triggered.
    pub schedule: Option<String>,
    /// Its IANA zone.
    pub timezone: String,
    /// The plugin name.
    pub plugin: String,
    /// `enabled` from the config.
    pub enabled: bool,
    /// `pacer pause` is in force.
    pub paused: bool,
    /// The next scheduled fire, jitter included.
    #[serde(
        serialize_with = "json::serialize_opt",
        deserialize_with = "json::deserialize_opt"
    )]
    pub next_fire: Option<i64>,
    /// The status of its newest run.
    pub last_status: Option<Status>,
    /// Why it cannot run as configured (its plugin is missing, say), if so.
    pub problem: Option<String>,
    /// The fixed offset its `jitter` puts on every fire; absent for jobs without jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_offset_ms: Option<u64>,
}

/// The daemon's side of `pacer why`: what leaves no run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyInfo {
    /// The job's next scheduled fire.
    #[serde(
        serialize_with = "json::serialize_opt",
        deserialize_with = "json::deserialize_opt"
    )]
    pub next_fire: Option<i64>,
    /// Whether the job is paused now.
    pub paused: bool,
    /// Recent fires that came while the job was paused (they leave no record), Unix ms.
    pub paused_fires: Vec<i64>,
    /// Fires waiting for admission now.
    pub waiting: Vec<Waiting>,
}

/// A fire waiting to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// Its record, once written.
    pub run_id: Option<RunId>,
    /// Its due instant, Unix ms.
    pub scheduled_at: i64,
    /// Since when it waits, Unix ms.
    pub since: i64,
    /// Why it waits: its job's run still going, a full pool, pressure, its retry's instant,
    /// its turn among missed fires.
    pub reason: String,
}
