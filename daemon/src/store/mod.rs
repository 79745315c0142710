//! Run history: the records every fire leaves, behind a trait so another backend (PostgreSQL
//! for several machines) can replace SQLite without touching the scheduler.
//!
//! Durability: a run's row is committed before its plugin is given its params, so a run whose
//! plugin started is never lost; SQLite runs in WAL mode with `synchronous=NORMAL`, which keeps
//! every committed transaction across a crash of the daemon (a power cut may lose the last few).

mod browse;
mod error;
pub mod postgres;
mod records;
mod secrets;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

pub use browse::{CappedRun, Samples, Span, WindowRun, percentile, summarize};
pub use error::{DamagedRow, StoreError};
pub use records::{
    Finish, HistoryQuery, JobState, JobStats, NewFire, OrphanedRun, QueuedFire, RunDetail, RunId,
    RunRecord, StartRun, Write,
};
pub use secrets::mask_secrets;

use crate::model::Status;

/// What a store call returns: work is done on the store's own thread.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The daemon's side of the history: every write, and the reads it needs at start.
///
/// Writes are applied in the order they are sent. A write that fails for a reason that may
/// pass (a full disk, a lock held elsewhere, an I/O error) is retried, in order, until it
/// succeeds or the store is closed; only a write that can never succeed fails.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies the core's writes in one transaction; resolves once committed, with the new
    /// row's id for each write that inserts one (`None` for the others).
    fn write(&self, writes: Vec<Write>) -> StoreFuture<Vec<Result<Option<RunId>, StoreError>>>;
    /// Turns a queued run whose process was just spawned into `running`.
    fn start_run(&self, start: StartRun) -> StoreFuture<()>;
    /// Completes a run's record with its final status, error and captured output.
    fn finish_run(&self, finish: Finish) -> StoreFuture<()>;
    /// Each job's last scheduled fire, paused flag and timing.
    fn job_states(&self) -> StoreFuture<HashMap<String, JobState>>;
    /// Every fire still `queued`, oldest first.
    fn queued_fires(&self) -> StoreFuture<Vec<QueuedFire>>;
    /// Marks every run left `running` by a previous daemon as `abandoned`, ended at
    /// `last_alive` (the previous daemon's last sign of life) or when it started if that was
    /// later, and returns them, so their processes can be found and stopped.
    fn abandon_orphans(&self, last_alive: i64, reason: String) -> StoreFuture<Vec<OrphanedRun>>;
    /// The newest run's status for each job.
    fn last_statuses(&self) -> StoreFuture<HashMap<String, Status>>;
    /// When each of `jobs` last succeeded (its newest succeeded run's `finished_at`, Unix ms);
    /// jobs that never did are absent.
    fn last_successes(&self, jobs: Vec<String>) -> StoreFuture<HashMap<String, i64>>;
    /// The jobs among `jobs` with a scheduled fire recorded at or after `since_ms` (an
    /// `@reboot` job that already fired in this boot).
    fn fired_since(&self, jobs: Vec<String>, since_ms: i64) -> StoreFuture<Vec<String>>;
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
