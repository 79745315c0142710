//! What the web view reads, the same from either backend: windows of runs with only the
//! columns drawn, the spans that held or waited for a slot, a run with a bounded tail of its
//! output, and `pacer stats`' figures computed from samples of runs.

use super::{JobStats, RunDetail, RunId, RunRecord};
use crate::model::{Status, Trigger};

/// A run as a time window shows it: no plugin, error, params or output, so reading thousands
/// of them reads only the columns drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRun {
    /// The run's id.
    pub id: RunId,
    /// The job.
    pub job: String,
    /// What became of it.
    pub status: Status,
    /// Why it ran.
    pub trigger: Trigger,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The due instant, Unix ms.
    pub scheduled_at: i64,
    /// When a fire still waiting was accepted, Unix ms (not read for the others).
    pub queued_at: Option<i64>,
    /// When its process was spawned.
    pub started_at: Option<i64>,
    /// When its process was reaped.
    pub finished_at: Option<i64>,
    /// Time spent waiting for admission.
    pub queue_ms: Option<i64>,
}

impl WindowRun {
    /// `finished_at - started_at`.
    pub fn duration_ms(&self) -> Option<i64> {
        self.started_at.zip(self.finished_at).map(|(s, f)| f - s)
    }

    /// Since when a fire still `queued` waits for a slot: from its due instant, or from when it
    /// was accepted if that was later (a missed fire caught up).
    pub fn waiting_since(&self) -> Option<i64> {
        (self.status == Status::Queued).then(|| {
            self.queued_at
                .map_or(self.scheduled_at, |at| at.max(self.scheduled_at))
        })
    }
}

impl From<&RunRecord> for WindowRun {
    fn from(run: &RunRecord) -> WindowRun {
        WindowRun {
            id: run.id,
            job: run.job.clone(),
            status: run.status,
            trigger: run.trigger,
            attempt: run.attempt,
            scheduled_at: run.scheduled_at,
            queued_at: None,
            started_at: run.started_at,
            finished_at: run.finished_at,
            queue_ms: run.queue_ms,
        }
    }
}

/// When a run held a slot, or a fire waited for one, for the load over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The run's job.
    pub job: String,
    /// When it began to wait for a slot (its start, if it did not wait), Unix ms.
    pub waiting_from: i64,
    /// When its process was spawned; `None` while it waits.
    pub started_at: Option<i64>,
    /// When it was reaped; `None` while it waits or runs.
    pub finished_at: Option<i64>,
}

/// A run with at most a bounded tail of its output.
#[derive(Debug, Clone)]
pub struct CappedRun {
    /// The run, with `output` holding the tail read.
    pub detail: RunDetail,
    /// Bytes of output stored for the run, of which `detail.output` is the tail.
    pub stored_output: u64,
    /// When it was accepted, Unix ms (unknown for runs older than the record of it).
    pub queued_at: Option<i64>,
}

/// `pacer stats`' figures for one job over `runs` (those that started and ended count).
pub fn summarize(job: &str, runs: &[WindowRun]) -> JobStats {
    let mut samples = Samples::default();
    for run in runs {
        samples.add_run(
            run.status,
            run.scheduled_at,
            run.started_at,
            run.finished_at,
            run.queue_ms,
        );
    }
    samples.summarize(job.to_owned())
}

/// One job's figures while they are being collected.
#[derive(Debug, Default)]
pub struct Samples {
    succeeded: u64,
    failed: u64,
    durations: Vec<i64>,
    lateness: Vec<i64>,
    queue_total: i64,
    queue_count: u64,
}

impl Samples {
    /// Counts one run, if it started and ended.
    pub fn add_run(
        &mut self,
        status: Status,
        scheduled_at: i64,
        started_at: Option<i64>,
        finished_at: Option<i64>,
        queue_ms: Option<i64>,
    ) {
        if let (Some(started), Some(finished)) = (started_at, finished_at) {
            self.add(
                status,
                finished.saturating_sub(started),
                queue_ms,
                started.saturating_sub(scheduled_at),
            );
        }
    }

    /// Counts one run that took `duration` ms, waited `queue` ms and started `lateness` ms
    /// after it was due.
    pub fn add(&mut self, status: Status, duration: i64, queue: Option<i64>, lateness: i64) {
        match status {
            Status::Succeeded => self.succeeded += 1,
            s if s.is_failure() => self.failed += 1,
            _ => {}
        }
        self.durations.push(duration);
        self.lateness.push(lateness);
        if let Some(queue) = queue {
            self.queue_total = self.queue_total.saturating_add(queue);
            self.queue_count += 1;
        }
    }

    /// The figures of the runs counted.
    pub fn summarize(mut self, job: String) -> JobStats {
        self.durations.sort_unstable();
        self.lateness.sort_unstable();
        let runs = self.durations.len() as u64;
        JobStats {
            job,
            runs,
            succeeded: self.succeeded,
            failed: self.failed,
            success_rate: if runs == 0 {
                0.0
            } else {
                self.succeeded as f64 / runs as f64
            },
            p50_ms: percentile(&self.durations, 50),
            p95_ms: percentile(&self.durations, 95),
            max_ms: self.durations.last().copied(),
            mean_queue_ms: (self.queue_count > 0)
                .then(|| self.queue_total as f64 / self.queue_count as f64),
            p50_late_ms: percentile(&self.lateness, 50),
            p95_late_ms: percentile(&self.lateness, 95),
            max_late_ms: self.lateness.last().copied(),
        }
    }
}

/// The nearest-rank percentile of sorted `values`.
pub fn percentile(sorted: &[i64], pct: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}
