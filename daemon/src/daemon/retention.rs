//! `history_retention`: old runs are deleted in small batches in the background, at start and
//! then hourly, so the database does not grow without bound and no write waits long behind a
//! big delete. In a cluster every node prunes the shared database the same way (its batches
//! skip rows another node is deleting).

use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use crate::store::postgres::PgDatabase;
use crate::time::{Clock, to_ms};

/// The history old runs are deleted from.
pub enum Pruned {
    /// This daemon's SQLite file.
    Local(Arc<dyn Store>),
    /// A cluster's shared database.
    Cluster(Box<PgDatabase>),
}

impl Pruned {
    async fn prune(&self, before_ms: i64) -> Result<u64, String> {
        match self {
            Pruned::Local(store) => store
                .prune(before_ms, BATCH)
                .await
                .map_err(|e| e.to_string()),
            Pruned::Cluster(db) => db.prune(before_ms, BATCH).await.map_err(|e| e.to_string()),
        }
    }

    /// Gives the freed pages back to the file (SQLite's WAL would otherwise keep them).
    async fn settle(&self) {
        if let Pruned::Local(store) = self
            && let Err(e) = store.checkpoint().await
        {
            tracing::warn!("cannot checkpoint after pruning: {e}");
        }
    }
}

/// Runs deleted per transaction.
const BATCH: u32 = 1_000;

/// How often old runs are looked for.
const EVERY: Duration = Duration::from_secs(3_600);

/// Prunes forever; the daemon aborts this task when it stops.
pub async fn prune_forever(history: Pruned, retention: Duration, clock: Arc<dyn Clock>) {
    loop {
        let cutoff =
            to_ms(clock.now()) - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let mut pruned = 0;
        loop {
            match history.prune(cutoff).await {
                Ok(deleted) => {
                    pruned += deleted;
                    if deleted < u64::from(BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot prune old runs: {e}");
                    break;
                }
            }
        }
        if pruned > 0 {
            history.settle().await;
            tracing::info!(runs = pruned, "pruned runs older than history_retention");
        }
        tokio::time::sleep(EVERY).await;
    }
}
