//! Declaring peers dead. A peer is dead once its beat counter has not moved for `lease_ttl`
//! as this node measures it on its own monotonic clock, counting only time during which this
//! node's own beats succeeded: a node that was itself stopped or cut off has not watched, and
//! a database outage stops every beat alike, so neither abandons anything.
//!
//! The dead node's runs become `abandoned` (ended at its last beat), and a job that asks for
//! it (`recover = "retry"`) gets one retry per run: its fire key `r:<id>` keeps two observers
//! that race from queueing two.

use std::collections::HashMap;
use std::time::Instant;

use deadpool_postgres::Transaction;

use super::node::PgNode;
use super::{ClusterError, db, lock, within};
use crate::store::{OrphanedRun, RunId};

/// What this node has seen of each peer's heartbeats.
#[derive(Debug, Default)]
pub(super) struct Observer {
    peers: HashMap<String, Seen>,
}

/// A peer's beat as last seen, and since when it has not moved.
#[derive(Debug, Clone, Copy)]
struct Seen {
    incarnation: i64,
    beat: i64,
    since: Instant,
}

/// The runs of a node that ended without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The node.
    pub node: String,
    /// The incarnation whose runs these were.
    pub incarnation: i64,
    /// Its runs, now `abandoned`.
    pub abandoned: Vec<OrphanedRun>,
    /// The retries queued for those whose job has `recover = "retry"`.
    pub retries: Vec<RunId>,
}

impl Reaped {
    pub(super) fn none(node: &str, incarnation: i64) -> Reaped {
        Reaped {
            node: node.to_owned(),
            incarnation,
            abandoned: Vec::new(),
            retries: Vec::new(),
        }
    }
}

impl PgNode {
    /// Looks at every peer's beat at `now` (this node's monotonic clock) and declares dead
    /// those silent for the lease; returns what was taken from each.
    pub async fn reap(&self, now: Instant) -> Result<Vec<Reaped>, ClusterError> {
        let Some(healthy_since) = self.health().healthy_since else {
            return Ok(Vec::new());
        };
        let rows = within(async {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT id, incarnation, beat FROM nodes
                     WHERE state IN ('alive', 'stopping') AND id <> $1",
                )
                .await
                .map_err(db)?;
            client.query(&statement, &[&self.node]).await.map_err(db)
        })
        .await?;
        let mut silent = Vec::new();
        {
            let mut observer = self
                .observer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut seen_now = HashMap::new();
            for row in rows {
                let id: String = row.try_get("id").map_err(db)?;
                let incarnation: i64 = row.try_get("incarnation").map_err(db)?;
                let beat: i64 = row.try_get("beat").map_err(db)?;
                let seen = match observer.peers.get(&id) {
                    Some(seen) if seen.incarnation == incarnation && seen.beat == beat => *seen,
                    _ => Seen {
                        incarnation,
                        beat,
                        since: now,
                    },
                };
                let watched_from = seen.since.max(healthy_since);
                if now.saturating_duration_since(watched_from) >= self.lease_ttl {
                    silent.push((id.clone(), seen));
                }
                seen_now.insert(id, seen);
            }
            observer.peers = seen_now;
        }
        if silent.is_empty() {
            return Ok(Vec::new());
        }
        within(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let locked = lock(&tx).await?;
            let mut reaped = Vec::new();
            for (peer, seen) in silent {
                // Only if it is still the same incarnation at the same beat: it may have
                // beaten since the read above, or another node may have reaped it.
                let row = tx
                    .query_opt(
                        "UPDATE nodes SET state = 'dead'
                         WHERE id = $1 AND incarnation = $2 AND beat = $3
                               AND state IN ('alive', 'stopping')
                         RETURNING last_beat_at",
                        &[&peer, &seen.incarnation, &seen.beat],
                    )
                    .await
                    .map_err(db)?;
                let Some(row) = row else { continue };
                let last_beat: i64 = row.try_get("last_beat_at").map_err(db)?;
                let reason = format!(
                    "its node `{peer}` stopped answering (no heartbeat for lease_ttl = {:?}) \
                     while it ran",
                    self.lease_ttl
                );
                tracing::warn!(node = %peer, "declared dead: no heartbeat for {:?}", self.lease_ttl);
                reaped.push(
                    abandon(&tx, &peer, seen.incarnation, last_beat, &reason, locked.now).await?,
                );
            }
            tx.commit().await.map_err(db)?;
            Ok(reaped)
        })
        .await
    }
}

/// Marks every run of `node`'s `incarnation` still `running` as `abandoned`, ended at
/// `last_alive` (or its start, if later), and queues one retry for each whose job asks for
/// it. Call under the cluster lock.
pub(super) async fn abandon(
    tx: &Transaction<'_>,
    node: &str,
    incarnation: i64,
    last_alive: i64,
    reason: &str,
    now: i64,
) -> Result<Reaped, ClusterError> {
    let rows = tx
        .query(
            "SELECT id, job, pid, pid_start, recover FROM runs
             WHERE node = $1 AND incarnation = $2 AND status = 'running' ORDER BY id",
            &[&node, &incarnation],
        )
        .await
        .map_err(db)?;
    let mut abandoned = Vec::with_capacity(rows.len());
    let mut recover = Vec::new();
    for row in rows {
        let id: RunId = row.try_get("id").map_err(db)?;
        let pid: Option<i32> = row.try_get("pid").map_err(db)?;
        let start: Option<i64> = row.try_get("pid_start").map_err(db)?;
        if row.try_get::<_, bool>("recover").map_err(db)? {
            recover.push(id);
        }
        abandoned.push(OrphanedRun {
            id,
            job: row.try_get("job").map_err(db)?,
            process: pid.zip(start.and_then(|s| u64::try_from(s).ok())),
        });
    }
    let ids: Vec<RunId> = abandoned.iter().map(|run| run.id).collect();
    tx.execute(
        "UPDATE runs SET status = 'abandoned', error = $2, cancel_requested = false,
                         finished_at = greatest(coalesce(started_at, $3), $3)
         WHERE id = ANY($1) AND status = 'running'",
        &[&ids, &reason, &last_alive],
    )
    .await
    .map_err(db)?;
    let retries = if recover.is_empty() {
        Vec::new()
    } else {
        tx.query(
            "INSERT INTO runs (fire_key, job, plugin, pool, priority, digest, recover, status,
                               trigger, attempt, scheduled_at, queued_at, claimed_at, error,
                               params, pending_params)
             SELECT 'r:' || id, job, plugin, pool, priority, digest, recover, 'queued', 'retry',
                    attempt + 1, $2, $2, $2,
                    'a retry of run ' || id || ', abandoned when its node died (recover = \"retry\")',
                    params, pending_params
             FROM runs WHERE id = ANY($1) ORDER BY id
             ON CONFLICT (fire_key) DO NOTHING
             RETURNING id",
            &[&recover, &now],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()
        .map_err(db)?
    };
    Ok(Reaped {
        node: node.to_owned(),
        incarnation,
        abandoned,
        retries,
    })
}
