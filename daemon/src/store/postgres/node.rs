//! A node's membership: joining (one live process per node id), heartbeats on a connection
//! of their own, publishing its config, and leaving cleanly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;

use super::reap::{Observer, Reaped, abandon};
use super::{ClusterError, Locked, PgDatabase, db, int, lock, within};
use crate::admission::Limits;
use crate::store::RunId;

/// What a node tells the cluster about itself when it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// `node_id`.
    pub node: String,
    /// The host name, so a refusal can say where the other holder runs.
    pub host: String,
    /// This process.
    pub pid: u32,
    /// The kernel's boot id: a holder on this host from another boot is gone.
    pub boot_id: String,
    /// The plugins this node has.
    pub plugins: Vec<String>,
    /// The pools it takes runs from; `None`: all.
    pub pools: Option<Vec<String>>,
    /// `node_max_concurrency`.
    pub max_concurrency: Option<u32>,
    /// Each job's name and digest ([`crate::config::Job::digest`]).
    pub jobs: Vec<(String, String)>,
    /// The caps this node's config sets; the cluster follows the last config loaded.
    pub limits: Limits,
    /// `lease_ttl`.
    pub lease_ttl: Duration,
    /// `heartbeat`.
    pub heartbeat: Duration,
}

/// A node that joined.
#[derive(Debug)]
pub struct Joined {
    /// The node.
    pub node: PgNode,
    /// What its previous incarnation left running (a process of this node id that died
    /// without leaving): abandoned now, with the retries of those whose job asks for one.
    pub previous: Option<Reaped>,
}

/// What an acknowledged heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The database clock, Unix ms.
    pub db_now: i64,
    /// This node's wall clock minus the database's, ms (measured at the midpoint of the call).
    pub offset_ms: i64,
    /// This node's runs whose cancel was asked for (from any node).
    pub cancel: Vec<RunId>,
}

/// One joined node: its identity (node id and incarnation) and the protocol it speaks. Every
/// write to its runs is fenced by its incarnation, so once it is declared dead nothing it
/// sends lands.
#[derive(Debug)]
pub struct PgNode {
    pub(super) db: PgDatabase,
    /// Heartbeats go through a connection of their own, so a busy pool never delays them.
    beats: PgDatabase,
    pub(super) node: String,
    pub(super) incarnation: i64,
    pub(super) pools: Option<Vec<String>>,
    pub(super) lease_ttl: Duration,
    heartbeat: Duration,
    /// Not held across an await.
    pub(super) health: Mutex<Health>,
    pub(super) observer: Mutex<Observer>,
}

/// This node's own heartbeats, as it saw them succeed.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// The beat counter as this node last wrote it.
    beat: i64,
    /// When a beat last succeeded.
    last_ok: Option<Instant>,
    /// Since when beats have succeeded without a gap: time before does not count against
    /// peers, since this node could not have seen them beat.
    pub(super) healthy_since: Option<Instant>,
    /// The last measured offset.
    offset_ms: i64,
    /// The last beat failed after it may have reached the database (a connection cut while
    /// the answer came back): its update may have landed, so the counter there may be one
    /// ahead, which the next beat accepts rather than take for having been declared dead.
    unsure: bool,
}

impl PgNode {
    /// Joins the cluster as `request.node`: refused while a live process holds that node id
    /// (its heartbeat moved within the lease), else a new incarnation. Publishes the node's
    /// jobs and caps.
    pub async fn join(db: &PgDatabase, request: JoinRequest) -> Result<Joined, ClusterError> {
        let beats = PgDatabase::connect(db.url(), 1)?;
        let (incarnation, previous) = within(join(db, &request)).await?;
        let now = Instant::now();
        let node = PgNode {
            db: db.clone(),
            beats,
            node: request.node,
            incarnation,
            pools: request.pools,
            lease_ttl: request.lease_ttl,
            heartbeat: request.heartbeat,
            // Joining was a successful write: the node counts as healthy from now on.
            health: Mutex::new(Health {
                beat: 0,
                last_ok: Some(now),
                healthy_since: Some(now),
                offset_ms: 0,
                unsure: false,
            }),
            observer: Mutex::new(Observer::default()),
        };
        Ok(Joined { node, previous })
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.node
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> i64 {
        self.incarnation
    }

    /// The shared database.
    pub fn database(&self) -> &PgDatabase {
        &self.db
    }

    /// One heartbeat, sent at `now`: moves the beat counter (compare-and-set on the value
    /// this node wrote last), records the clock offset and runs in flight, and returns the
    /// database clock and the cancels asked for this node's runs. [`ClusterError::Fenced`]
    /// when the node was declared dead: it must stop its runs at once.
    pub async fn heartbeat(&self, in_flight: u32, now: Instant) -> Result<Beat, ClusterError> {
        let (expected, offset, unsure) = {
            let health = self.health();
            (health.beat, health.offset_ms, health.unsure)
        };
        let sent = jiff::Timestamp::now();
        let timeout = self.heartbeat.max(Duration::from_secs(1));
        let answer = tokio::time::timeout(timeout, async {
            let client = self.beats.client().await?;
            let statement = client
                .prepare_cached(
                    "WITH beat AS (
                         UPDATE nodes SET beat = beat + 1, last_beat_at = pacer_now_ms(),
                                          clock_offset_ms = $4, in_flight = $5
                         WHERE id = $1 AND incarnation = $2
                               AND (beat = $3 OR ($6 AND beat = $3 + 1))
                               AND state IN ('alive', 'stopping')
                         RETURNING beat, last_beat_at)
                     SELECT beat.beat, beat.last_beat_at,
                            array(SELECT id FROM runs
                                  WHERE node = $1 AND incarnation = $2 AND status = 'running'
                                        AND cancel_requested ORDER BY id) AS cancel
                     FROM beat",
                )
                .await
                .map_err(db)?;
            client
                .query_opt(
                    &statement,
                    &[
                        &self.node,
                        &self.incarnation,
                        &expected,
                        &offset,
                        &int(in_flight),
                        &unsure,
                    ],
                )
                .await
                .map_err(db)
        })
        .await
        .unwrap_or(Err(ClusterError::Timeout(timeout)));
        let received = jiff::Timestamp::now();
        let row = match answer {
            Ok(Some(row)) => row,
            Ok(None) => {
                return Err(ClusterError::Fenced {
                    node: self.node.clone(),
                    incarnation: self.incarnation,
                });
            }
            Err(e) => {
                let mut health = self.health();
                health.healthy_since = None;
                health.unsure = true;
                return Err(e);
            }
        };
        let db_now: i64 = row.try_get("last_beat_at").map_err(db)?;
        let midpoint = (crate::time::to_ms(sent) + crate::time::to_ms(received)) / 2;
        let beat = Beat {
            db_now,
            offset_ms: midpoint - db_now,
            cancel: row.try_get("cancel").map_err(db)?,
        };
        let mut health = self.health();
        health.beat = row.try_get("beat").map_err(db)?;
        health.unsure = false;
        health.offset_ms = beat.offset_ms;
        // A gap longer than two beats (this process was stopped, or the database away) means
        // peers' silence during it was not observed.
        let gap = health
            .last_ok
            .is_none_or(|last| now.duration_since(last) > self.heartbeat * 2);
        if gap || health.healthy_since.is_none() {
            health.healthy_since = Some(now);
        }
        health.last_ok = Some(now);
        Ok(beat)
    }

    /// Publishes this node's jobs and caps again (after a reload).
    pub async fn publish(
        &self,
        jobs: &[(String, String)],
        limits: &Limits,
    ) -> Result<(), ClusterError> {
        within(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let locked = lock(&tx).await?;
            self.fence(&tx).await?;
            publish(&tx, &self.node, jobs, limits, locked).await?;
            tx.commit().await.map_err(db)
        })
        .await
    }

    /// The node is stopping: it takes no new runs, and finishes (or stops) those it has.
    pub async fn stopping(&self) -> Result<(), ClusterError> {
        self.set_state("stopping").await.map(drop)
    }

    /// The node has stopped: runs still recorded as its own are abandoned now (peers need not
    /// wait for its lease), with retries where their jobs ask for them.
    pub async fn stopped(&self) -> Result<Reaped, ClusterError> {
        self.set_state("stopped").await
    }

    async fn set_state(&self, state: &str) -> Result<Reaped, ClusterError> {
        within(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let locked = lock(&tx).await?;
            let changed = tx
                .execute(
                    "UPDATE nodes SET state = $3 WHERE id = $1 AND incarnation = $2
                     AND state IN ('alive', 'stopping')",
                    &[&self.node, &self.incarnation, &state],
                )
                .await
                .map_err(db)?;
            if changed == 0 {
                return Err(self.fenced());
            }
            let reaped = if state == "stopped" {
                let reason = format!("its node `{}` stopped while it ran", self.node);
                abandon(
                    &tx,
                    &self.node,
                    self.incarnation,
                    locked.now,
                    &reason,
                    locked.now,
                )
                .await?
            } else {
                Reaped::none(&self.node, self.incarnation)
            };
            tx.commit().await.map_err(db)?;
            Ok(reaped)
        })
        .await
    }

    /// Fails with [`ClusterError::Fenced`] unless this incarnation is the node's live one.
    pub(super) async fn fence(&self, tx: &Transaction<'_>) -> Result<String, ClusterError> {
        let statement = tx
            .prepare_cached("SELECT state FROM nodes WHERE id = $1 AND incarnation = $2")
            .await
            .map_err(db)?;
        let row = tx
            .query_opt(&statement, &[&self.node, &self.incarnation])
            .await
            .map_err(db)?;
        match row.map(|row| row.try_get::<_, String>("state")) {
            Some(Ok(state)) if state == "alive" || state == "stopping" => Ok(state),
            Some(Err(e)) => Err(db(e)),
            _ => Err(self.fenced()),
        }
    }

    pub(super) fn fenced(&self) -> ClusterError {
        ClusterError::Fenced {
            node: self.node.clone(),
            incarnation: self.incarnation,
        }
    }

    pub(super) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn join(
    database: &PgDatabase,
    request: &JoinRequest,
) -> Result<(i64, Option<Reaped>), ClusterError> {
    let mut client = database.client().await?;
    let tx = client.transaction().await.map_err(db)?;
    let locked = lock(&tx).await?;
    let holder = tx
        .query_opt(
            "SELECT incarnation, state, host, pid, boot_id, last_beat_at FROM nodes
             WHERE id = $1",
            &[&request.node],
        )
        .await
        .map_err(db)?;
    let mut previous = None;
    if let Some(holder) = holder {
        let state: String = holder.try_get("state").map_err(db)?;
        let incarnation: i64 = holder.try_get("incarnation").map_err(db)?;
        let host: String = holder.try_get("host").map_err(db)?;
        let pid: i32 = holder.try_get("pid").map_err(db)?;
        let boot_id: String = holder.try_get("boot_id").map_err(db)?;
        let last_beat_at: i64 = holder.try_get("last_beat_at").map_err(db)?;
        let live_state = state == "alive" || state == "stopping";
        let lease = i64::try_from(request.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let ago_ms = locked.now - last_beat_at;
        let gone = host == request.host
            && (boot_id != request.boot_id
                || u32::try_from(pid).is_ok_and(|pid| pid == request.pid || !process_exists(pid)));
        if live_state && ago_ms < lease && !gone {
            return Err(ClusterError::NodeIdInUse {
                node: request.node.clone(),
                host,
                pid,
                ago_ms,
            });
        }
        if live_state {
            let reason = format!(
                "its node `{}` restarted while it ran (pid {pid} on {host} is gone)",
                request.node
            );
            previous = Some(
                abandon(
                    &tx,
                    &request.node,
                    incarnation,
                    last_beat_at,
                    &reason,
                    locked.now,
                )
                .await?,
            );
        }
    }
    let incarnation: i64 = tx
        .query_one("SELECT nextval('incarnations') AS incarnation", &[])
        .await
        .map_err(db)?
        .try_get("incarnation")
        .map_err(db)?;
    tx.execute(
        "INSERT INTO nodes (id, incarnation, beat, state, host, pid, boot_id, plugins, pools,
                            max_concurrency, joined_at, last_beat_at, clock_offset_ms, in_flight)
         VALUES ($1, $2, 0, 'alive', $3, $4, $5, $6, $7, $8, $9, $9, 0, 0)
         ON CONFLICT (id) DO UPDATE SET
             incarnation = excluded.incarnation, beat = 0, state = 'alive', host = excluded.host,
             pid = excluded.pid, boot_id = excluded.boot_id, plugins = excluded.plugins,
             pools = excluded.pools, max_concurrency = excluded.max_concurrency,
             joined_at = excluded.joined_at, last_beat_at = excluded.last_beat_at,
             clock_offset_ms = 0, in_flight = 0",
        &[
            &request.node,
            &incarnation,
            &request.host,
            &i32::try_from(request.pid).unwrap_or(i32::MAX),
            &request.boot_id,
            &request.plugins,
            &request.pools,
            &request.max_concurrency.map(int),
            &locked.now,
        ],
    )
    .await
    .map_err(db)?;
    publish(&tx, &request.node, &request.jobs, &request.limits, locked).await?;
    tx.commit().await.map_err(db)?;
    Ok((incarnation, previous))
}

/// Whether a process with this pid exists on this host.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Records the node's job digests and makes its config the cluster's: each job's digest, and
/// the caps. Queued fires of a job whose digest changed run under the new one.
async fn publish(
    tx: &Transaction<'_>,
    node: &str,
    jobs: &[(String, String)],
    limits: &Limits,
    locked: Locked,
) -> Result<(), ClusterError> {
    let (names, digests): (Vec<&str>, Vec<&str>) =
        jobs.iter().map(|(n, d)| (n.as_str(), d.as_str())).unzip();
    tx.execute("DELETE FROM node_jobs WHERE node = $1", &[&node])
        .await
        .map_err(db)?;
    tx.execute(
        "INSERT INTO node_jobs (node, job, digest)
         SELECT $1, job, md5(digest) FROM unnest($2::text[], $3::text[]) AS t (job, digest)",
        &[&node, &names, &digests],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "INSERT INTO job_state (job, digest)
         SELECT job, md5(digest) FROM unnest($1::text[], $2::text[]) AS t (job, digest)
         ON CONFLICT (job) DO UPDATE SET digest = excluded.digest",
        &[&names, &digests],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE runs SET digest = job_state.digest FROM job_state
         WHERE runs.status = 'queued' AND runs.job = ANY($1) AND job_state.job = runs.job
               AND runs.digest <> job_state.digest",
        &[&names],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE cluster SET max_concurrency = $1, max_queue = $2 WHERE id = 1",
        &[&int(limits.max_concurrency), &int(limits.max_queue)],
    )
    .await
    .map_err(db)?;
    let mut pool_names = Vec::new();
    let mut caps = Vec::new();
    let mut rates = Vec::new();
    for (name, pool) in &limits.pools {
        pool_names.push(name.as_str());
        caps.push(pool.max_concurrency.map(int));
        rates.push(pool.max_starts_per_second);
    }
    // A bucket starts full; one whose rate is unchanged keeps its tokens.
    tx.execute(
        "INSERT INTO pools (name, max_concurrency, rate, tokens, refilled_at)
         SELECT name, cap, rate, greatest(coalesce(rate, 1), 1), $4
         FROM unnest($1::text[], $2::integer[], $3::double precision[]) AS t (name, cap, rate)
         ON CONFLICT (name) DO UPDATE SET
             max_concurrency = excluded.max_concurrency, rate = excluded.rate,
             tokens = CASE WHEN pools.rate IS NOT DISTINCT FROM excluded.rate
                           THEN pools.tokens ELSE excluded.tokens END,
             refilled_at = CASE WHEN pools.rate IS NOT DISTINCT FROM excluded.rate
                                THEN pools.refilled_at ELSE excluded.refilled_at END",
        &[&pool_names, &caps, &rates, &locked.now],
    )
    .await
    .map_err(db)?;
    tx.execute("DELETE FROM pools WHERE name <> ALL($1)", &[&pool_names])
        .await
        .map_err(db)?;
    Ok(())
}
