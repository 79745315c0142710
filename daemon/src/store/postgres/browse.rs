//! The web view's reads of a cluster's history, in the shapes of the SQLite history's
//! ([`crate::store::sqlite::SqliteHistory::job_window`] and the rest): a job's window of runs,
//! the spans that held or waited for a slot, a run with a bounded tail of its output, and a
//! run's chain. Each is served by an index (see the schema's `V2_WEB_VIEW`) and bounded.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::history::{RUN_COLUMNS, job_stats_from_row, parse_status, run_from_row};
use super::{ClusterError, PgDatabase, db, within};
use crate::store::{CappedRun, JobStats, RunDetail, RunId, RunRecord, Samples, Span, WindowRun};

/// The columns of a [`WindowRun`].
const WINDOW_COLUMNS: &str = "id, job, status, trigger, attempt, scheduled_at, queued_at, \
     started_at, finished_at, queue_ms";

fn window_run(row: &Row) -> Result<WindowRun, ClusterError> {
    let status: String = row.try_get("status").map_err(db)?;
    let trigger: String = row.try_get("trigger").map_err(db)?;
    Ok(WindowRun {
        id: row.try_get("id").map_err(db)?,
        job: row.try_get("job").map_err(db)?,
        status: parse_status(&status)?,
        trigger: trigger
            .parse()
            .map_err(|e: crate::model::UnknownName| ClusterError::Corrupt(e.to_string()))?,
        attempt: u32::try_from(row.try_get::<_, i32>("attempt").map_err(db)?).unwrap_or(0),
        scheduled_at: row.try_get("scheduled_at").map_err(db)?,
        queued_at: row.try_get("queued_at").map_err(db)?,
        started_at: row.try_get("started_at").map_err(db)?,
        finished_at: row.try_get("finished_at").map_err(db)?,
        queue_ms: row.try_get("queue_ms").map_err(db)?,
    })
}

fn span(row: &Row) -> Result<Span, ClusterError> {
    Ok(Span {
        job: row.try_get("job").map_err(db)?,
        waiting_from: row.try_get("waiting_from").map_err(db)?,
        started_at: row.try_get("started_at").map_err(db)?,
        finished_at: row.try_get("finished_at").map_err(db)?,
    })
}

/// When a run began to wait for a slot (as the SQLite history's spans say it).
const WAITING_FROM: &str = "CASE WHEN started_at IS NOT NULL
                                 THEN started_at - greatest(coalesce(queue_ms, 0), 0)
                                 ELSE greatest(scheduled_at, coalesce(queued_at, scheduled_at))
                            END AS waiting_from";

impl PgDatabase {
    /// The runs of `job` scheduled in `[from, to)`, latest due first, at most `limit`.
    pub async fn job_window(
        &self,
        job: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<WindowRun>, ClusterError> {
        let mut windows = self
            .jobs_windows(&[job.to_owned()], from, to, limit)
            .await?;
        Ok(windows.pop().unwrap_or_default())
    }

    /// For each of `jobs`, its runs scheduled in `[from, to)`, latest due first, at most
    /// `limit` each, in one query: those that ended, from the index of ended runs, and those
    /// waiting or going (few).
    pub async fn jobs_windows(
        &self,
        jobs: &[String],
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<Vec<WindowRun>>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT ended.* FROM unnest($1::text[]) AS wanted (name)
                         CROSS JOIN LATERAL (SELECT {WINDOW_COLUMNS} FROM runs
                                             WHERE job = wanted.name AND scheduled_at >= $2
                                                   AND scheduled_at < $3
                                                   AND status NOT IN ('queued', 'running')
                                             ORDER BY scheduled_at DESC LIMIT $4) AS ended
                         UNION ALL
                         SELECT {WINDOW_COLUMNS} FROM runs
                         WHERE status IN ('queued', 'running') AND job = ANY($1)
                               AND scheduled_at >= $2 AND scheduled_at < $3"
                    ),
                    &[&jobs, &from, &to, &i64::from(limit)],
                )
                .await
                .map_err(db)?;
            let mut found: HashMap<String, Vec<WindowRun>> = HashMap::new();
            for row in &rows {
                let run = window_run(row)?;
                found.entry(run.job.clone()).or_default().push(run);
            }
            Ok(jobs
                .iter()
                .map(|job| {
                    let mut runs = found.remove(job).unwrap_or_default();
                    runs.sort_by(|a, b| b.scheduled_at.cmp(&a.scheduled_at).then(b.id.cmp(&a.id)));
                    runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                    runs
                })
                .collect())
        })
        .await
    }

    /// For each of `jobs`, its newest `limit` runs, newest first (one query for a page of
    /// jobs: a round trip per job would cost more than the reads).
    pub async fn recent_runs(
        &self,
        jobs: &[String],
        limit: u32,
    ) -> Result<Vec<Vec<RunRecord>>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM unnest($1::text[]) AS wanted (name)
                         CROSS JOIN LATERAL (SELECT * FROM runs WHERE runs.job = wanted.name
                                             ORDER BY id DESC LIMIT $2) AS runs
                         ORDER BY runs.job, runs.id DESC"
                    ),
                    &[&jobs, &i64::from(limit)],
                )
                .await
                .map_err(db)?;
            let mut found: HashMap<String, Vec<RunRecord>> = HashMap::new();
            for row in &rows {
                let run = RunRecord::from(run_from_row(row)?);
                found.entry(run.job.clone()).or_default().push(run);
            }
            Ok(jobs
                .iter()
                .map(|job| found.remove(job).unwrap_or_default())
                .collect())
        })
        .await
    }

    /// For each of `jobs`, `pacer stats`' figures over its newest `limit` runs that ended,
    /// scheduled in `[from, to)`, and how many runs that was: as the SQLite history counts them
    /// (runs that started and ended; percentiles by nearest rank), computed by the database in
    /// one query.
    pub async fn jobs_figures(
        &self,
        jobs: &[String],
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<(JobStats, usize)>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    // Aggregated per job inside the lateral subquery: each job's runs are
                    // sorted on their own, and no sort of all of them by job is needed.
                    "SELECT wanted.name AS job, figures.* FROM unnest($1::text[]) AS wanted (name)
                     CROSS JOIN LATERAL (
                         SELECT count(*) AS read,
                                count(*) FILTER (WHERE ended) AS runs,
                                count(*) FILTER (WHERE ended AND status = 'succeeded')
                                    AS succeeded,
                                count(*) FILTER (WHERE ended AND status IN ('failed',
                                                 'timed_out', 'crashed')) AS failed,
                                percentile_disc(0.5) WITHIN GROUP (ORDER BY took) AS p50_ms,
                                percentile_disc(0.95) WITHIN GROUP (ORDER BY took) AS p95_ms,
                                max(took) AS max_ms,
                                (avg(queue_ms) FILTER (WHERE ended))::double precision
                                    AS mean_queue_ms,
                                percentile_disc(0.5) WITHIN GROUP (ORDER BY late) AS p50_late_ms,
                                percentile_disc(0.95) WITHIN GROUP (ORDER BY late) AS p95_late_ms,
                                max(late) AS max_late_ms
                         FROM (SELECT status, queue_ms, ended,
                                      CASE WHEN ended THEN finished_at - started_at END AS took,
                                      CASE WHEN ended THEN started_at - scheduled_at END AS late
                               FROM (SELECT status, scheduled_at, started_at, finished_at,
                                            queue_ms,
                                            started_at IS NOT NULL AND finished_at IS NOT NULL
                                                AS ended
                                     FROM runs
                                     WHERE job = wanted.name AND scheduled_at >= $2
                                           AND scheduled_at < $3
                                           AND status NOT IN ('queued', 'running')
                                     ORDER BY scheduled_at DESC LIMIT $4) AS newest) AS samples
                     ) AS figures",
                    &[&jobs, &from, &to, &i64::from(limit)],
                )
                .await
                .map_err(db)?;
            let mut found = HashMap::new();
            for row in &rows {
                let stats = job_stats_from_row(row)?;
                let read: i64 = row.try_get("read").map_err(db)?;
                let read = usize::try_from(read.max(0)).unwrap_or(usize::MAX);
                found.insert(stats.job.clone(), (stats, read));
            }
            Ok(jobs
                .iter()
                .map(|job| {
                    found
                        .remove(job)
                        .unwrap_or_else(|| (Samples::default().summarize(job.clone()), 0))
                })
                .collect())
        })
        .await
    }

    /// Those of `jobs` with a run scheduled in `[from, to)`, in their order: one index probe
    /// each, in one query.
    pub async fn jobs_with_runs(
        &self,
        jobs: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT wanted.name FROM unnest($1::text[]) WITH ORDINALITY AS wanted (name, at)
                     WHERE EXISTS (SELECT 1 FROM runs WHERE job = wanted.name
                                   AND scheduled_at >= $2 AND scheduled_at < $3
                                   AND status NOT IN ('queued', 'running'))
                        OR EXISTS (SELECT 1 FROM runs WHERE status IN ('queued', 'running')
                                   AND job = wanted.name
                                   AND scheduled_at >= $2 AND scheduled_at < $3)
                     ORDER BY wanted.at",
                    &[&jobs, &from, &to],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| row.try_get("name").map_err(db))
                .collect()
        })
        .await
    }

    /// The runs of every job that held a slot during `[from, to)` (as the SQLite history's
    /// `spans`: those due in `[from - lookback, to)` that started, at most `limit`, the latest
    /// due first, and every run still going), then every fire still waiting for a slot.
    pub async fn spans(
        &self,
        from: i64,
        to: i64,
        lookback: i64,
        limit: u32,
    ) -> Result<Vec<Span>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let mut spans = client
                .query(
                    "SELECT job, started_at - greatest(coalesce(queue_ms, 0), 0) AS waiting_from,
                            started_at, finished_at
                     FROM runs
                     WHERE scheduled_at >= $1 AND scheduled_at < $2 AND started_at IS NOT NULL
                       AND (finished_at IS NULL OR finished_at >= $3)
                     ORDER BY scheduled_at DESC LIMIT $4",
                    &[&(from - lookback), &to, &from, &i64::from(limit)],
                )
                .await
                .map_err(db)?
                .iter()
                .map(span)
                .collect::<Result<Vec<_>, _>>()?;
            let waiting_or_going = client
                .query(
                    &format!(
                        "SELECT job, {WAITING_FROM}, started_at, finished_at FROM runs
                         WHERE (status = 'running' AND scheduled_at < $1
                                AND started_at IS NOT NULL)
                            OR status = 'queued'"
                    ),
                    &[&(from - lookback)],
                )
                .await
                .map_err(db)?;
            for row in &waiting_or_going {
                let span = span(row)?;
                if span.started_at.is_some() || span.waiting_from < to {
                    spans.push(span);
                }
            }
            Ok(spans)
        })
        .await
    }

    /// Run `id`, with its node, and at most the last `max_output` bytes of its output (none
    /// with 0).
    pub async fn run_capped(
        &self,
        id: RunId,
        max_output: u64,
    ) -> Result<Option<CappedRun>, ClusterError> {
        let max = i64::try_from(max_output).unwrap_or(i64::MAX);
        within(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {RUN_COLUMNS}, runs.params, runs.queued_at,
                                octet_length(run_output.output)::bigint AS stored,
                                CASE WHEN $2::bigint = 0 THEN NULL
                                     ELSE substring(run_output.output
                                                    FROM greatest(1, octet_length(run_output.output)
                                                                     - $2::bigint + 1)::integer)
                                END AS tail,
                                run_output.dropped
                         FROM runs LEFT JOIN run_output ON run_output.run_id = runs.id
                         WHERE runs.id = $1"
                    ),
                    &[&id, &max],
                )
                .await
                .map_err(db)?;
            let Some(row) = row else { return Ok(None) };
            let params: Option<String> = row.try_get("params").map_err(db)?;
            let tail: Option<Vec<u8>> = row.try_get("tail").map_err(db)?;
            let stored: Option<i64> = row.try_get("stored").map_err(db)?;
            let dropped: Option<i64> = row.try_get("dropped").map_err(db)?;
            Ok(Some(CappedRun {
                detail: RunDetail {
                    record: RunRecord::from(run_from_row(&row)?),
                    output: String::from_utf8_lossy(&tail.unwrap_or_default()).into_owned(),
                    output_dropped: dropped.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
                    params: match params {
                        Some(text) => serde_json::from_str(&text).map_err(|e| {
                            ClusterError::Corrupt(format!("params of run {id}: {e}"))
                        })?,
                        None => serde_json::Value::Object(serde_json::Map::new()),
                    },
                },
                stored_output: stored.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                queued_at: row.try_get("queued_at").map_err(db)?,
            }))
        })
        .await
    }

    /// The chained runs that `upstream` caused (as the SQLite history's `downstream`), with
    /// their nodes.
    pub async fn downstream(
        &self,
        upstream: &RunRecord,
        window_ms: i64,
    ) -> Result<Vec<RunRecord>, ClusterError> {
        let Some(ended) = upstream.finished_at else {
            return Ok(Vec::new());
        };
        within(async {
            let client = self.client().await?;
            client
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM runs
                         WHERE scheduled_at >= $1 AND scheduled_at <= $2 AND trigger = 'chained'
                           AND (params::jsonb -> 'upstream' ->> 'id') = $3::bigint::text
                         ORDER BY id"
                    ),
                    &[&(ended - 1_000), &(ended + window_ms), &upstream.id],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|row| run_from_row(row).map(RunRecord::from))
                .collect()
        })
        .await
    }
}
