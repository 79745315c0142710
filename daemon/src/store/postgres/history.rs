//! The CLI's reads, with the shapes of the SQLite history ([`crate::store::History`]) plus
//! the node that ran each run, and `pacer nodes`. Each is served by an index (see the
//! schema), paged by id.

use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{ClusterError, PgDatabase, db, within};
use crate::model::{Status, Trigger};
use crate::store::{HistoryQuery, JobState, JobStats, RunId, RunRecord};
use crate::time::json;

/// A run read from the cluster: the record and its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterRun {
    /// The record.
    #[serde(flatten)]
    pub record: RunRecord,
    /// The node that ran it (`None` while queued, or if it never started).
    pub node: Option<String>,
}

/// `pacer show` with `[cluster]`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRunDetail {
    /// The record and its node.
    #[serde(flatten)]
    pub run: ClusterRun,
    /// The captured output's tail, as text.
    pub output: String,
    /// Bytes dropped from the front of the output.
    pub output_dropped: u64,
    /// The params, with secret values masked.
    pub params: serde_json::Value,
}

/// One row of `pacer nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node id.
    pub node: String,
    /// `alive`, `stopping`, `stopped` or `dead`.
    pub state: String,
    /// Its host.
    pub host: String,
    /// Its process.
    pub pid: i32,
    /// Its incarnation.
    pub incarnation: i64,
    /// Its last heartbeat, on the database clock.
    #[serde(with = "json")]
    pub last_heartbeat: i64,
    /// How long ago that was, on the database clock.
    pub last_heartbeat_ago_ms: i64,
    /// Its wall clock minus the database's, as last measured.
    pub clock_offset_ms: i64,
    /// Its runs recorded `running`.
    pub in_flight: i64,
    /// Jobs whose config on this node differs from the one the cluster follows.
    pub drift: Vec<String>,
}

/// A pool's load across the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLoad {
    /// The pool.
    pub pool: String,
    /// Fires waiting in it.
    pub queued: i64,
    /// Runs going in it, on any node.
    pub running: i64,
}

/// The columns of a [`ClusterRun`].
pub(super) const RUN_COLUMNS: &str = "runs.id, runs.job, runs.plugin, runs.status, runs.trigger, \
     runs.attempt, runs.scheduled_at, runs.started_at, runs.finished_at, runs.queue_ms, \
     runs.error, runs.message, runs.node";

impl From<ClusterRun> for RunRecord {
    /// The record as the CLI shows it with `[cluster]`: with its `node`.
    fn from(run: ClusterRun) -> RunRecord {
        RunRecord {
            node: Some(run.node),
            ..run.record
        }
    }
}

impl PgDatabase {
    /// Runs matching `query`, newest first.
    pub async fn runs(&self, query: &HistoryQuery) -> Result<Vec<ClusterRun>, ClusterError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE true");
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut filter = |clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            values.push(value);
            sql.push_str(&format!(" AND {clause} ${}", values.len()));
        };
        if let Some(job) = &query.job {
            filter("job =", Box::new(job.clone()));
        }
        if let Some(status) = query.status {
            filter("status =", Box::new(status.as_str()));
        }
        if let Some(trigger) = query.trigger {
            // The rare triggers restate the condition of the partial index `runs_by_trigger`,
            // which a generic plan can use only when the query names it.
            let clause = if trigger == Trigger::Schedule {
                "trigger ="
            } else {
                "trigger <> 'schedule' AND trigger ="
            };
            filter(clause, Box::new(trigger.as_str()));
        }
        if let Some(since) = query.since {
            filter("scheduled_at >=", Box::new(since));
        }
        if let Some(until) = query.until {
            filter("scheduled_at <", Box::new(until));
        }
        if let Some(before) = query.before {
            filter("id <", Box::new(before));
        }
        if let Some(after) = query.after {
            filter("id >", Box::new(after));
        }
        values.push(Box::new(i64::from(query.limit)));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len()));
        within(async {
            let client = self.client().await?;
            let params: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect();
            client
                .query(&sql, &params)
                .await
                .map_err(db)?
                .iter()
                .map(run_from_row)
                .collect()
        })
        .await
    }

    /// One run in full.
    pub async fn run(&self, id: RunId) -> Result<Option<ClusterRunDetail>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {RUN_COLUMNS}, runs.params, run_output.output, run_output.dropped
                         FROM runs LEFT JOIN run_output ON run_output.run_id = runs.id
                         WHERE runs.id = $1"
                    ),
                    &[&id],
                )
                .await
                .map_err(db)?;
            let Some(row) = row else { return Ok(None) };
            let params: Option<String> = row.try_get("params").map_err(db)?;
            let output: Option<Vec<u8>> = row.try_get("output").map_err(db)?;
            let dropped: Option<i64> = row.try_get("dropped").map_err(db)?;
            Ok(Some(ClusterRunDetail {
                run: run_from_row(&row)?,
                output: String::from_utf8_lossy(&output.unwrap_or_default()).into_owned(),
                output_dropped: dropped.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
                params: match params {
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|e| ClusterError::Corrupt(format!("params of run {id}: {e}")))?,
                    None => serde_json::Value::Object(serde_json::Map::new()),
                },
            }))
        })
        .await
    }

    /// Per-job figures over the runs that started and ended, scheduled at or after
    /// `since_ms`; percentiles by nearest rank, as the SQLite history computes them.
    pub async fn stats(
        &self,
        job: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<JobStats>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT job, count(*) AS runs,
                            count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                            count(*) FILTER (WHERE status IN ('failed', 'timed_out', 'crashed'))
                                AS failed,
                            percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - started_at)
                                AS p50_ms,
                            percentile_disc(0.95) WITHIN GROUP (ORDER BY finished_at - started_at)
                                AS p95_ms,
                            max(finished_at - started_at) AS max_ms,
                            avg(queue_ms)::double precision AS mean_queue_ms,
                            percentile_disc(0.5) WITHIN GROUP (ORDER BY started_at - scheduled_at)
                                AS p50_late_ms,
                            percentile_disc(0.95) WITHIN GROUP (ORDER BY started_at - scheduled_at)
                                AS p95_late_ms,
                            max(started_at - scheduled_at) AS max_late_ms
                     FROM runs
                     WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
                       AND ($1::text IS NULL OR job = $1)
                       AND ($2::bigint IS NULL OR scheduled_at >= $2)
                     GROUP BY job ORDER BY job",
                    &[&job, &since_ms],
                )
                .await
                .map_err(db)?;
            rows.iter().map(job_stats_from_row).collect()
        })
        .await
    }

    /// The newest run's status for each job (one index seek per job on `(job, id)`).
    pub async fn last_statuses(&self) -> Result<HashMap<String, Status>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT jobs.job, newest.status FROM job_state AS jobs
                     CROSS JOIN LATERAL (SELECT status FROM runs WHERE runs.job = jobs.job
                                         ORDER BY id DESC LIMIT 1) AS newest",
                    &[],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    let status: String = row.try_get("status").map_err(db)?;
                    Ok((row.try_get("job").map_err(db)?, parse_status(&status)?))
                })
                .collect()
        })
        .await
    }

    /// Each job's last scheduled fire, paused flag and timing.
    pub async fn job_states(&self) -> Result<HashMap<String, JobState>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query("SELECT job, last_fire, paused, timing FROM job_state", &[])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.try_get("job").map_err(db)?,
                        JobState {
                            last_fire: row.try_get("last_fire").map_err(db)?,
                            paused: row.try_get("paused").map_err(db)?,
                            timing: row.try_get("timing").map_err(db)?,
                        },
                    ))
                })
                .collect()
        })
        .await
    }

    /// Per pool, the fires waiting and the runs going across the cluster.
    pub async fn pool_load(&self) -> Result<Vec<PoolLoad>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT pool,
                            count(*) FILTER (WHERE status = 'queued') AS queued,
                            count(*) FILTER (WHERE status = 'running') AS running
                     FROM runs WHERE status IN ('queued', 'running') GROUP BY pool",
                    &[],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    Ok(PoolLoad {
                        pool: row.try_get("pool").map_err(db)?,
                        queued: row.try_get("queued").map_err(db)?,
                        running: row.try_get("running").map_err(db)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Every node, for `pacer nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT n.id, n.state, n.host, n.pid, n.incarnation, n.last_beat_at,
                            pacer_now_ms() - n.last_beat_at AS ago, n.clock_offset_ms,
                            (SELECT count(*) FROM runs
                             WHERE runs.node = n.id AND runs.incarnation = n.incarnation
                                   AND runs.status = 'running') AS in_flight,
                            array(SELECT mine.job FROM node_jobs AS mine
                                  JOIN job_state ON job_state.job = mine.job
                                  WHERE mine.node = n.id
                                        AND mine.digest IS DISTINCT FROM job_state.digest
                                  ORDER BY mine.job) AS drift
                     FROM nodes AS n ORDER BY n.id",
                    &[],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    Ok(NodeInfo {
                        node: row.try_get("id").map_err(db)?,
                        state: row.try_get("state").map_err(db)?,
                        host: row.try_get("host").map_err(db)?,
                        pid: row.try_get("pid").map_err(db)?,
                        incarnation: row.try_get("incarnation").map_err(db)?,
                        last_heartbeat: row.try_get("last_beat_at").map_err(db)?,
                        last_heartbeat_ago_ms: row.try_get("ago").map_err(db)?,
                        clock_offset_ms: row.try_get("clock_offset_ms").map_err(db)?,
                        in_flight: row.try_get("in_flight").map_err(db)?,
                        drift: row.try_get("drift").map_err(db)?,
                    })
                })
                .collect()
        })
        .await
    }
}

pub(super) fn run_from_row(row: &Row) -> Result<ClusterRun, ClusterError> {
    let started_at: Option<i64> = row.try_get("started_at").map_err(db)?;
    let finished_at: Option<i64> = row.try_get("finished_at").map_err(db)?;
    let trigger: String = row.try_get("trigger").map_err(db)?;
    let status: String = row.try_get("status").map_err(db)?;
    Ok(ClusterRun {
        record: RunRecord {
            id: row.try_get("id").map_err(db)?,
            job: row.try_get("job").map_err(db)?,
            plugin: row.try_get("plugin").map_err(db)?,
            status: parse_status(&status)?,
            trigger: trigger
                .parse()
                .map_err(|e: crate::model::UnknownName| ClusterError::Corrupt(e.to_string()))?,
            attempt: u32::try_from(row.try_get::<_, i32>("attempt").map_err(db)?).unwrap_or(0),
            scheduled_at: row.try_get("scheduled_at").map_err(db)?,
            started_at,
            finished_at,
            duration_ms: started_at.zip(finished_at).map(|(s, f)| f - s),
            queue_ms: row.try_get("queue_ms").map_err(db)?,
            error: row.try_get("error").map_err(db)?,
            message: row.try_get("message").map_err(db)?,
            node: None,
        },
        node: row.try_get("node").map_err(db)?,
    })
}

/// A job's figures from a row with the columns `job`, `runs`, `succeeded`, `failed`, and the
/// duration, queue and lateness figures `JobStats` has.
pub(super) fn job_stats_from_row(row: &Row) -> Result<JobStats, ClusterError> {
    let count = |name: &str| -> Result<u64, ClusterError> {
        Ok(u64::try_from(row.try_get::<_, i64>(name).map_err(db)?).unwrap_or(0))
    };
    let (runs, succeeded) = (count("runs")?, count("succeeded")?);
    Ok(JobStats {
        job: row.try_get("job").map_err(db)?,
        runs,
        succeeded,
        failed: count("failed")?,
        success_rate: if runs == 0 {
            0.0
        } else {
            succeeded as f64 / runs as f64
        },
        p50_ms: row.try_get("p50_ms").map_err(db)?,
        p95_ms: row.try_get("p95_ms").map_err(db)?,
        max_ms: row.try_get("max_ms").map_err(db)?,
        mean_queue_ms: row.try_get("mean_queue_ms").map_err(db)?,
        p50_late_ms: row.try_get("p50_late_ms").map_err(db)?,
        p95_late_ms: row.try_get("p95_late_ms").map_err(db)?,
        max_late_ms: row.try_get("max_late_ms").map_err(db)?,
    })
}

pub(super) fn parse_status(text: &str) -> Result<Status, ClusterError> {
    text.parse()
        .map_err(|e: crate::model::UnknownName| ClusterError::Corrupt(e.to_string()))
}
