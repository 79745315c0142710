//! The CLI's queries: read-only, each served by an index (see the schema), paged by id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{Connection, Row};

use super::super::{
    DamagedRow, History, HistoryQuery, JobState, JobStats, RunDetail, RunId, RunRecord, Samples,
    StoreError,
};
use super::open_read_only;
use super::rows::{self, Problem, RECORD_COLUMNS, column};
use crate::model::Status;
use crate::model::Trigger;

/// A read-only view of a SQLite history.
#[derive(Debug)]
pub struct SqliteHistory {
    pub(super) conn: Connection,
    path: PathBuf,
    /// Rows left out so far, for [`History::take_damaged`].
    damaged: RefCell<Vec<DamagedRow>>,
}

impl SqliteHistory {
    /// Opens the database at `path` without ever writing to it.
    pub fn open(path: &Path) -> Result<SqliteHistory, StoreError> {
        Ok(SqliteHistory {
            conn: open_read_only(path)?,
            path: path.to_owned(),
            damaged: RefCell::default(),
        })
    }

    /// Runs `read` in one read transaction: its queries see one state of the history (a page
    /// drawn from several queries agrees with itself), and the database's shared lock is taken
    /// once for all of them rather than once per query.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let transaction = self
            .conn
            .unchecked_transaction()
            .map_err(|e| E::from(StoreError::from(e).in_file(&self.path)))?;
        let result = read();
        // Nothing was written: ending it either way releases the snapshot.
        drop(transaction);
        result
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

    fn damaged(&self, rows: impl IntoIterator<Item = DamagedRow>) {
        self.damaged.borrow_mut().extend(rows);
    }

    /// Decodes each row of `statement`'s result with `decode`, leaving out (and noting) the
    /// rows that do not decode. When SQLite itself cannot read further (a damaged page), what
    /// was read so far is returned with a note of where the listing stops.
    fn each_row<T>(
        &self,
        statement: &mut rusqlite::Statement<'_>,
        values: Vec<Value>,
        mut decode: impl FnMut(&Row<'_>) -> Result<T, Problem>,
        mut id_of: impl FnMut(&T) -> Option<RunId>,
    ) -> Result<Vec<T>, StoreError> {
        let mut rows = statement.query(rusqlite::params_from_iter(values))?;
        let mut decoded = Vec::new();
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(cause) if !decoded.is_empty() => {
                    let last = decoded.last().and_then(&mut id_of);
                    let cause = StoreError::from(cause).in_file(&self.path);
                    self.damaged([DamagedRow {
                        id: last,
                        table: "runs",
                        problem: format!("the rows after it cannot be read: {cause}"),
                    }]);
                    break;
                }
                Err(cause) => return Err(cause.into()),
            };
            match decode(row) {
                Ok(value) => decoded.push(value),
                Err(problem) => self.damaged([DamagedRow {
                    id: rows::run_id(row),
                    table: "runs",
                    problem,
                }]),
            }
        }
        Ok(decoded)
    }

    fn runs_of(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError> {
        let (sql, values) = Self::history_sql(query);
        let mut statement = self.conn.prepare(&sql)?;
        self.each_row(&mut statement, values, rows::record, |r| Some(r.id))
    }

    fn run_of(&self, id: RunId) -> Result<Option<RunDetail>, StoreError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS}, runs.params AS params, run_output.output AS output,
                    run_output.dropped AS dropped
             FROM runs LEFT JOIN run_output ON run_output.run_id = runs.id
             WHERE runs.id = ?1"
        );
        let mut statement = self.conn.prepare(&sql)?;
        let mut rows = statement.query([id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let damaged = |problem| StoreError::DamagedRun {
            path: None,
            id,
            problem,
        };
        let record = rows::record(row).map_err(damaged)?;
        let params: Option<String> = column(row, "params").map_err(damaged)?;
        let output: Option<Vec<u8>> = column(row, "output").map_err(damaged)?;
        let dropped: Option<i64> = column(row, "dropped").map_err(damaged)?;
        let params = match params {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| damaged(format!("column `params` is not JSON ({e})")))?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        Ok(Some(RunDetail {
            record,
            output: String::from_utf8_lossy(&output.unwrap_or_default()).into_owned(),
            output_dropped: dropped.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
            params,
        }))
    }

    fn stats_of(
        &self,
        job: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<JobStats>, StoreError> {
        let mut sql = String::from(
            // A run that started and ended is neither queued nor running: said, so that the
            // index of ended runs (which carries every column read) serves one job's figures.
            "SELECT id, job, status, started_at, finished_at, queue_ms, scheduled_at FROM runs
             WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
               AND status NOT IN ('queued', 'running')",
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
        let samples = self.each_row(&mut statement, values, sample, |s| Some(s.id))?;
        let mut per_job: HashMap<String, Samples> = HashMap::new();
        for s in samples {
            per_job.entry(s.job).or_default().add(
                s.status,
                s.finished.saturating_sub(s.started),
                s.queue,
                s.started.saturating_sub(s.scheduled),
            );
        }
        let mut stats: Vec<JobStats> = per_job
            .into_iter()
            .map(|(job, samples)| samples.summarize(job))
            .collect();
        stats.sort_by(|a, b| a.job.cmp(&b.job));
        Ok(stats)
    }
}

impl History for SqliteHistory {
    fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_of(query).map_err(|e| e.in_file(&self.path))
    }

    fn run(&self, id: RunId) -> Result<Option<RunDetail>, StoreError> {
        self.run_of(id).map_err(|e| e.in_file(&self.path))
    }

    fn stats(&self, job: Option<&str>, since_ms: Option<i64>) -> Result<Vec<JobStats>, StoreError> {
        self.stats_of(job, since_ms)
            .map_err(|e| e.in_file(&self.path))
    }

    fn last_statuses(&self) -> Result<HashMap<String, Status>, StoreError> {
        let (statuses, damaged) =
            rows::last_statuses(&self.conn).map_err(|e| e.in_file(&self.path))?;
        self.damaged(damaged);
        Ok(statuses)
    }

    fn job_states(&self) -> Result<HashMap<String, JobState>, StoreError> {
        let (states, damaged) = rows::job_states(&self.conn).map_err(|e| e.in_file(&self.path))?;
        self.damaged(damaged);
        Ok(states)
    }

    fn take_damaged(&self) -> Vec<DamagedRow> {
        std::mem::take(&mut self.damaged.borrow_mut())
    }
}

/// One finished run, as `pacer stats` counts it.
#[derive(Debug)]
struct Sample {
    id: RunId,
    job: String,
    status: Status,
    started: i64,
    finished: i64,
    queue: Option<i64>,
    scheduled: i64,
}

fn sample(row: &Row<'_>) -> Result<Sample, Problem> {
    let status: String = column(row, "status")?;
    Ok(Sample {
        id: column(row, "id")?,
        job: column(row, "job")?,
        status: rows::parse_status(&status)?,
        started: column(row, "started_at")?,
        finished: column(row, "finished_at")?,
        queue: column(row, "queue_ms")?,
        scheduled: column(row, "scheduled_at")?,
    })
}
