//! The web view's queries: time windows of one job, the load of all jobs over a window, a run
//! with a bounded tail of its output, and a run's chain. Each is served by an index (see the
//! schema's `WEB_VIEW` migration) and bounded by a limit, so a page costs the same with a
//! million runs in the history as with a thousand.

use rusqlite::OptionalExtension;

use super::super::{JobStats, RunDetail, RunId, RunRecord, StoreError};
use super::SqliteHistory;
use super::reader::Samples;
use super::rows::{self, Problem, RECORD_COLUMNS, column};
use crate::model::{Status, Trigger};

/// A row that does not decode, named by its id, for the page that needed it.
fn damaged(row: &rusqlite::Row<'_>, problem: Problem) -> StoreError {
    StoreError::DamagedRun {
        path: None,
        id: rows::run_id(row).unwrap_or_default(),
        problem,
    }
}

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
            started_at: run.started_at,
            finished_at: run.finished_at,
            queue_ms: run.queue_ms,
        }
    }
}

/// When a run held a slot, for the load over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The run's job.
    pub job: String,
    /// When its process was spawned, Unix ms.
    pub started_at: i64,
    /// When it was reaped; `None` while it runs.
    pub finished_at: Option<i64>,
    /// How long it waited for admission before it started.
    pub queue_ms: i64,
}

/// A run with at most a bounded tail of its output.
#[derive(Debug, Clone)]
pub struct CappedRun {
    /// The run, with `output` holding the tail read.
    pub detail: RunDetail,
    /// Bytes of output stored for the run, of which `detail.output` is the tail.
    pub stored_output: u64,
}

impl SqliteHistory {
    /// The runs of `job` scheduled in `[from, to)`, latest due first, at most `limit`.
    pub fn job_window(
        &self,
        job: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<WindowRun>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, job, status, trigger, attempt, scheduled_at, started_at, finished_at,
                    queue_ms
             FROM runs INDEXED BY runs_by_job_schedule
             WHERE job = ?1 AND scheduled_at >= ?2 AND scheduled_at < ?3
             ORDER BY scheduled_at DESC LIMIT ?4",
        )?;
        let rows = statement.query_and_then(
            rusqlite::params![job, from, to, i64::from(limit)],
            |row| -> Result<WindowRun, StoreError> {
                let decoded = (|| {
                    let status: String = column(row, "status")?;
                    let trigger: String = column(row, "trigger")?;
                    Ok::<_, Problem>(WindowRun {
                        id: column(row, "id")?,
                        job: column(row, "job")?,
                        status: rows::parse_status(&status)?,
                        trigger: trigger
                            .parse::<Trigger>()
                            .map_err(|e| format!("column `trigger`: {e}"))?,
                        attempt: column(row, "attempt")?,
                        scheduled_at: column(row, "scheduled_at")?,
                        started_at: column(row, "started_at")?,
                        finished_at: column(row, "finished_at")?,
                        queue_ms: column(row, "queue_ms")?,
                    })
                })();
                decoded.map_err(|problem| damaged(row, problem))
            },
        )?;
        rows.collect()
    }

    /// Whether `job` has a run scheduled in `[from, to)`: one index probe.
    pub fn has_runs(&self, job: &str, from: i64, to: i64) -> Result<bool, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT 1 FROM runs INDEXED BY runs_by_job_schedule
             WHERE job = ?1 AND scheduled_at >= ?2 AND scheduled_at < ?3 LIMIT 1",
        )?;
        Ok(statement
            .query_row(rusqlite::params![job, from, to], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The runs of every job that held a slot during `[from, to)`: those due in
    /// `[from - lookback, to)` that started, and every run still going. At most `limit`, the
    /// latest due first, so a window too full to draw is cut at its old end.
    pub fn spans(
        &self,
        from: i64,
        to: i64,
        lookback: i64,
        limit: u32,
    ) -> Result<Vec<Span>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT job, started_at, finished_at, queue_ms FROM runs INDEXED BY runs_by_schedule
             WHERE scheduled_at >= ?1 AND scheduled_at < ?2 AND started_at IS NOT NULL
               AND (finished_at IS NULL OR finished_at >= ?3)
             ORDER BY scheduled_at DESC LIMIT ?4",
        )?;
        let span = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Span> {
            Ok(Span {
                job: row.get("job")?,
                started_at: row.get("started_at")?,
                finished_at: row.get("finished_at")?,
                queue_ms: row.get::<_, Option<i64>>("queue_ms")?.unwrap_or(0),
            })
        };
        let mut spans = statement
            .query_map(
                rusqlite::params![from - lookback, to, from, i64::from(limit)],
                span,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        // Runs due before the look-back that still go (few: at most the concurrency caps).
        let mut going = self.conn.prepare_cached(
            "SELECT job, started_at, finished_at, queue_ms FROM runs INDEXED BY runs_by_status
             WHERE status = 'running' AND scheduled_at < ?1 AND started_at IS NOT NULL",
        )?;
        spans.extend(
            going
                .query_map([from - lookback], span)?
                .collect::<Result<Vec<_>, _>>()?,
        );
        Ok(spans)
    }

    /// Run `id` with at most the last `max_output` bytes of its output (none with 0).
    pub fn run_capped(&self, id: RunId, max_output: u64) -> Result<Option<CappedRun>, StoreError> {
        let max = i64::try_from(max_output).unwrap_or(i64::MAX);
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS}, runs.params,
                    length(run_output.output) AS stored,
                    CASE WHEN ?2 = 0 THEN NULL
                         ELSE substr(run_output.output, max(1, length(run_output.output) - ?2 + 1))
                    END AS tail,
                    run_output.dropped
             FROM runs LEFT JOIN run_output ON run_output.run_id = runs.id
             WHERE runs.id = ?1"
        ))?;
        let mut rows = statement.query_and_then(rusqlite::params![id, max], |row| {
            let record = rows::record(row).map_err(|problem| damaged(row, problem))?;
            let params = match row.get::<_, Option<String>>("params")? {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| damaged(row, format!("column `params` is not JSON ({e})")))?,
                None => serde_json::Value::Object(serde_json::Map::new()),
            };
            let tail: Option<Vec<u8>> = row.get("tail")?;
            let stored: Option<i64> = row.get("stored")?;
            let dropped: Option<i64> = row.get("dropped")?;
            Ok(CappedRun {
                detail: RunDetail {
                    record,
                    output: String::from_utf8_lossy(&tail.unwrap_or_default()).into_owned(),
                    output_dropped: dropped.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
                    params,
                },
                stored_output: stored.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            })
        })?;
        rows.next().transpose()
    }

    /// The chained runs that `upstream` caused: due within `window_ms` after it ended (a chained
    /// run is due when its upstream ends), with trigger `chained` and its id in `upstream.id`.
    pub fn downstream(
        &self,
        upstream: &RunRecord,
        window_ms: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let Some(ended) = upstream.finished_at else {
            return Ok(Vec::new());
        };
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM runs INDEXED BY runs_by_schedule
             WHERE scheduled_at >= ?1 AND scheduled_at <= ?2 AND trigger = 'chained'
               AND json_extract(params, '$.upstream.id') = ?3
             ORDER BY id"
        ))?;
        let rows = statement.query_and_then(
            rusqlite::params![ended - 1_000, ended + window_ms, upstream.id],
            |row| rows::record(row).map_err(|problem| damaged(row, problem)),
        )?;
        rows.collect()
    }
}

/// `pacer stats`' figures for one job over `runs` (those that started and ended count).
pub fn summarize(job: &str, runs: &[WindowRun]) -> JobStats {
    let mut samples = Samples::default();
    for run in runs {
        if let (Some(started), Some(finished)) = (run.started_at, run.finished_at) {
            samples.add(
                run.status,
                finished - started,
                run.queue_ms,
                started - run.scheduled_at,
            );
        }
    }
    samples.summarize(job.to_owned())
}
