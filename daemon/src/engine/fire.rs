//! A fire: what the engine knows of one accepted request to run a job, from the moment it is
//! accepted to its run's end, and where it waits meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::admission::SkipKind;
use crate::config::Job;
use crate::model::{Status, Trigger};
use crate::scheduler::TimerId;
use crate::store::{NewFire, RunId};

/// Names a client that asked for something and waits for the answers (the edge knows where
/// to send them).
pub type ReplyTo = u64;

/// Who follows a fire (`pacer run`), and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// Where its answers go.
    pub to: ReplyTo,
    /// `--wait`: until the run (and its retries) ended; else until it started or queued.
    pub wait: bool,
}

/// One accepted fire.
#[derive(Debug)]
pub struct Fire {
    /// Its job, as it was when the fire was accepted.
    pub job: Arc<Job>,
    /// Why it fires.
    pub trigger: Trigger,
    /// 1, or the retry's attempt number.
    pub attempt: u32,
    /// The due instant (jitter included; a retry's: when it may start), Unix ms.
    pub scheduled_at: i64,
    /// When the engine accepted it, Unix ms.
    pub accepted_at: i64,
    /// The params the plugin will get.
    pub params: Arc<serde_json::Value>,
    /// Whether `params` are the fire's own rather than its job's.
    pub own_params: bool,
    /// Whether recording it advances the job's last scheduled fire.
    pub advances_schedule: bool,
    /// An `@reboot` fire: the boot is marked once its record exists.
    pub at_boot: bool,
    /// Who follows it.
    pub waiter: Option<Waiter>,
    /// Who cancelled it before it started, to be told once that is recorded.
    pub canceller: Option<ReplyTo>,
    /// For a retry: the run that failed (it names the retry across a cluster).
    pub retry_of: Option<RunId>,
    /// For a chained fire: the run that caused it (it names the fire across a cluster).
    pub upstream: Option<RunId>,
    /// Its record, once committed.
    pub run_id: Option<RunId>,
    /// Its plugin's library, as found when it was submitted to admission: its start needs
    /// no second lookup by name unless the plugin directories were scanned again meanwhile.
    pub plugin: Option<Arc<Path>>,
    /// Where it is.
    pub state: State,
}

/// Where a fire is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Just made; nothing written yet.
    New,
    /// Its `queued` record is being written; it goes on as `then` says once it is.
    Recording(Then),
    /// Waiting in admission.
    Admitting,
    /// Recorded, waiting on the timeline for its instant (a retry, an `@reboot` jitter).
    Timed(TimerId),
    /// Recorded, waiting for its turn among its job's missed fires (`catch_up = "all"`).
    Backlog,
    /// Admitted: its process is being spawned, or runs.
    Running,
    /// Its run's processes are gone and its end is being recorded; its slot is free.
    Exited,
    /// Declined or cancelled before it started, with this status and reason; its final
    /// record is being written.
    Ending(Status, String),
}

/// Where a fire goes once its `queued` record is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// It is in admission already.
    Admission,
    /// To the timeline, until its instant.
    Timeline,
    /// To its job's backlog of missed fires.
    Backlog,
    /// It was declined while its record was being written: it ends so.
    End(Status, String, Option<SkipKind>),
    /// It was proposed to the cluster, whose database records and admits it.
    Cluster,
}

impl Fire {
    /// A fire of `job`'s own params.
    pub fn of(job: &Arc<Job>, trigger: Trigger, scheduled_at: i64, now: i64) -> Fire {
        Fire {
            job: Arc::clone(job),
            trigger,
            attempt: 1,
            scheduled_at,
            accepted_at: now,
            params: Arc::clone(&job.params),
            own_params: false,
            advances_schedule: matches!(trigger, Trigger::Schedule | Trigger::CatchUp),
            at_boot: false,
            waiter: None,
            canceller: None,
            retry_of: None,
            upstream: None,
            run_id: None,
            plugin: None,
            state: State::New,
        }
    }

    /// What its record holds.
    pub fn record(&self) -> NewFire {
        NewFire {
            job: self.job.name.clone(),
            plugin: self.job.plugin.clone(),
            trigger: self.trigger,
            attempt: self.attempt,
            scheduled_at: self.scheduled_at,
            accepted_at: self.accepted_at,
            params: Arc::clone(&self.params),
            own_params: self.own_params,
            advances_schedule: self.advances_schedule,
        }
    }

    /// The attempt after this one failed, due after the job's back-off: `retry_backoff`,
    /// doubling per attempt, at most `retry_backoff_max`. It keeps the params and the waiter.
    pub fn retry(&self, now: i64) -> Fire {
        let doublings = self.attempt.saturating_sub(1).min(30);
        let delay = self
            .job
            .retry_backoff
            .saturating_mul(1 << doublings)
            .min(self.job.retry_backoff_max);
        Fire {
            job: Arc::clone(&self.job),
            trigger: Trigger::Retry,
            attempt: self.attempt + 1,
            scheduled_at: now.saturating_add(millis(delay)),
            accepted_at: now,
            params: Arc::clone(&self.params),
            own_params: self.own_params,
            advances_schedule: false,
            at_boot: false,
            waiter: self.waiter,
            canceller: None,
            retry_of: self.run_id,
            upstream: None,
            run_id: None,
            plugin: None,
            state: State::New,
        }
    }
}

/// `duration` in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2)
}
