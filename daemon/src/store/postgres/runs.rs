//! A run's life after admission (start, end: fenced by the node's incarnation), and what any
//! node or the CLI may do to a run or a job: resolve or cancel it, pause a job, move its
//! schedule on.

use super::node::PgNode;
use super::{ClusterError, PgDatabase, db, within};
use crate::model::Status;
use crate::store::{Finish, RunId, StartRun};

/// What became of a run's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// Recorded.
    Written,
    /// Not recorded: the run is no longer this incarnation's (its node was declared dead and
    /// the run abandoned meanwhile). The end is only logged.
    Fenced,
}

/// What `pacer cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting: it is `cancelled` now.
    BeforeStart,
    /// It runs on `node`, which stops it once it learns (its next heartbeat).
    Requested {
        /// Where it runs.
        node: String,
    },
    /// It is over already, with this status.
    Over(Status),
    /// No such run.
    Unknown,
}

impl PgNode {
    /// Records that the process of an admitted run was spawned.
    pub async fn start_run(&self, start: &StartRun) -> Result<(), ClusterError> {
        let (pid, pid_start) = start.process.map_or((None, None), |(pid, start)| {
            (Some(pid), i64::try_from(start).ok())
        });
        let changed = within(async {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "UPDATE runs SET started_at = $4, pid = $5, pid_start = $6
                     WHERE id = $1 AND node = $2 AND incarnation = $3 AND status = 'running'",
                )
                .await
                .map_err(db)?;
            client
                .execute(
                    &statement,
                    &[
                        &start.id,
                        &self.node,
                        &self.incarnation,
                        &start.started_at,
                        &pid,
                        &pid_start,
                    ],
                )
                .await
                .map_err(db)
        })
        .await?;
        if changed == 0 {
            return Err(self.fenced());
        }
        Ok(())
    }

    /// Records a run's end, if the run is still this incarnation's.
    pub async fn finish_run(&self, finish: &Finish) -> Result<FinishOutcome, ClusterError> {
        within(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let statement = tx
                .prepare_cached(
                    "UPDATE runs SET status = $4, finished_at = $5, error = $6, message = $7,
                                     pid = NULL, pid_start = NULL, pending_params = NULL,
                                     cancel_requested = false
                     WHERE id = $1 AND node = $2 AND incarnation = $3 AND status = 'running'",
                )
                .await
                .map_err(db)?;
            let changed = tx
                .execute(
                    &statement,
                    &[
                        &finish.id,
                        &self.node,
                        &self.incarnation,
                        &finish.status.as_str(),
                        &finish.finished_at,
                        &finish.error,
                        &finish.message,
                    ],
                )
                .await
                .map_err(db)?;
            if changed == 0 {
                return Ok(FinishOutcome::Fenced);
            }
            if !finish.output.is_empty() || finish.output_dropped > 0 {
                tx.execute(
                    "INSERT INTO run_output (run_id, output, dropped) VALUES ($1, $2, $3)",
                    &[
                        &finish.id,
                        &finish.output,
                        &i64::try_from(finish.output_dropped).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(FinishOutcome::Written)
        })
        .await
    }
}

impl PgDatabase {
    /// A queued fire will never start: it ends `skipped` or `cancelled`. False if it was no
    /// longer queued.
    pub async fn resolve(
        &self,
        id: RunId,
        status: Status,
        reason: &str,
    ) -> Result<bool, ClusterError> {
        within(async {
            let client = self.client().await?;
            let changed = client
                .execute(
                    "UPDATE runs SET status = $2, error = $3, pending_params = NULL
                     WHERE id = $1 AND status = 'queued'",
                    &[&id, &status.as_str(), &reason],
                )
                .await
                .map_err(db)?;
            Ok(changed > 0)
        })
        .await
    }

    /// What a queued fire waits for, for its record and `pacer why`.
    pub async fn set_waiting(&self, id: RunId, reason: &str) -> Result<(), ClusterError> {
        within(async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE runs SET error = $2 WHERE id = $1 AND status = 'queued'",
                    &[&id, &reason],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    /// `pacer cancel`: a waiting fire ends `cancelled` at once; a running one is flagged, and
    /// its node stops it when it learns.
    pub async fn cancel(&self, id: RunId, reason: &str) -> Result<Cancelled, ClusterError> {
        within(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "WITH before AS (SELECT id, status AS was FROM runs WHERE id = $1 FOR UPDATE),
                          changed AS (
                              UPDATE runs SET
                                  status = CASE WHEN runs.status = 'queued' THEN 'cancelled'
                                                ELSE runs.status END,
                                  error = CASE WHEN runs.status = 'queued' THEN $2
                                               ELSE runs.error END,
                                  pending_params = CASE WHEN runs.status = 'queued' THEN NULL
                                                        ELSE runs.pending_params END,
                                  cancel_requested = runs.status = 'running'
                              FROM before WHERE runs.id = before.id
                                  AND runs.status IN ('queued', 'running')
                              RETURNING runs.id)
                     SELECT before.was, runs.node FROM before JOIN runs ON runs.id = before.id",
                    &[&id, &reason],
                )
                .await
                .map_err(db)?;
            let Some(row) = row else {
                return Ok(Cancelled::Unknown);
            };
            let was: String = row.try_get("was").map_err(db)?;
            Ok(match was.as_str() {
                "queued" => Cancelled::BeforeStart,
                "running" => Cancelled::Requested {
                    node: row
                        .try_get::<_, Option<String>>("node")
                        .map_err(db)?
                        .unwrap_or_default(),
                },
                other => Cancelled::Over(
                    other
                        .parse()
                        .map_err(|e| ClusterError::Corrupt(format!("run {id}: {e}")))?,
                ),
            })
        })
        .await
    }

    /// `pacer pause` / `resume`, for every node: the paused job's scheduled and chained
    /// fires are claimed as [`super::Outcome::Paused`] and leave no record.
    pub async fn set_paused(&self, job: &str, paused: bool) -> Result<(), ClusterError> {
        within(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO job_state (job, paused) VALUES ($1, $2)
                     ON CONFLICT (job) DO UPDATE SET paused = excluded.paused",
                    &[&job, &paused],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    /// A job's schedule moved on without a record, or the job was loaded: its last fire is at
    /// least `at` (it never moves back), and its timing is recorded if given.
    pub async fn set_last_fire(
        &self,
        job: &str,
        at: i64,
        timing: Option<&str>,
    ) -> Result<(), ClusterError> {
        within(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO job_state (job, last_fire, timing) VALUES ($1, $2, $3)
                     ON CONFLICT (job) DO UPDATE
                         SET last_fire = greatest(coalesce(job_state.last_fire, excluded.last_fire),
                                                  excluded.last_fire),
                             timing = coalesce(excluded.timing, job_state.timing)",
                    &[&job, &at, &timing],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    /// The retry queued after run `id` failed (its fire key is `r:<id>`), if there is one.
    pub async fn successor(&self, id: RunId) -> Result<Option<RunId>, ClusterError> {
        within(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT id FROM runs WHERE fire_key = 'r:' || $1::bigint::text",
                    &[&id],
                )
                .await
                .map_err(db)?;
            row.map(|row| row.try_get("id").map_err(db)).transpose()
        })
        .await
    }
}

impl PgDatabase {
    /// Deletes up to `limit` of the runs due before `before_ms` that are over (their output
    /// goes with them); how many. Any node may prune: two at once delete different rows or
    /// none twice.
    pub async fn prune(&self, before_ms: i64, limit: u32) -> Result<u64, ClusterError> {
        within(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "DELETE FROM runs WHERE id IN (
                         SELECT id FROM runs WHERE scheduled_at < $1
                             AND status NOT IN ('queued', 'running')
                         ORDER BY scheduled_at LIMIT $2
                         FOR UPDATE SKIP LOCKED)",
                )
                .await
                .map_err(db)?;
            client
                .execute(&statement, &[&before_ms, &i64::from(limit)])
                .await
                .map_err(db)
        })
        .await
    }
}
