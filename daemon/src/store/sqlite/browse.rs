//! The web view's queries: time windows of one job, the load of all jobs over a window, a run
//! with a bounded tail of its output, and a run's chain. Each is served by an index (see the
//! schema's `WEB_VIEW` and `WEB_WINDOWS_FROM_INDEXES` migrations) and bounded by a limit, so a
//! page costs the same with a million runs in the history as with a thousand.

use rusqlite::OptionalExtension;

use super::super::{
    CappedRun, JobStats, RunDetail, RunId, RunRecord, Samples, Span, StoreError, WindowRun,
};
use super::SqliteHistory;
use super::rows::{self, Column, Problem, RECORD_COLUMNS, position};
use crate::model::Status;

/// A row that does not decode, named by its id, for the page that needed it.
fn damaged(row: &rusqlite::Row<'_>, problem: Problem) -> StoreError {
    StoreError::DamagedRun {
        path: None,
        id: rows::run_id(row).unwrap_or_default(),
        problem,
    }
}

/// The columns of a [`WindowRun`], found once per query.
#[derive(Debug)]
struct WindowColumns {
    id: Column,
    job: Column,
    status: Column,
    trigger: Column,
    attempt: Column,
    scheduled_at: Column,
    queued_at: Column,
    started_at: Column,
    finished_at: Column,
    queue_ms: Column,
}

impl WindowColumns {
    fn of(statement: &rusqlite::Statement<'_>) -> Result<WindowColumns, StoreError> {
        Ok(WindowColumns {
            id: position(statement, "id")?,
            job: position(statement, "job")?,
            status: position(statement, "status")?,
            trigger: position(statement, "trigger")?,
            attempt: position(statement, "attempt")?,
            scheduled_at: position(statement, "scheduled_at")?,
            queued_at: position(statement, "queued_at")?,
            started_at: position(statement, "started_at")?,
            finished_at: position(statement, "finished_at")?,
            queue_ms: position(statement, "queue_ms")?,
        })
    }

    fn read(&self, row: &rusqlite::Row<'_>) -> Result<WindowRun, Problem> {
        Ok(WindowRun {
            id: self.id.get(row)?,
            job: self.job.get(row)?,
            status: self.status.parsed(row)?,
            trigger: self.trigger.parsed(row)?,
            attempt: self.attempt.get(row)?,
            scheduled_at: self.scheduled_at.get(row)?,
            queued_at: self.queued_at.get(row)?,
            started_at: self.started_at.get(row)?,
            finished_at: self.finished_at.get(row)?,
            queue_ms: self.queue_ms.get(row)?,
        })
    }
}

/// The columns of a [`Span`], found once per query.
#[derive(Debug)]
struct SpanColumns {
    job: Column,
    waiting_from: Column,
    started_at: Column,
    finished_at: Column,
}

impl SpanColumns {
    fn of(statement: &rusqlite::Statement<'_>) -> Result<SpanColumns, StoreError> {
        Ok(SpanColumns {
            job: position(statement, "job")?,
            waiting_from: position(statement, "waiting_from")?,
            started_at: position(statement, "started_at")?,
            finished_at: position(statement, "finished_at")?,
        })
    }

    fn read(&self, row: &rusqlite::Row<'_>) -> Result<Span, Problem> {
        Ok(Span {
            job: self.job.get(row)?,
            waiting_from: self.waiting_from.get(row)?,
            started_at: self.started_at.get(row)?,
            finished_at: self.finished_at.get(row)?,
        })
    }
}

/// When a run began to wait for a slot, in SQL: its start minus its wait once it started;
/// while it waits, its due instant, or when it was accepted if that was later.
const WAITING_FROM: &str = "CASE WHEN started_at IS NOT NULL
                                 THEN started_at - max(coalesce(queue_ms, 0), 0)
                                 ELSE max(scheduled_at, coalesce(queued_at, scheduled_at))
                            END AS waiting_from";

impl SqliteHistory {
    /// The runs of `job` scheduled in `[from, to)`, latest due first, at most `limit`: those
    /// that ended, from the index of ended runs, and those waiting or going.
    pub fn job_window(
        &self,
        job: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<WindowRun>, StoreError> {
        let mut runs = self.active_window(job, from, to)?;
        let mut statement = self.conn.prepare_cached(
            "SELECT id, job, status, trigger, attempt, scheduled_at, NULL AS queued_at,
                    started_at, finished_at, queue_ms
             FROM runs INDEXED BY runs_ended_by_job
             WHERE job = ?1 AND scheduled_at >= ?2 AND scheduled_at < ?3
               AND status NOT IN ('queued', 'running')
             ORDER BY scheduled_at DESC LIMIT ?4",
        )?;
        let columns = WindowColumns::of(&statement)?;
        for run in statement
            .query_and_then(rusqlite::params![job, from, to, i64::from(limit)], |row| {
                columns.read(row).map_err(|problem| damaged(row, problem))
            })?
        {
            runs.push(run?);
        }
        runs.sort_by(|a, b| b.scheduled_at.cmp(&a.scheduled_at).then(b.id.cmp(&a.id)));
        runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(runs)
    }

    /// The runs of `job` scheduled in `[from, to)` that wait or go: few (at most the queue's
    /// bound and the caps), found in `runs_by_status` alone.
    fn active_window(&self, job: &str, from: i64, to: i64) -> Result<Vec<WindowRun>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, job, status, trigger, attempt, scheduled_at, queued_at, started_at,
                    finished_at, queue_ms
             FROM runs INDEXED BY runs_by_status
             WHERE status IN ('queued', 'running') AND job = ?1
               AND scheduled_at >= ?2 AND scheduled_at < ?3",
        )?;
        let columns = WindowColumns::of(&statement)?;
        let rows = statement.query_and_then(rusqlite::params![job, from, to], |row| {
            columns.read(row).map_err(|problem| damaged(row, problem))
        })?;
        rows.collect()
    }

    /// `pacer stats`' figures for `job` over its newest `limit` runs that ended, scheduled in
    /// `[from, to)`, and how many runs that was (`limit` when the window holds more). Reads
    /// only what the figures need, from the index of ended runs alone.
    pub fn job_figures(
        &self,
        job: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<(JobStats, usize), StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT status, scheduled_at, started_at, finished_at, queue_ms
             FROM runs INDEXED BY runs_ended_by_job
             WHERE job = ?1 AND scheduled_at >= ?2 AND scheduled_at < ?3
               AND status NOT IN ('queued', 'running')
             ORDER BY scheduled_at DESC LIMIT ?4",
        )?;
        let status = position(&statement, "status")?;
        let scheduled_at = position(&statement, "scheduled_at")?;
        let started_at = position(&statement, "started_at")?;
        let finished_at = position(&statement, "finished_at")?;
        let queue_ms = position(&statement, "queue_ms")?;
        let mut rows = statement.query(rusqlite::params![job, from, to, i64::from(limit)])?;
        let mut samples = Samples::default();
        let mut read = 0;
        while let Some(row) = rows.next()? {
            read += 1;
            let sample = (|| {
                Ok::<_, Problem>((
                    status.parsed::<Status>(row)?,
                    scheduled_at.get(row)?,
                    started_at.get(row)?,
                    finished_at.get(row)?,
                    queue_ms.get(row)?,
                ))
            })();
            // A damaged row is left out of the figures, as `pacer stats` leaves it out.
            if let Ok((status, scheduled, started, finished, queue)) = sample {
                samples.add_run(status, scheduled, started, finished, queue);
            }
        }
        Ok((samples.summarize(job.to_owned()), read))
    }

    /// Whether `job` has a run scheduled in `[from, to)`: an index probe or two.
    pub fn has_runs(&self, job: &str, from: i64, to: i64) -> Result<bool, StoreError> {
        let mut ended = self.conn.prepare_cached(
            "SELECT 1 FROM runs INDEXED BY runs_ended_by_job
             WHERE job = ?1 AND scheduled_at >= ?2 AND scheduled_at < ?3
               AND status NOT IN ('queued', 'running')
             LIMIT 1",
        )?;
        if ended
            .query_row(rusqlite::params![job, from, to], |_| Ok(()))
            .optional()?
            .is_some()
        {
            return Ok(true);
        }
        Ok(!self.active_window(job, from, to)?.is_empty())
    }

    /// The runs of every job that held a slot during `[from, to)`: those due in
    /// `[from - lookback, to)` that started, and every run still going. At most `limit`, the
    /// latest due first, so a window too full to draw is cut at its old end. Then every fire
    /// still waiting for a slot (few: at most the queue's bound).
    pub fn spans(
        &self,
        from: i64,
        to: i64,
        lookback: i64,
        limit: u32,
    ) -> Result<Vec<Span>, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, job, started_at - max(coalesce(queue_ms, 0), 0) AS waiting_from,
                    started_at, finished_at
             FROM runs INDEXED BY runs_by_schedule
             WHERE scheduled_at >= ?1 AND scheduled_at < ?2 AND started_at IS NOT NULL
               AND (finished_at IS NULL OR finished_at >= ?3)
             ORDER BY scheduled_at DESC LIMIT ?4",
        )?;
        let columns = SpanColumns::of(&statement)?;
        let mut spans = statement
            .query_and_then(
                rusqlite::params![from - lookback, to, from, i64::from(limit)],
                |row| columns.read(row).map_err(|problem| damaged(row, problem)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        // Runs due before the look-back that still go, and fires that wait.
        let mut going = self.conn.prepare_cached(&format!(
            "SELECT id, job, {WAITING_FROM}, started_at, finished_at
             FROM runs INDEXED BY runs_by_status
             WHERE (status = 'running' AND scheduled_at < ?1 AND started_at IS NOT NULL)
                OR status = 'queued'"
        ))?;
        let columns = SpanColumns::of(&going)?;
        for span in going.query_and_then([from - lookback], |row| {
            columns.read(row).map_err(|problem| damaged(row, problem))
        })? {
            let span = span?;
            if span.started_at.is_some() || span.waiting_from < to {
                spans.push(span);
            }
        }
        Ok(spans)
    }

    /// Run `id` with at most the last `max_output` bytes of its output (none with 0).
    pub fn run_capped(&self, id: RunId, max_output: u64) -> Result<Option<CappedRun>, StoreError> {
        let max = i64::try_from(max_output).unwrap_or(i64::MAX);
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS}, runs.params, runs.queued_at,
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
                queued_at: row.get("queued_at")?,
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
