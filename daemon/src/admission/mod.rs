//! Admission: the one place that decides when an accepted fire becomes a run.
//!
//! Every trigger (schedule, manual, retry, catch-up, chained) takes the same path:
//!
//! 1. the job's **overlap** policy, against its runs still going and its fires still waiting;
//! 2. the **bounded queue** (`max_queue`), ordered by priority (higher first), then due time;
//! 3. **admission** once the global `max_concurrency`, the pool's `max_concurrency`, the pool's
//!    `max_starts_per_second` token bucket and the PSI thresholds all allow.
//!
//! Admission knows fires only by their [`FireKey`] and the job they belong to; the fire itself
//! (params, who follows it, its record) stays with the daemon's core. Nothing leaves without a
//! record: every refusal comes back as a [`Refusal`] for the core to record. The rules sit
//! behind the [`Admission`] trait, so the state they keep (here in memory, for one daemon) can
//! live elsewhere (a database shared by several daemons) without the core changing.
//! `docs/admission.md` draws this path.

mod bucket;
mod local;
mod pressure;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, Job, Pool, PressureLimits};
use crate::model::Trigger;

pub use local::LocalAdmission;
pub use pressure::{PressureGate, RECHECK_MS};

/// Names one fire from the moment the daemon accepts it to its run's end. Keys are never
/// reused within one daemon's life; a run's database id is known only once its record is
/// committed, so admission cannot use that.
pub type FireKey = u64;

/// A run's id in the history.
pub type RunId = i64;

/// A fire asking to become a run.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The fire.
    pub key: FireKey,
    /// Its job, as it was when the fire was accepted: its pool and priority place it.
    pub job: Arc<Job>,
    /// Why it fires (for the words of a refusal).
    pub trigger: Trigger,
    /// Its due instant, Unix ms: the queue's order within a priority.
    pub scheduled_at: i64,
    /// Its record, once committed; a fire is never started before it has one.
    pub run_id: Option<RunId>,
    /// Since when it waits for a slot, Unix ms: its queue time counts from then (a fire that
    /// waited across a restart keeps the time it waited before).
    pub waiting_since: i64,
}

/// A fire a policy declined: the core records it as `skipped` with `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The declined fire: the one submitted, or one that waited and was pushed out.
    pub key: FireKey,
    /// Which policy and why, naming what was going on.
    pub reason: String,
    /// The policy, as a bounded label for metrics.
    pub kind: SkipKind,
}

/// A running run that must stop (`overlap = "replace"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The run's fire.
    pub key: FireKey,
    /// Why, for its record.
    pub reason: String,
}

/// What became of a submitted fire and of the fires it affected.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Submitted {
    /// Fires declined (the submitted one among them if it was).
    pub refused: Vec<Refusal>,
    /// Runs to stop.
    pub stop: Vec<Stop>,
}

impl Submitted {
    /// Whether the fire `key` itself was declined.
    pub fn refuses(&self, key: FireKey) -> bool {
        self.refused.iter().any(|refusal| refusal.key == key)
    }
}

/// Which policy declined a fire: the `reason` label of `pacer_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipKind {
    /// The job's run was still going (`overlap`).
    Overlap,
    /// A newer fire replaced it before it started (`overlap = "replace"`).
    Replaced,
    /// `max_queue` was reached.
    QueueFull,
    /// The job's plugin is not installed or was refused.
    PluginMissing,
    /// Missed while the daemon was down or the clock jumped (`catch_up`).
    Missed,
    /// Its job left the config before it could start.
    JobRemoved,
}

impl SkipKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipKind::Overlap => "overlap",
            SkipKind::Replaced => "replaced",
            SkipKind::QueueFull => "queue_full",
            SkipKind::PluginMissing => "plugin_missing",
            SkipKind::Missed => "missed",
            SkipKind::JobRemoved => "job_removed",
        }
    }
}

/// A fire allowed to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The fire.
    pub key: FireKey,
    /// How long it waited for admission, ms.
    pub queue_ms: i64,
}

/// A fire waiting for admission, for `pacer why` and the queued record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The fire.
    pub key: FireKey,
    /// Its due instant, Unix ms.
    pub scheduled_at: i64,
    /// When it entered admission, Unix ms.
    pub since: i64,
    /// The limit that holds it.
    pub reason: String,
}

/// In-flight and queued counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Runs in flight.
    pub in_flight: u32,
    /// Fires waiting.
    pub queued: u32,
}

/// A snapshot of admission for `pacer status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionStatus {
    /// All pools together.
    pub total: Load,
    /// Per pool.
    pub pools: BTreeMap<String, Load>,
    /// Why new starts wait although slots are free (pressure), if they do.
    pub waiting_on: Option<String>,
}

/// The limits admission enforces, as the config sets them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Runs in flight, all pools together.
    pub max_concurrency: u32,
    /// Fires waiting, all pools together.
    pub max_queue: u32,
    /// Named pools.
    pub pools: BTreeMap<String, Pool>,
    /// PSI thresholds.
    pub pressure: PressureLimits,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &Config) -> Limits {
        Limits {
            max_concurrency: config.daemon.max_concurrency,
            max_queue: config.daemon.max_queue,
            pools: config.pools.clone(),
            pressure: config.daemon.pressure.clone(),
        }
    }
}

/// The admission rules and the state they need. Calls never block and never fail: whatever
/// the implementation must learn from elsewhere, it learns between calls.
pub trait Admission: std::fmt::Debug + Send {
    /// Applies new limits (on reload); runs in flight keep their slots.
    fn reconfigure(&mut self, limits: &Limits, now: i64);

    /// Applies the job's overlap policy and the queue bound to `fire`, and queues it unless it
    /// is declined. A fire without a record waits in the queue but is not started until
    /// [`Admission::recorded`] says it has one.
    fn submit(&mut self, fire: Candidate, now: i64) -> Submitted;

    /// The record of `key` is committed, as run `id`.
    fn recorded(&mut self, key: FireKey, id: RunId);

    /// Fires allowed to start now, best first. Each holds a slot until
    /// [`Admission::finished`].
    fn admit(&mut self, now: i64) -> Vec<Admitted>;

    /// The run of `key` ended and its processes are gone: its slot is free.
    fn finished(&mut self, key: FireKey);

    /// Takes the waiting fire `key` out (cancelled, or its job is gone); false if it does not
    /// wait here.
    fn withdraw(&mut self, key: FireKey) -> bool;

    /// When to look again although nothing changed: a token refills, or pressure is re-read.
    fn next_wake(&mut self, now: i64) -> Option<i64>;

    /// Counts for `pacer status` and the metrics.
    fn status(&self) -> AdmissionStatus;

    /// The fires of job `job` waiting here, and why each waits.
    fn waiting(&self, job: &str) -> Vec<Waiting>;

    /// Why `key` waits, if it waits here.
    fn why_waiting(&self, key: FireKey) -> Option<String>;
}
