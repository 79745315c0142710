//! The cluster backend: several `pacerd` nodes share one PostgreSQL database
//! (`docs/cluster.md`).
//!
//! There is no leader. Every decision that spans nodes (claiming fires, admitting runs,
//! declaring a node dead) is one short transaction that first takes the single row lock
//! `SELECT ... FROM cluster WHERE id = 1 FOR UPDATE` (with a `lock_timeout`), so decisions
//! are serialized across the cluster; unique fire keys are the backstop. Liveness comes from
//! heartbeat counters observed on each node's own monotonic clock, never from comparing
//! clocks, and every write to a node's runs is fenced by the node's incarnation.
//!
//! [`PgDatabase`] is the shared part (connection pool, migrations, reads for the CLI, actions
//! on any run); [`PgNode`] is one joined node and the protocol it speaks.

mod admit;
mod browse;
mod claim;
mod history;
mod listen;
mod node;
mod reap;
mod runs;
mod schema;
#[cfg(test)]
mod tests;
mod tls;

use std::time::Duration;

use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

pub use admit::{AdmittedRun, Room};
pub use claim::{ClaimKey, Claimed, Outcome, Proposal, Stop};
pub use history::{ClusterRun, ClusterRunDetail, NodeInfo, PoolLoad};
pub use node::{Beat, JoinRequest, Joined, PgNode};
pub use reap::Reaped;
pub use runs::{Cancelled, FinishOutcome};

use crate::config::DatabaseUrl;

/// How long a decision waits for the cluster lock before it gives up (and is tried again).
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// A transaction left idle this long (its node stopped or was cut off while holding the lock)
/// is ended by the server, so the lock is not held hostage.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);
/// The longest any one call may take before it fails as a time-out.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster backend failure, saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No connection could be made.
    #[error("cannot reach the cluster's database {target}: {cause}")]
    Connect {
        /// `user@host:port/database`.
        target: String,
        /// What failed.
        cause: String,
    },
    /// TLS could not be set up.
    #[error("TLS to the cluster's database: {0}")]
    Tls(String),
    /// The schema is newer than this version knows.
    #[error(
        "the cluster's database has schema version {found}, newer than this pacerd knows \
         ({known}): upgrade pacerd on this node"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// A live process holds the node id.
    #[error(
        "node id `{node}` is in use by a live pacerd on {host} (pid {pid}; its last heartbeat \
         was {ago_ms} ms ago): stop that one, or give this node another node_id in [cluster]"
    )]
    NodeIdInUse {
        /// The node id.
        node: String,
        /// The holder's host.
        host: String,
        /// The holder's pid.
        pid: i32,
        /// Since its last heartbeat, on the database clock.
        ago_ms: i64,
    },
    /// The node was declared dead (or replaced): it must stop its runs and join again.
    #[error(
        "node `{node}` (incarnation {incarnation}) is no longer a live member of the cluster: \
         its runs were handed over; it must stop them and join again"
    )]
    Fenced {
        /// The node id.
        node: String,
        /// The incarnation that was fenced.
        incarnation: i64,
    },
    /// The cluster lock stayed taken.
    #[error("the cluster lock stayed taken for {0:?} (another node holds it); try again")]
    LockTimeout(Duration),
    /// The database did not answer in time.
    #[error("the cluster's database did not answer within {0:?}")]
    Timeout(Duration),
    /// A query failed.
    #[error("cluster database error: {0}")]
    Database(String),
    /// A stored value does not parse.
    #[error("unexpected value in the cluster's database: {0}")]
    Corrupt(String),
    /// The server turned the connection down for a reason that waiting does not mend.
    #[error("the cluster's database {target} refused this node: {cause}; {hint}")]
    Refused {
        /// `user@host:port/database`.
        target: String,
        /// The server's words.
        cause: String,
        /// What to check.
        hint: &'static str,
    },
}

impl ClusterError {
    /// Whether trying again later may succeed (the database or the lock is busy or away).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClusterError::Connect { .. }
                | ClusterError::LockTimeout(_)
                | ClusterError::Timeout(_)
                | ClusterError::Database(_)
        )
    }
}

/// A query error, keeping the server's words (and its detail) or the connection's.
#[allow(
    clippy::needless_pass_by_value,
    reason = "taken by value to be written `.map_err(db)`"
)]
fn db(error: tokio_postgres::Error) -> ClusterError {
    if let Some(server) = error.as_db_error() {
        if *server.code() == SqlState::LOCK_NOT_AVAILABLE {
            return ClusterError::LockTimeout(LOCK_TIMEOUT);
        }
        let detail = server
            .detail()
            .map_or_else(String::new, |detail| format!(" ({detail})"));
        return ClusterError::Database(format!("{}{detail}", server.message()));
    }
    // The connection's own words are often in the source: a TLS or I/O error's cause.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    ClusterError::Database(text)
}

/// Runs `call`, failing it after [`CALL_TIMEOUT`].
async fn within<T>(call: impl Future<Output = Result<T, ClusterError>>) -> Result<T, ClusterError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or(Err(ClusterError::Timeout(CALL_TIMEOUT)))
}

/// The shared database: a pool of connections, and what any node or the CLI may do.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pool: Pool,
    target: String,
    url: DatabaseUrl,
}

/// What a transaction that holds the cluster lock knows.
#[derive(Debug, Clone, Copy)]
struct Locked {
    /// The database clock once the lock was taken, Unix ms.
    now: i64,
    /// The cluster-wide cap on runs in flight.
    max_concurrency: i64,
    /// The cluster-wide bound on fires waiting.
    max_queue: i64,
}

impl PgDatabase {
    /// A pool of at most `connections` connections to `url`; nothing is connected yet.
    pub fn connect(url: &DatabaseUrl, connections: usize) -> Result<PgDatabase, ClusterError> {
        let mut config = url.postgres.clone();
        let session = format!(
            "-c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            LOCK_TIMEOUT.as_millis(),
            IDLE_IN_TRANSACTION.as_millis()
        );
        let options = match config.get_options() {
            Some(own) => format!("{own} {session}"),
            None => session,
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("pacerd");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A connection through a dead link fails in seconds instead of the kernel's minutes.
        config.tcp_user_timeout(CALL_TIMEOUT);
        let manager = Manager::from_config(
            config,
            tls::connector(url)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| ClusterError::Connect {
                target: url.to_string(),
                cause: e.to_string(),
            })?;
        Ok(PgDatabase {
            pool,
            target: url.to_string(),
            url: url.clone(),
        })
    }

    /// Brings the schema up to date (once, however many nodes start together).
    pub async fn migrate(&self) -> Result<(), ClusterError> {
        within(async {
            let mut client = self.client().await?;
            schema::migrate(&mut client).await
        })
        .await
    }

    /// Whether a node ever made the tables (the CLI may run before any node started).
    pub async fn has_schema(&self) -> Result<bool, ClusterError> {
        within(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT to_regclass('runs') IS NOT NULL AS made", &[])
                .await
                .map_err(db)?;
            row.try_get("made").map_err(db)
        })
        .await
    }

    /// `user@host:port/database`, for `pacer status` and messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The URL it was made from (a node opens its heartbeat connection with it).
    fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    async fn client(&self) -> Result<Client, ClusterError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => {
                let code = e.as_db_error().map(|server| server.code().clone());
                let hint = match code {
                    Some(
                        SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    ) => Some(
                        "check the user and password in the URL, and pg_hba.conf on the server",
                    ),
                    Some(SqlState::INVALID_CATALOG_NAME) => Some(
                        "create the database (docs/cluster.md, set-up) or fix its name in the URL",
                    ),
                    Some(SqlState::INSUFFICIENT_PRIVILEGE) => {
                        Some("grant the user the right to connect to the database")
                    }
                    _ => None,
                };
                match hint {
                    Some(hint) => ClusterError::Refused {
                        target: self.target.clone(),
                        cause: db(e).to_string(),
                        hint,
                    },
                    None => ClusterError::Connect {
                        target: self.target.clone(),
                        cause: db(e).to_string(),
                    },
                }
            }
            other => ClusterError::Connect {
                target: self.target.clone(),
                cause: other.to_string(),
            },
        })
    }
}

/// Takes the cluster lock in `tx` and reads the database clock after it.
async fn lock(tx: &deadpool_postgres::Transaction<'_>) -> Result<Locked, ClusterError> {
    let caps = tx
        .prepare_cached("SELECT max_concurrency, max_queue FROM cluster WHERE id = 1 FOR UPDATE")
        .await
        .map_err(db)?;
    let row = tx.query_one(&caps, &[]).await.map_err(db)?;
    let now = tx
        .prepare_cached("SELECT pacer_now_ms() AS now")
        .await
        .map_err(db)?;
    let clock = tx.query_one(&now, &[]).await.map_err(db)?;
    Ok(Locked {
        now: clock.try_get("now").map_err(db)?,
        max_concurrency: i64::from(row.try_get::<_, i32>("max_concurrency").map_err(db)?),
        max_queue: i64::from(row.try_get::<_, i32>("max_queue").map_err(db)?),
    })
}

/// A count or id as PostgreSQL's `integer`.
fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
