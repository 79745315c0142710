//! Admission across the cluster: a node with free slots takes queue heads (priority, then due
//! time, then age) among the fires it can run, under the global and pool caps counted over
//! every node's running runs and the pools' token buckets refilled on the database clock.
//! The runs it takes are `running` under its node id, incarnation and a claim token before
//! the transaction commits, so no other node can count them free or take them.

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::claim::release_held;
use super::node::PgNode;
use super::{ClusterError, Locked, db, lock, within};
use crate::model::Trigger;
use crate::store::RunId;

/// What a node can take now.
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// Runs it may start now: its free slots under `node_max_concurrency`, and none while
    /// its pressure thresholds hold new starts.
    pub slots: u32,
    /// The plugins it has.
    pub plugins: Vec<String>,
}

/// A run this node took: everything needed to start it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmittedRun {
    /// Its record.
    pub id: RunId,
    /// Its fire key.
    pub fire_key: String,
    /// The job.
    pub job: String,
    /// Why it fires.
    pub trigger: Trigger,
    /// Its attempt.
    pub attempt: u32,
    /// Its due instant, Unix ms.
    pub scheduled_at: i64,
    /// Its own params (manual, chained); `None`: the job's.
    pub params: Option<serde_json::Value>,
    /// How long it waited since it was claimed, on the database clock.
    pub queue_ms: i64,
    /// Proves this admission in later writes.
    pub claim_token: i64,
}

/// A pool's token bucket, refilled to the lock's instant.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: Option<f64>,
    tokens: f64,
}

impl PgNode {
    /// Takes at most `room.slots` queued fires this node can run, best first.
    /// [`ClusterError::Fenced`] if this node was declared dead.
    pub async fn admit(&self, room: &Room) -> Result<Vec<AdmittedRun>, ClusterError> {
        if room.slots == 0 {
            return Ok(Vec::new());
        }
        within(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let locked = lock(&tx).await?;
            if self.fence(&tx).await? != "alive" {
                return Ok(Vec::new());
            }
            release_held(&tx).await?;
            let admitted = self.take(&tx, locked, room).await?;
            tx.commit().await.map_err(db)?;
            Ok(admitted)
        })
        .await
    }

    async fn take(
        &self,
        tx: &Transaction<'_>,
        locked: Locked,
        room: &Room,
    ) -> Result<Vec<AdmittedRun>, ClusterError> {
        let running = tx
            .prepare_cached(
                "SELECT pool, count(*) AS running FROM runs WHERE status = 'running' GROUP BY pool",
            )
            .await
            .map_err(db)?;
        let mut in_flight: HashMap<String, i64> = HashMap::new();
        for row in tx.query(&running, &[]).await.map_err(db)? {
            in_flight.insert(
                row.try_get("pool").map_err(db)?,
                row.try_get("running").map_err(db)?,
            );
        }
        let global_room = locked.max_concurrency - in_flight.values().sum::<i64>();
        let slots = global_room.min(i64::from(room.slots));
        if slots <= 0 {
            return Ok(Vec::new());
        }
        let pools = tx
            .prepare_cached("SELECT name, max_concurrency, rate, tokens, refilled_at FROM pools")
            .await
            .map_err(db)?;
        let mut names = Vec::new();
        let mut rooms = Vec::new();
        let mut buckets: HashMap<String, Bucket> = HashMap::new();
        for row in tx.query(&pools, &[]).await.map_err(db)? {
            let name: String = row.try_get("name").map_err(db)?;
            let cap: Option<i32> = row.try_get("max_concurrency").map_err(db)?;
            let rate: Option<f64> = row.try_get("rate").map_err(db)?;
            let tokens: f64 = row.try_get("tokens").map_err(db)?;
            let refilled_at: i64 = row.try_get("refilled_at").map_err(db)?;
            let tokens = match rate {
                Some(rate) => {
                    let elapsed = (locked.now - refilled_at).max(0) as f64;
                    (tokens + elapsed * rate / 1000.0).min(rate.max(1.0))
                }
                None => tokens,
            };
            let running = in_flight.get(&name).copied().unwrap_or(0);
            let mut free = cap.map_or(locked.max_concurrency, i64::from) - running;
            if rate.is_some() {
                free = free.min(tokens.floor() as i64);
            }
            if free > 0 {
                names.push(name.clone());
                rooms.push(free);
            }
            buckets.insert(name, Bucket { rate, tokens });
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let candidates = tx
            .prepare_cached(
                "SELECT c.id FROM (
                     SELECT r.id, r.pool, r.priority, r.scheduled_at,
                            row_number() OVER (PARTITION BY r.pool
                                ORDER BY r.priority DESC, r.scheduled_at, r.id) AS rank
                     FROM runs AS r
                     WHERE r.status = 'queued' AND NOT r.held
                       AND (r.ready_at IS NULL OR r.ready_at <= $1)
                       AND r.plugin = ANY($2)
                       AND ($3::text[] IS NULL OR r.pool = ANY($3))
                       AND (r.pinned_to IS NULL OR r.pinned_to = $4)
                       AND EXISTS (SELECT 1 FROM node_jobs AS mine
                                   WHERE mine.node = $4 AND mine.job = r.job
                                         AND mine.digest = r.digest)
                 ) AS c
                 JOIN unnest($5::text[], $6::bigint[]) AS p (pool, room) ON p.pool = c.pool
                 WHERE c.rank <= p.room
                 ORDER BY c.priority DESC, c.scheduled_at, c.id
                 LIMIT $7",
            )
            .await
            .map_err(db)?;
        let ids: Vec<RunId> = tx
            .query(
                &candidates,
                &[
                    &locked.now,
                    &room.plugins,
                    &self.pools,
                    &self.node,
                    &names,
                    &rooms,
                    &slots,
                ],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(db)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mark = tx
            .prepare_cached(
                "UPDATE runs SET status = 'running', node = $2, incarnation = $3,
                                 claim_token = nextval('claim_tokens'),
                                 queue_ms = greatest($4 - claimed_at, 0), error = NULL
                 WHERE id = ANY($1) AND status = 'queued'
                 RETURNING id, fire_key, job, pool, trigger, attempt, scheduled_at,
                           pending_params, queue_ms, claim_token",
            )
            .await
            .map_err(db)?;
        let rows = tx
            .query(&mark, &[&ids, &self.node, &self.incarnation, &locked.now])
            .await
            .map_err(db)?;
        let mut taken: HashMap<String, f64> = HashMap::new();
        let mut admitted = Vec::with_capacity(rows.len());
        for row in rows {
            let id: RunId = row.try_get("id").map_err(db)?;
            let pool: String = row.try_get("pool").map_err(db)?;
            *taken.entry(pool).or_default() += 1.0;
            let trigger: String = row.try_get("trigger").map_err(db)?;
            let params: Option<String> = row.try_get("pending_params").map_err(db)?;
            admitted.push(AdmittedRun {
                id,
                fire_key: row.try_get("fire_key").map_err(db)?,
                job: row.try_get("job").map_err(db)?,
                trigger: trigger
                    .parse()
                    .map_err(|e| ClusterError::Corrupt(format!("run {id}: {e}")))?,
                attempt: u32::try_from(row.try_get::<_, i32>("attempt").map_err(db)?).unwrap_or(1),
                scheduled_at: row.try_get("scheduled_at").map_err(db)?,
                params: params
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| ClusterError::Corrupt(format!("the params of run {id}: {e}")))?,
                queue_ms: row.try_get("queue_ms").map_err(db)?,
                claim_token: row.try_get("claim_token").map_err(db)?,
            });
        }
        admitted.sort_by_key(|run| ids.iter().position(|id| *id == run.id));
        let (spent_pools, spent_tokens): (Vec<String>, Vec<f64>) = buckets
            .into_iter()
            .filter(|(_, bucket)| bucket.rate.is_some())
            .map(|(name, bucket)| {
                let used = taken.get(&name).copied().unwrap_or(0.0);
                (name, bucket.tokens - used)
            })
            .unzip();
        if !spent_pools.is_empty() {
            let refill = tx
                .prepare_cached(
                    "UPDATE pools SET tokens = t.tokens, refilled_at = greatest(refilled_at, $3)
                     FROM unnest($1::text[], $2::double precision[]) AS t (name, tokens)
                     WHERE pools.name = t.name",
                )
                .await
                .map_err(db)?;
            tx.execute(&refill, &[&spent_pools, &spent_tokens, &locked.now])
                .await
                .map_err(db)?;
        }
        Ok(admitted)
    }
}
