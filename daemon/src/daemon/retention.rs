//! `history_retention`: old runs are deleted in small batches in the background, at start and
//! then hourly, so the database does not grow without bound and no write waits long behind a
//! big delete.

use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use crate::time::{Clock, to_ms};

/// Runs deleted per transaction.
const BATCH: u32 = 1_000;

/// How often old runs are looked for.
const EVERY: Duration = Duration::from_secs(3_600);

/// Prunes forever; the daemon aborts this task when it stops.
pub async fn prune_forever(store: Arc<dyn Store>, retention: Duration, clock: Arc<dyn Clock>) {
    loop {
        let cutoff =
            to_ms(clock.now()) - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        let mut pruned = 0;
        loop {
            match store.prune(cutoff, BATCH).await {
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
            if let Err(e) = store.checkpoint().await {
                tracing::warn!("cannot checkpoint after pruning: {e}");
            }
            tracing::info!(runs = pruned, "pruned runs older than history_retention");
        }
        tokio::time::sleep(EVERY).await;
    }
}
