//! Where the daemon keeps its records: its own SQLite history, or, with `[cluster]`, the
//! PostgreSQL database it shares with other nodes. Opening it also recovers what a previous
//! process left behind.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::recovery;
use super::runner::{RecordFuture, RunRecords};
use crate::admission::Limits;
use crate::config::{ClusterSettings, Config};
use crate::engine::{NodeIdentity, Resume};
use crate::plugins::{PluginState, Registry};
use crate::store::postgres::{ClusterError, FinishOutcome, JoinRequest, PgDatabase, PgNode};
use crate::store::sqlite::SqliteStore;
use crate::store::{Finish, RunId, StartRun, Store};
use crate::time::{Clock, to_ms};

/// The records' home.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One daemon's SQLite history.
    Local(SqliteStore),
    /// A node of a cluster.
    Cluster(Arc<ClusterNode>),
}

/// A joined node and its settings.
#[derive(Debug)]
pub struct ClusterNode {
    /// The joined node: every write to its runs is fenced by its incarnation.
    pub node: PgNode,
    /// `[cluster]`.
    pub settings: ClusterSettings,
    /// The order of this node's claims.
    pub claims: ClaimOrder,
    /// Set once the node learns it is fenced (declared dead, or out of reach for too long).
    fenced: watch::Sender<bool>,
}

impl ClusterNode {
    /// The shared database.
    pub fn db(&self) -> &PgDatabase {
        self.node.database()
    }

    /// From now on nothing this node writes about its runs will land: stop trying.
    pub fn fence(&self) {
        self.fenced.send_replace(true);
    }
}

/// Claims (and the publishing of a reloaded config) go to the database one after the other,
/// in the order the engine made them. A job's
/// schedule moves forward by compare-and-set on its last fire, so a later fire claimed first
/// (say, when the database comes back and retries race) would make the earlier one look
/// claimed by another node, and it would be lost.
#[derive(Debug)]
pub struct ClaimOrder {
    next: AtomicU64,
    turn: watch::Sender<u64>,
}

impl ClaimOrder {
    fn new() -> ClaimOrder {
        ClaimOrder {
            next: AtomicU64::new(0),
            turn: watch::Sender::new(0),
        }
    }

    /// A place in the line, taken when the claim is made (before its task is spawned).
    pub fn place(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until the claims before `place` are done.
    pub async fn wait_turn(&self, place: u64) {
        let mut turn = self.turn.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = turn.wait_for(|at| *at >= place).await;
    }

    /// The claim at `place` is done: the next may go.
    pub fn done(&self, place: u64) {
        self.turn.send_replace(place + 1);
    }
}

/// What opening the backend found.
#[derive(Debug)]
pub struct Opened {
    /// The backend.
    pub backend: Backend,
    /// The history's state for the engine.
    pub resume: Resume,
    /// This node, in a cluster.
    pub node: Option<NodeIdentity>,
}

impl Backend {
    /// Takes the backend `config` names, without waiting for anything: what a previous
    /// process left is recovered by [`Taken::open`], while the control socket already answers.
    pub fn take(config: &Config) -> anyhow::Result<Taken> {
        match &config.cluster {
            None => {
                let sqlite = SqliteStore::open(&config.daemon.database)?;
                crate::store::sqlite::explain_bus_errors(&config.daemon.database)
                    .context("cannot handle SIGBUS")?;
                Ok(Taken::Local(sqlite))
            }
            Some(settings) => Ok(Taken::Cluster(Box::new(settings.clone()))),
        }
    }

    /// Where runs record their start and end.
    pub fn records(&self) -> Arc<dyn RunRecords> {
        match self {
            Backend::Local(store) => Arc::new(store.clone()),
            Backend::Cluster(node) => Arc::new(ClusterRecords(Arc::clone(node))),
        }
    }
}

/// The history taken for this daemon, before anything is read from it or written to it: a
/// second pacerd on the same SQLite file is refused when it is taken, at once.
pub enum Taken {
    /// The SQLite file, opened and locked.
    Local(SqliteStore),
    /// A cluster's database, reached when opened.
    Cluster(Box<ClusterSettings>),
}

impl Taken {
    /// What the history holds for the start: the runs a crash left are recorded `abandoned`
    /// (which waits while the history cannot be written), then the state to resume from.
    pub async fn open(
        self,
        config: &Config,
        registry: &Registry,
        clock: &Arc<dyn Clock>,
    ) -> anyhow::Result<Opened> {
        match self {
            Taken::Local(sqlite) => open_local(sqlite, clock).await,
            Taken::Cluster(settings) => open_cluster(config, &settings, registry).await,
        }
    }
}

async fn open_local(sqlite: SqliteStore, clock: &Arc<dyn Clock>) -> anyhow::Result<Opened> {
    let last_alive = sqlite
        .previous_alive()
        .unwrap_or_else(|| to_ms(clock.now()));
    sqlite.mark_alive();
    let orphans = sqlite
        .abandon_orphans(
            last_alive,
            "pacerd stopped while this run was going (found at the next start; it ended at \
             pacerd's last sign of life)"
                .to_owned(),
        )
        .await?;
    if !orphans.is_empty() {
        let killed = recovery::kill_leftovers(&orphans);
        tracing::error!(
            runs = orphans.len(),
            processes_killed = killed,
            "runs left by a previous pacerd are recorded as abandoned"
        );
    }
    let resume = Resume {
        states: sqlite.job_states().await?,
        last_status: sqlite.last_statuses().await?,
        queued: sqlite.queued_fires().await?,
    };
    Ok(Opened {
        backend: Backend::Local(sqlite),
        resume,
        node: None,
    })
}

async fn open_cluster(
    config: &Config,
    settings: &ClusterSettings,
    registry: &Registry,
) -> anyhow::Result<Opened> {
    let db = PgDatabase::connect(&settings.database, 8)?;
    // A node that starts while the database is away (both rebooting, a failover) waits for it
    // rather than exiting: systemd would soon give up restarting a unit that fails at once.
    let mut delay = Duration::from_millis(500);
    loop {
        match db.migrate().await {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!("waiting for the cluster's database (next try in {delay:?}): {e}");
                super::notify::waiting(&format!("waiting for the cluster's database: {e}"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(DATABASE_WAIT_MAX);
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context("cannot bring the cluster's database up to date")
                );
            }
        }
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default();
    let host = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plugins = registry
        .all()
        .iter()
        .filter(|info| info.state == PluginState::Ok)
        .filter_map(|info| info.name.clone())
        .collect();
    let request = JoinRequest {
        node: settings.node_id.clone(),
        host,
        pid: std::process::id(),
        boot_id: boot_id.clone(),
        plugins,
        pools: settings.pools.clone(),
        max_concurrency: settings.node_max_concurrency,
        jobs: digests(config),
        limits: Limits::of(config),
        lease_ttl: settings.lease_ttl,
        heartbeat: settings.heartbeat,
    };
    let joined = PgNode::join(&db, request)
        .await
        .with_context(|| format!("cannot join the cluster as node `{}`", settings.node_id))?;
    if let Some(previous) = &joined.previous {
        let killed = recovery::kill_leftovers(&previous.abandoned);
        tracing::error!(
            runs = previous.abandoned.len(),
            processes_killed = killed,
            "runs left by this node's previous process are recorded as abandoned"
        );
    }
    let node = NodeIdentity {
        node: settings.node_id.clone(),
        incarnation: joined.node.incarnation(),
        boot_id,
        slots: settings
            .node_max_concurrency
            .unwrap_or(config.daemon.max_concurrency),
        max_clock_skew_ms: i64::try_from(settings.max_clock_skew.as_millis()).unwrap_or(i64::MAX),
        database: db.target().to_owned(),
    };
    let resume = Resume {
        states: db.job_states().await?,
        last_status: db.last_statuses().await?,
        queued: Vec::new(),
    };
    tracing::info!(
        node = %node.node,
        incarnation = node.incarnation,
        database = %node.database,
        "joined the cluster"
    );
    Ok(Opened {
        backend: Backend::Cluster(Arc::new(ClusterNode {
            node: joined.node,
            settings: settings.clone(),
            claims: ClaimOrder::new(),
            fenced: watch::Sender::new(false),
        })),
        resume,
        node: Some(node),
    })
}

/// Each job's name and digest, as the cluster compares them.
pub fn digests(config: &Config) -> Vec<(String, String)> {
    config
        .jobs
        .iter()
        .map(|job| (job.name.clone(), job.digest()))
        .collect()
}

impl RunRecords for SqliteStore {
    fn start_run(&self, start: StartRun) -> RecordFuture {
        let started = self.hold_start_run(start);
        Box::pin(async move { started.await.map_err(|e| e.to_string()) })
    }

    fn withdraw_start(&self, id: RunId) -> bool {
        SqliteStore::withdraw_start(self, id);
        true
    }

    fn finish_run(&self, finish: Finish) -> RecordFuture {
        let finished = self.hold_finish_run(finish);
        Box::pin(async move { finished.await.map_err(|e| e.to_string()) })
    }

    fn send(&self) {
        self.send_held();
    }
}

/// A cluster node's run records: a write that fails for a reason that may pass (the database
/// restarting, a blip shorter than the lease) is tried again until it lands or the node is
/// declared dead, so no run of a live node stays `running` for want of a write.
#[derive(Debug)]
struct ClusterRecords(Arc<ClusterNode>);

/// The longest pause between attempts to reach the cluster's database at start.
const DATABASE_WAIT_MAX: Duration = Duration::from_secs(5);

/// Pauses between attempts at a run's write in a cluster.
const RETRY_DELAYS_MS: [u64; 6] = [100, 200, 500, 1_000, 2_000, 5_000];

/// Tries `attempt` until it lands or fails for good, or until the node is fenced: a fenced
/// node's writes would not land, and its peers abandon its runs.
async fn retried<T, F, Fut>(
    cluster: &ClusterNode,
    what: &str,
    mut attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClusterError>>,
{
    let mut delays = RETRY_DELAYS_MS.iter().chain(std::iter::repeat(&5_000));
    let mut fenced = cluster.fenced.subscribe();
    let fenced_error = || ClusterError::Fenced {
        node: cluster.settings.node_id.clone(),
        incarnation: cluster.node.incarnation(),
    };
    loop {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            _ = fenced.wait_for(|fenced| *fenced) => return Err(fenced_error()),
        };
        match outcome {
            Err(e) if e.is_transient() => {
                tracing::warn!("cannot record {what} in the cluster's database, trying again: {e}");
                let delay = delays.next().copied().unwrap_or(5_000);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    _ = fenced.wait_for(|fenced| *fenced) => return Err(fenced_error()),
                }
            }
            other => return other,
        }
    }
}

impl RunRecords for ClusterRecords {
    fn start_run(&self, start: StartRun) -> RecordFuture {
        let cluster = Arc::clone(&self.0);
        Box::pin(async move {
            retried(&cluster, "a run's start", || cluster.node.start_run(&start))
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// A cluster's run is `running` from its admission (the database admits it); its start
    /// only adds the process, so there is nothing to take back.
    fn withdraw_start(&self, _id: RunId) -> bool {
        false
    }

    fn finish_run(&self, finish: Finish) -> RecordFuture {
        let cluster = Arc::clone(&self.0);
        Box::pin(async move {
            match retried(&cluster, "a run's end", || cluster.node.finish_run(&finish)).await {
                Ok(FinishOutcome::Written) => Ok(()),
                Ok(FinishOutcome::Fenced) => Err(format!(
                    "run {} ended as {}, but this node was declared dead meanwhile, so its end \
                     is not written (its record says abandoned)",
                    finish.id, finish.status
                )),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// Each write goes to the database when its future is first polled: a node's writes are
    /// fenced one by one, so there is nothing to gather.
    fn send(&self) {}
}
