//! Rows as the history holds them, read by column name, and the queries both the writer and
//! the CLI's reader need. A row that does not decode is reported as a [`DamagedRow`] for the
//! caller to skip: one altered row must not stop the daemon or hide the rest of the history.

use std::collections::HashMap;

use rusqlite::types::{FromSql, FromSqlError, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row};

use super::super::{DamagedRow, JobState, RunId, RunRecord, StoreError};
use crate::model::{Status, Trigger};

/// The columns of a [`RunRecord`], for a `SELECT` that [`record`] decodes.
pub(super) const RECORD_COLUMNS: &str = "runs.id, runs.job, runs.plugin, runs.status, \
     runs.trigger, runs.attempt, runs.scheduled_at, runs.started_at, runs.finished_at, \
     runs.queue_ms, runs.error, runs.message";

/// What a row failed on: the column and what it holds instead of what was expected.
pub(super) type Problem = String;

/// Reads column `name` of `row`, saying what the column holds when it is not a `T`.
pub(super) fn column<T: FromSql>(row: &Row<'_>, name: &str) -> Result<T, Problem> {
    let value = row
        .get_ref(name)
        .map_err(|e| format!("column `{name}` cannot be read: {e}"))?;
    decode(value, name)
}

/// `value`, the content of column `name`, as a `T`, or what it holds instead.
fn decode<T: FromSql>(value: ValueRef<'_>, name: &str) -> Result<T, Problem> {
    T::column_result(value).map_err(|e| {
        let held = match value {
            ValueRef::Null => "NULL".to_owned(),
            ValueRef::Integer(i) => format!("the integer {i}"),
            ValueRef::Real(r) => format!("the number {r}"),
            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => format!("the text {:?}", abbreviate(text)),
                Err(_) => "text that is not valid UTF-8".to_owned(),
            },
            ValueRef::Blob(bytes) => format!("a blob of {} bytes", bytes.len()),
        };
        let why = match e {
            FromSqlError::InvalidType | FromSqlError::Utf8Error(_) => String::new(),
            other => format!(" ({other})"),
        };
        format!("column `{name}` holds {held}{why}")
    })
}

/// Where column `name` is in `statement`'s result. Queries that read thousands of rows find
/// their columns once and read each row by position: finding a column by name in each row asks
/// SQLite for the name of every column before it, which costs more than reading the value.
pub(super) fn position(
    statement: &rusqlite::Statement<'_>,
    name: &str,
) -> Result<Column, StoreError> {
    Ok(Column {
        index: statement.column_index(name)?,
        name: name.to_owned(),
    })
}

/// A column of a statement's result, found by [`position`].
#[derive(Debug)]
pub(super) struct Column {
    index: usize,
    name: String,
}

impl Column {
    /// Its value in `row` as a `T`, or what it holds instead.
    pub(super) fn get<T: FromSql>(&self, row: &Row<'_>) -> Result<T, Problem> {
        decode(self.value(row)?, &self.name)
    }

    /// Its text in `row` parsed in place as a `T` (a status, a trigger).
    pub(super) fn parsed<T>(&self, row: &Row<'_>) -> Result<T, Problem>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let name = &self.name;
        let parse = |text: &str| {
            text.parse::<T>()
                .map_err(|e| format!("column `{name}`: {e}"))
        };
        match self.value(row)? {
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| format!("column `{name}` holds text that is not valid UTF-8"))
                .and_then(parse),
            other => decode::<String>(other, name).and_then(|text| parse(&text)),
        }
    }

    fn value<'r>(&self, row: &'r Row<'_>) -> Result<ValueRef<'r>, Problem> {
        row.get_ref(self.index)
            .map_err(|e| format!("column `{}` cannot be read: {e}", self.name))
    }
}

/// A long value, cut for a message.
fn abbreviate(text: &str) -> String {
    const LONGEST: usize = 40;
    if text.len() <= LONGEST {
        text.to_owned()
    } else {
        format!("{}...", &text[..text.floor_char_boundary(LONGEST)])
    }
}

/// A `runs` row selected with [`RECORD_COLUMNS`].
pub(super) fn record(row: &Row<'_>) -> Result<RunRecord, Problem> {
    let status: String = column(row, "status")?;
    let trigger: String = column(row, "trigger")?;
    let started_at: Option<i64> = column(row, "started_at")?;
    let finished_at: Option<i64> = column(row, "finished_at")?;
    Ok(RunRecord {
        id: column(row, "id")?,
        job: column(row, "job")?,
        plugin: column(row, "plugin")?,
        status: parse_status(&status)?,
        trigger: trigger
            .parse::<Trigger>()
            .map_err(|e| format!("column `trigger`: {e}"))?,
        attempt: column(row, "attempt")?,
        scheduled_at: column(row, "scheduled_at")?,
        started_at,
        finished_at,
        duration_ms: started_at
            .zip(finished_at)
            .map(|(s, f)| f.saturating_sub(s)),
        queue_ms: column(row, "queue_ms")?,
        error: column(row, "error")?,
        message: column(row, "message")?,
        node: None,
    })
}

pub(super) fn parse_status(text: &str) -> Result<Status, Problem> {
    text.parse()
        .map_err(|e: crate::model::UnknownName| format!("column `status`: {e}"))
}

/// The id of a `runs` row, for naming it when the rest does not decode.
pub(super) fn run_id(row: &Row<'_>) -> Option<RunId> {
    column(row, "id").ok()
}

/// Each job's last scheduled fire, paused flag and timing; damaged rows are left out and returned.
pub(super) fn job_states(
    conn: &Connection,
) -> Result<(HashMap<String, JobState>, Vec<DamagedRow>), StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT job, last_fire, paused, timing FROM job_state")?;
    let mut rows = statement.query([])?;
    let mut states = HashMap::new();
    let mut damaged = Vec::new();
    while let Some(row) = rows.next()? {
        let decoded = (|| {
            Ok::<_, Problem>((
                column::<String>(row, "job")?,
                JobState {
                    last_fire: column(row, "last_fire")?,
                    paused: column(row, "paused")?,
                    timing: column(row, "timing")?,
                },
            ))
        })();
        match decoded {
            Ok((job, state)) => {
                states.insert(job, state);
            }
            Err(problem) => damaged.push(DamagedRow {
                id: None,
                table: "job_state",
                problem,
            }),
        }
    }
    Ok((states, damaged))
}

/// For each job, the status of the row with its greatest id: one index seek per job on
/// `(job, id)`. Jobs whose newest row is damaged are left out and that row returned.
pub(super) fn last_statuses(
    conn: &Connection,
) -> Result<(HashMap<String, Status>, Vec<DamagedRow>), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT newest.id AS id, newest.job AS job, newest.status AS status
         FROM (SELECT DISTINCT job FROM runs) AS jobs
         JOIN runs AS newest ON newest.id = (SELECT id FROM runs AS latest
                                             WHERE latest.job = jobs.job
                                             ORDER BY id DESC LIMIT 1)",
    )?;
    let mut rows = statement.query([])?;
    let mut statuses = HashMap::new();
    let mut damaged = Vec::new();
    while let Some(row) = rows.next()? {
        let decoded = (|| {
            let job: String = column(row, "job")?;
            let status: String = column(row, "status")?;
            Ok::<_, Problem>((job, parse_status(&status)?))
        })();
        match decoded {
            Ok((job, status)) => {
                statuses.insert(job, status);
            }
            Err(problem) => damaged.push(DamagedRow {
                id: run_id(row),
                table: "runs",
                problem,
            }),
        }
    }
    Ok((statuses, damaged))
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
         WHERE job = ?1 AND status = 'succeeded' AND typeof(finished_at) = 'integer'
         ORDER BY id DESC LIMIT 1",
    )?;
    let mut found = HashMap::new();
    for job in jobs {
        if let Some(at) = statement
            .query_row([job], |row| row.get::<_, i64>("finished_at"))
            .optional()?
        {
            found.insert(job.clone(), at);
        }
    }
    Ok(found)
}
