//! The CLI's queries: read-only, each served by an index (see the schema), paged by id.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use super::super::{
    History, HistoryQuery, JobState, JobStats, RunDetail, RunId, RunRecord, StoreError,
};
use super::open_read_only;
use crate::model::{Status, Trigger};

/// A read-only view of a SQLite history.
#[derive(Debug)]
pub struct SqliteHistory {
    pub(super) conn: Connection,
}

/// The columns of a [`RunRecord`], in the order [`record_from_row`] reads them.
pub(super) const RECORD_COLUMNS: &str = "runs.id, runs.job, runs.plugin, runs.status, runs.trigger, \
     runs.attempt, runs.scheduled_at, runs.started_at, runs.finished_at, runs.queue_ms, runs.error";

impl SqliteHistory {
    /// Opens the database at `path` without ever writing to it.
    pub fn open(path: &Path) -> Result<SqliteHistory, StoreError> {
        Ok(SqliteHistory {
            conn: open_read_only(path)?,
        })
    }

    /// The SQL and parameters of a history query, shared with the query-plan test.
    pub(super) fn history_sql(query: &HistoryQuery) -> (String, Vec<Value>) {
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM runs WHERE 1 = 1");
        let mut values = Vec::new();
        let mut filter = |clause: &str, value: Value| {
            sql.push_str(" AND ");
            sql.push_str(clause);
            values.push(value);
        };
        if let Some(job) = &query.job {
            filter("job = ?", Value::Text(job.clone()));
        }
        if let Some(status) = query.status {
            filter("status = ?", Value::Text(status.as_str().to_owned()));
        }
        if let Some(trigger) = query.trigger {
            // The rare triggers restate the condition of the partial index `runs_by_trigger`,
            // which SQLite uses only when a query names it; `schedule` is most rows, so walking
            // the newest ids finds them at once.
            let clause = if trigger == Trigger::Schedule {
                "trigger = ?"
            } else {
                "trigger = ? AND trigger <> 'schedule'"
            };
            filter(clause, Value::Text(trigger.as_str().to_owned()));
        }
        if let Some(since) = query.since {
            filter("scheduled_at >= ?", Value::Integer(since));
        }
        if let Some(until) = query.until {
            filter("scheduled_at < ?", Value::Integer(until));
        }
        if let Some(before) = query.before {
            filter("id < ?", Value::Integer(before));
        }
        if let Some(after) = query.after {
            filter("id > ?", Value::Integer(after));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        values.push(Value::Integer(i64::from(query.limit)));
        // A window that ends in the past, with no other filter: walking ids down from the
        // newest would pass every run after the window first. When the window holds fewer
        // runs than that (by its length against the time since it ended), the ids in it are
        // picked from `runs_by_schedule` alone, and only the page's rows are read.
        if let (Some(since), Some(until), None, None, None) = (
            query.since,
            query.until,
            &query.job,
            query.status,
            query.trigger,
        ) {
            let now = crate::time::to_ms(jiff::Timestamp::now());
            if until - since < now - until {
                sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM runs WHERE id IN (\
                     SELECT id FROM runs INDEXED BY runs_by_schedule \
                     WHERE scheduled_at >= ? AND scheduled_at < ?{} \
                     ORDER BY id DESC LIMIT ?) ORDER BY id DESC",
                    match (query.before, query.after) {
                        (Some(_), Some(_)) => " AND id < ? AND id > ?",
                        (Some(_), None) => " AND id < ?",
                        (None, Some(_)) => " AND id > ?",
                        (None, None) => "",
                    }
                );
            }
        }
        (sql, values)
    }

    #[cfg(test)]
    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl History for SqliteHistory {
    fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError> {
        let (sql, values) = Self::history_sql(query);
        let mut statement = self.conn.prepare(&sql)?;
        let rows = statement.query_and_then(rusqlite::params_from_iter(values), record_from_row)?;
        rows.collect()
    }

    fn run(&self, id: RunId) -> Result<Option<RunDetail>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, runs.params, run_output.output, run_output.dropped
             FROM runs LEFT JOIN run_output ON run_output.run_id = runs.id
             WHERE runs.id = ?1"
        );
        let mut statement = self.conn.prepare(&sql)?;
        let mut rows = statement.query_and_then([id], |row| {
            let record = record_from_row(row)?;
            let params: Option<String> = row.get(11)?;
            let output: Option<Vec<u8>> = row.get(12)?;
            let dropped: Option<i64> = row.get(13)?;
            let params = match params {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("params of run {id}: {e}")))?,
                None => serde_json::Value::Object(serde_json::Map::new()),
            };
            Ok(RunDetail {
                record,
                output: String::from_utf8_lossy(&output.unwrap_or_default()).into_owned(),
                output_dropped: dropped.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
                params,
            })
        })?;
        rows.next().transpose()
    }

    fn stats(&self, job: Option<&str>, since_ms: Option<i64>) -> Result<Vec<JobStats>, StoreError> {
        let mut sql = String::from(
            "SELECT job, status, started_at, finished_at, queue_ms, scheduled_at FROM runs
             WHERE started_at IS NOT NULL AND finished_at IS NOT NULL",
        );
        let mut values = Vec::new();
        if let Some(job) = job {
            sql.push_str(" AND job = ?");
            values.push(Value::Text(job.to_owned()));
        }
        if let Some(since) = since_ms {
            sql.push_str(" AND scheduled_at >= ?");
            values.push(Value::Integer(since));
        }
        let mut statement = self.conn.prepare(&sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(values))?;
        let mut per_job: HashMap<String, Samples> = HashMap::new();
        while let Some(row) = rows.next()? {
            let job: String = row.get(0)?;
            let status = parse_status(&row.get::<_, String>(1)?)?;
            let started: i64 = row.get(2)?;
            let finished: i64 = row.get(3)?;
            let queue: Option<i64> = row.get(4)?;
            let scheduled: i64 = row.get(5)?;
            per_job.entry(job).or_default().add(
                status,
                finished - started,
                queue,
                started - scheduled,
            );
        }
        let mut stats: Vec<JobStats> = per_job
            .into_iter()
            .map(|(job, samples)| samples.summarize(job))
            .collect();
        stats.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(stats)
    }

    fn last_statuses(&self) -> Result<HashMap<String, Status>, StoreError> {
        last_statuses(&self.conn)
    }

    fn job_states(&self) -> Result<HashMap<String, JobState>, StoreError> {
        super::writer::read_job_states(&self.conn)
    }
}

/// For each job, the status of the row with its greatest id: one index seek per job on
/// `(job, id)`.
pub(super) fn last_statuses(conn: &Connection) -> Result<HashMap<String, Status>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT job, (SELECT status FROM runs AS newest
                      WHERE newest.job = jobs.job ORDER BY id DESC LIMIT 1)
         FROM (SELECT DISTINCT job FROM runs) AS jobs",
    )?;
    let rows = statement.query_and_then([], |row| {
        Ok::<_, StoreError>((
            row.get::<_, String>(0)?,
            parse_status(&row.get::<_, String>(1)?)?,
        ))
    })?;
    rows.collect()
}

/// For each of `jobs`, the `finished_at` of its succeeded run with the greatest id: a walk back
/// along `(job, id)` that stops at the first success (pinned to that index: walking
/// `(status, id)` instead would pass every other job's successes).
pub(super) fn last_successes(
    conn: &Connection,
    jobs: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT finished_at FROM runs INDEXED BY runs_by_job
         WHERE job = ?1 AND status = 'succeeded' AND finished_at IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )?;
    let mut found = HashMap::new();
    for job in jobs {
        if let Some(at) = statement
            .query_row([job], |row| row.get::<_, i64>(0))
            .optional()?
        {
            found.insert(job.clone(), at);
        }
    }
    Ok(found)
}

pub(super) fn record_from_row(row: &Row<'_>) -> Result<RunRecord, StoreError> {
    let started_at: Option<i64> = row.get(7)?;
    let finished_at: Option<i64> = row.get(8)?;
    let trigger: String = row.get(4)?;
    Ok(RunRecord {
        id: row.get(0)?,
        job: row.get(1)?,
        plugin: row.get(2)?,
        status: parse_status(&row.get::<_, String>(3)?)?,
        trigger: trigger
            .parse::<Trigger>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        attempt: row.get(5)?,
        scheduled_at: row.get(6)?,
        started_at,
        finished_at,
        duration_ms: started_at.zip(finished_at).map(|(s, f)| f - s),
        queue_ms: row.get(9)?,
        error: row.get(10)?,
    })
}

pub(super) fn parse_status(text: &str) -> Result<Status, StoreError> {
    text.parse()
        .map_err(|e: crate::model::UnknownName| StoreError::Corrupt(e.to_string()))
}

/// One job's figures while they are being collected.
#[derive(Debug, Default)]
pub(super) struct Samples {
    succeeded: u64,
    failed: u64,
    durations: Vec<i64>,
    lateness: Vec<i64>,
    queue_total: i64,
    queue_count: u64,
}

impl Samples {
    pub(super) fn add(&mut self, status: Status, duration: i64, queue: Option<i64>, lateness: i64) {
        match status {
            Status::Succeeded => self.succeeded += 1,
            s if s.is_failure() => self.failed += 1,
            _ => {}
        }
        self.durations.push(duration);
        self.lateness.push(lateness);
        if let Some(queue) = queue {
            self.queue_total += queue;
            self.queue_count += 1;
        }
    }

    pub(super) fn summarize(mut self, job: String) -> JobStats {
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
pub(crate) fn percentile(sorted: &[i64], pct: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}
