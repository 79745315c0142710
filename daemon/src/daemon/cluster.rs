//! A node's side of the cluster, around the engine: its heartbeat (and the fence that stops
//! its runs when it cannot beat for too long), watching for dead peers, the queue's wake-ups,
//! and the calls that carry out the engine's claims, admissions, cancels and follow-ups.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::backend::ClusterNode;
use super::metrics::Metrics;
use crate::admission::Limits;
use crate::config::{ClusterSettings, Config};
use crate::control::{Response, RunUpdate};
use crate::engine::{Input, Ticket};
use crate::model::Status;
use crate::store::postgres::{Cancelled, ClusterError, Proposal, Room};
use crate::store::{RunId, StartRun, Write};

/// How often a followed or watched run's record is read.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The longest pause between attempts at a claim.
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(2);

/// A margin under the lease: runs are stopped this long before peers may declare the node
/// dead, besides the stop's own grace.
const FENCE_MARGIN: Duration = Duration::from_secs(1);

/// How long a lease renewal holds for the node's runs (see `runner::RunLease`): it ends a
/// margin before peers may declare the node dead, counted from a beat that landed.
pub fn run_lease(settings: &ClusterSettings) -> Duration {
    settings.lease_ttl.saturating_sub(FENCE_MARGIN)
}

/// Beats, observes peers, refreshes the paused jobs and the cluster's metrics, until the node
/// is fenced. Each beat that lands renews the runs' lease through `renewals`; `in_flight` is
/// kept current by the daemon's loop.
pub fn spawn_membership(
    cluster: Arc<ClusterNode>,
    inputs: mpsc::UnboundedSender<Input>,
    renewals: watch::Sender<()>,
    in_flight: Arc<AtomicU32>,
    kill_grace: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let settings = &cluster.settings;
        // Runs must be gone before a peer may count the node dead: the lease, less the stop's
        // grace and a margin, after the last beat that was acknowledged.
        let fence_after = settings.lease_ttl.saturating_sub(kill_grace + FENCE_MARGIN);
        let mut last_ok = Instant::now();
        let mut beats = tokio::time::interval(settings.heartbeat);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            let now = Instant::now();
            match cluster
                .node
                .heartbeat(in_flight.load(Ordering::Relaxed), now)
                .await
            {
                Ok(beat) => {
                    last_ok = now;
                    renewals.send_replace(());
                    let _ = inputs.send(Input::Beat {
                        cancel: beat.cancel,
                        offset_ms: beat.offset_ms,
                    });
                }
                Err(ClusterError::Fenced { .. }) => {
                    cluster.fence();
                    let _ = inputs.send(Input::Fenced(
                        "this node was declared dead by its peers (its heartbeats stopped for \
                         longer than lease_ttl)"
                            .to_owned(),
                    ));
                    return;
                }
                Err(e) => {
                    tracing::warn!("heartbeat failed: {e}");
                    let _ = inputs.send(Input::BeatFailed(match &e {
                        ClusterError::Connect { .. } => e.to_string(),
                        _ => format!("the cluster's database cannot be reached: {e}"),
                    }));
                    if now.duration_since(last_ok) >= fence_after {
                        cluster.fence();
                        let _ = inputs.send(Input::Fenced(format!(
                            "this node could not reach the cluster's database for {} s, close \
                             to lease_ttl ({} s), after which its peers take its runs over",
                            now.duration_since(last_ok).as_secs(),
                            settings.lease_ttl.as_secs()
                        )));
                        return;
                    }
                    continue;
                }
            }
            match cluster.node.reap(now).await {
                Ok(reaped) => {
                    for dead in reaped {
                        tracing::error!(
                            node = %dead.node,
                            incarnation = dead.incarnation,
                            abandoned = dead.abandoned.len(),
                            retries = dead.retries.len(),
                            "a node was declared dead: its runs are abandoned"
                        );
                    }
                }
                Err(e) => tracing::warn!("cannot look for dead nodes: {e}"),
            }
            if metrics.exported()
                && let (Ok(nodes), Ok(load)) =
                    (cluster.db().nodes().await, cluster.db().pool_load().await)
            {
                metrics.cluster(&nodes, &load);
            }
            if let Ok(states) = cluster.db().job_states().await {
                let paused = states
                    .into_iter()
                    .filter(|(_, state)| state.paused)
                    .map(|(job, _)| job)
                    .collect();
                let _ = inputs.send(Input::PausedJobs(paused));
            }
        }
    })
}

/// Wakes the engine whenever a node commits a claim (the queue may hold runs for it).
pub fn spawn_listener(
    cluster: &Arc<ClusterNode>,
    inputs: mpsc::UnboundedSender<Input>,
) -> tokio::task::JoinHandle<()> {
    let notify = cluster.db().listen();
    tokio::spawn(async move {
        loop {
            notify.notified().await;
            if inputs.send(Input::ClusterChanged).is_err() {
                return;
            }
        }
    })
}

/// Claims the proposals of one engine step together, after this node's earlier claims.
pub fn claim(
    cluster: &Arc<ClusterNode>,
    proposals: Vec<(Proposal, Ticket)>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let cluster = Arc::clone(cluster);
    let place = cluster.claims.place();
    tokio::spawn(async move {
        let (proposals, tickets): (Vec<Proposal>, Vec<Ticket>) = proposals.into_iter().unzip();
        cluster.claims.wait_turn(place).await;
        // A claim that fails for a reason that may pass is tried until it lands: until then,
        // its fires exist nowhere else. A database out of reach for longer fences the node
        // (see `spawn_membership`), which ends this too.
        let mut delay = Duration::from_millis(100);
        let claimed = loop {
            match cluster.node.claim(&proposals).await {
                Err(e) if e.is_transient() => {
                    tracing::warn!("cannot claim fires, trying again in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(CLAIM_RETRY_MAX);
                }
                other => break other,
            }
        };
        cluster.claims.done(place);
        let input = match claimed {
            Ok(claimed) => Input::Claimed {
                outcomes: tickets
                    .into_iter()
                    .zip(claimed.outcomes)
                    .map(|(ticket, outcome)| (ticket, Ok(outcome)))
                    .collect(),
                withdrawn: claimed.withdrawn,
                stops: claimed
                    .stops
                    .into_iter()
                    .map(|stop| (stop.id, stop.reason))
                    .collect(),
            },
            Err(e) => Input::Claimed {
                outcomes: tickets
                    .into_iter()
                    .map(|ticket| (ticket, Err(e.to_string())))
                    .collect(),
                withdrawn: Vec::new(),
                stops: Vec::new(),
            },
        };
        let _ = inputs.send(input);
    });
}

/// Makes a reloaded config the cluster's, in line with this node's claims: the claims made
/// after the reload are of the new jobs.
pub fn publish(cluster: &Arc<ClusterNode>, config: &Config) {
    let cluster = Arc::clone(cluster);
    let jobs = super::backend::digests(config);
    let limits = Limits::of(config);
    let place = cluster.claims.place();
    tokio::spawn(async move {
        cluster.claims.wait_turn(place).await;
        let mut delay = Duration::from_millis(100);
        loop {
            match cluster.node.publish(&jobs, &limits).await {
                Ok(()) => {
                    tracing::info!("the reloaded config is the cluster's now");
                    break;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(
                        "cannot publish the reloaded config, trying again in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(CLAIM_RETRY_MAX);
                }
                Err(e) => {
                    tracing::error!("cannot publish the reloaded config: {e}");
                    break;
                }
            }
        }
        cluster.claims.done(place);
    });
}

/// Asks the cluster for runs this node may start.
pub fn admit(cluster: &Arc<ClusterNode>, room: Room, inputs: mpsc::UnboundedSender<Input>) {
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        let admitted = cluster.node.admit(&room).await.map_err(|e| e.to_string());
        let _ = inputs.send(Input::Admitted(admitted));
    });
}

/// Records a run the cluster admitted here but that cannot start here as failed.
pub fn refuse(cluster: &Arc<ClusterNode>, run_id: RunId, reason: String) {
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        let now = crate::time::to_ms(jiff::Timestamp::now());
        let start = StartRun {
            id: run_id,
            started_at: now,
            queue_ms: 0,
            process: None,
        };
        let ended = async {
            cluster.node.start_run(&start).await?;
            cluster
                .node
                .finish_run(&crate::store::Finish {
                    id: run_id,
                    status: Status::Failed,
                    finished_at: now,
                    error: Some(reason.clone()),
                    message: None,
                    output: Vec::new(),
                    output_dropped: 0,
                })
                .await
        };
        match ended.await {
            Ok(_) => tracing::error!(run_id, "run failed at once: {reason}"),
            Err(e) => tracing::error!(run_id, "cannot record why run {run_id} failed: {e}"),
        }
    });
}

/// Carries out a write the engine asked for, in the shared database.
pub async fn write(cluster: &ClusterNode, write: Write) -> Result<(), ClusterError> {
    let db = cluster.db();
    match write {
        Write::Paused { job, paused } => db.set_paused(&job, paused).await,
        Write::LastFire { job, at, timing } => db.set_last_fire(&job, at, timing.as_deref()).await,
        Write::Resolve { id, status, reason } => db.resolve(id, status, &reason).await.map(drop),
        Write::Waiting { id, reason } => db.set_waiting(id, &reason).await,
        // Fires are claimed, never written directly, in a cluster.
        Write::Queued { .. } | Write::Skipped { .. } => Ok(()),
    }
}

/// `pacer cancel` in a cluster: the run may wait, or run on any node.
pub fn cancel(cluster: &Arc<ClusterNode>, id: RunId, reply: mpsc::UnboundedSender<Response>) {
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        let response = match cluster.db().cancel(id, "cancelled by pacer cancel").await {
            Ok(Cancelled::BeforeStart) => Response::Done {
                message: format!("run {id} was cancelled before it started"),
            },
            Ok(Cancelled::Requested { node }) => Response::Done {
                message: format!(
                    "run {id} is being stopped on node `{node}` (within a heartbeat; SIGTERM \
                     to its process group, SIGKILL 1 s later)"
                ),
            },
            Ok(Cancelled::Over(status)) => Response::Error {
                message: format!("run {id} is already over ({status})"),
            },
            Ok(Cancelled::Unknown) => Response::Error {
                message: format!("no run with id {id} (pacer history lists them)"),
            },
            Err(e) => Response::Error {
                message: format!("cannot cancel run {id}: {e}"),
            },
        };
        let _ = reply.send(response);
    });
}

/// Tells a client what becomes of run `id` (and, with `wait`, of its retries), wherever it runs.
pub fn follow(
    cluster: &Arc<ClusterNode>,
    id: RunId,
    reply: mpsc::UnboundedSender<Response>,
    wait: bool,
) {
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        let mut id = id;
        let mut started = false;
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            if reply.is_closed() {
                return;
            }
            let Ok(Some(run)) = cluster.db().run(id).await else {
                continue;
            };
            let record = &run.run.record;
            if record.status != Status::Queued && !started {
                started = true;
                if record.started_at.is_some() {
                    let _ = reply.send(Response::Run(RunUpdate::Started {
                        id,
                        attempt: record.attempt,
                    }));
                }
                if !wait {
                    return;
                }
            }
            if !record.status.is_final() {
                continue;
            }
            let _ = reply.send(Response::Run(RunUpdate::Finished {
                id,
                status: record.status,
                error: record.error.clone(),
            }));
            if !wait || !record.status.is_failure() {
                return;
            }
            // A retry may follow, under the key `r:<id>`.
            match wait_for_successor(&cluster, id).await {
                Some(next) => {
                    let reason = "a retry after a failure".to_owned();
                    let _ = reply.send(Response::Run(RunUpdate::Queued { id: next, reason }));
                    id = next;
                    started = false;
                }
                None => return,
            }
        }
    });
}

/// The retry of run `id`, if one is queued soon after it ended.
async fn wait_for_successor(cluster: &ClusterNode, id: RunId) -> Option<RunId> {
    for _ in 0..8 {
        if let Ok(Some(next)) = cluster.db().successor(id).await {
            return Some(next);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    None
}

/// Reports [`Input::RunOver`] once run `id` is over, on whichever node ran it.
pub fn watch(cluster: &Arc<ClusterNode>, id: RunId, inputs: mpsc::UnboundedSender<Input>) {
    let cluster = Arc::clone(cluster);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            match cluster.db().run(id).await {
                Ok(Some(run)) if run.run.record.status.is_final() => {
                    let job = run.run.record.job.clone();
                    let _ = inputs.send(Input::RunOver { job });
                    return;
                }
                Ok(None) => return,
                _ => {}
            }
        }
    });
}
