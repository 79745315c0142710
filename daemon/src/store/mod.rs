//! Run history: the records every fire leaves, behind a trait so another backend (PostgreSQL
//! for several machines) can replace SQLite without touching the scheduler.
//!
//! Durability: a run's row is committed before its plugin is given its params, so a run whose
//! plugin started is never lost; SQLite runs in WAL mode with `synchronous=NORMAL`, which keeps
//! every committed transaction across a crash of the daemon (a power cut may lose the last few).

mod error;
mod records;
mod secrets;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

pub use error::{DamagedRow, StoreError};
pub use records::{
    Finish, HistoryQuery, JobState, JobStats, NewRun, OrphanedRun, RunDetail, RunId, RunRecord,
    Skipped,
};
pub use secrets::mask_secrets;

use crate::model::Status;

/// What a store call returns: work is done on the store's own thread.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The daemon's side of the history: every write, and the reads it needs at start.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Records a run whose process was just spawned (`running`); resolves once committed.
    fn start_run(&self, run: NewRun) -> StoreFuture<RunId>;
    /// Completes a run's record with its final status, error and captured output.
    fn finish_run(&self, finish: Finish) -> StoreFuture<()>;
    /// Records a fire a policy declined (`skipped`, with the reason).
    fn record_skipped(&self, skipped: Skipped) -> StoreFuture<RunId>;
    /// Remembers a job's last scheduled fire that has no run record (a paused job's fire).
    fn advance_last_fire(&self, job: String, at_ms: i64) -> StoreFuture<()>;
    /// Persists whether a job is paused.
    fn set_paused(&self, job: String, paused: bool) -> StoreFuture<()>;
    /// Each job's last scheduled fire and paused flag.
    fn job_states(&self) -> StoreFuture<HashMap<String, JobState>>;
    /// Marks every run left `running` by a previous daemon as `abandoned` and returns them, so
    /// their processes can be found and stopped.
    fn abandon_orphans(&self, now_ms: i64, reason: String) -> StoreFuture<Vec<OrphanedRun>>;
    /// The newest run's status for each job.
    fn last_statuses(&self) -> StoreFuture<HashMap<String, Status>>;
    /// When each of `jobs` last succeeded (its newest succeeded run's `finished_at`, Unix ms);
    /// jobs that never did are absent.
    fn last_successes(&self, jobs: Vec<String>) -> StoreFuture<HashMap<String, i64>>;
    /// Deletes at most `batch` finished runs scheduled before `before_ms` (and their output);
    /// returns how many it deleted. Small batches keep other writes flowing.
    fn prune(&self, before_ms: i64, batch: u32) -> StoreFuture<u64>;
    /// Folds the write-ahead log back into the database, so it does not stay large after a
    /// prune.
    fn checkpoint(&self) -> StoreFuture<()>;
    /// Commits what was sent and closes the database cleanly (for SQLite: checkpointing the
    /// write-ahead log, so readers need no write access afterwards). Later calls fail.
    fn close(&self) -> StoreFuture<()>;
}

/// The CLI's side: queries over the history, opened read-only.
pub trait History {
    /// Runs matching `query`, newest first.
    fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError>;
    /// One run in full.
    fn run(&self, id: RunId) -> Result<Option<RunDetail>, StoreError>;
    /// Per-job figures over the runs scheduled at or after `since_ms`.
    fn stats(&self, job: Option<&str>, since_ms: Option<i64>) -> Result<Vec<JobStats>, StoreError>;
    /// The newest run's status for each job.
    fn last_statuses(&self) -> Result<HashMap<String, Status>, StoreError>;
    /// Each job's last scheduled fire and paused flag.
    fn job_states(&self) -> Result<HashMap<String, JobState>, StoreError>;
    /// The rows the calls so far left out because they did not decode (each once): a damaged
    /// row is skipped, with a warning, rather than hiding the rest of the history.
    fn take_damaged(&self) -> Vec<DamagedRow>;
}
