//! Claiming fires: every node proposes the fires it finds due; under the cluster lock each
//! is recorded once (its fire key is unique), a job's schedule moves forward by
//! compare-and-set (so a fire that another node already took is not recorded again, and a
//! node whose job differs takes none), and the job's overlap policy and the bounded queue are
//! applied against every node's fires, with the same rules and words as one daemon's
//! admission (`crate::admission`), so `pacer why` reads the same.

use std::collections::{HashMap, HashSet};
use std::fmt;

use deadpool_postgres::Transaction;

use super::node::PgNode;
use super::{ClusterError, Locked, db, lock, within};
use crate::admission::SkipKind;
use crate::config::{Job, Overlap, Recover};
use crate::model::Trigger;
use crate::store::{NewFire, RunId, mask_secrets};
use crate::time::rfc3339_ms;

/// Names a fire across the cluster: two nodes that compute the same fire compute the same
/// key, and the database records each key once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClaimKey {
    /// A scheduled or catch-up fire of `job` due at `at` (Unix ms, jitter included).
    Schedule {
        /// The job.
        job: String,
        /// The due instant.
        at: i64,
    },
    /// The retry of run `previous`.
    Retry {
        /// The run that failed.
        previous: RunId,
    },
    /// `job` chained from run `upstream`.
    Chained {
        /// The job that fires.
        job: String,
        /// The run that ended.
        upstream: RunId,
    },
    /// A manual run: a fresh UUID per request.
    Manual(String),
    /// An `@reboot` fire of `job` in the boot `boot_id` of the node that proposes it.
    Boot {
        /// The job.
        job: String,
        /// The kernel's boot id.
        boot_id: String,
    },
}

impl ClaimKey {
    /// A key for a new manual run (a random UUID from the kernel).
    pub fn manual() -> Result<ClaimKey, ClusterError> {
        std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map(|uuid| ClaimKey::Manual(uuid.trim().to_owned()))
            .map_err(|e| ClusterError::Corrupt(format!("cannot make a UUID for a manual run: {e}")))
    }
}

impl fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimKey::Schedule { job, at } => write!(f, "s:{job}:{at}"),
            ClaimKey::Retry { previous } => write!(f, "r:{previous}"),
            ClaimKey::Chained { job, upstream } => write!(f, "c:{job}:{upstream}"),
            ClaimKey::Manual(uuid) => write!(f, "m:{uuid}"),
            ClaimKey::Boot { job, boot_id } => write!(f, "b:{job}:{boot_id}"),
        }
    }
}

/// A fire a node proposes.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Its key.
    pub key: ClaimKey,
    /// The record (job, plugin, trigger, attempt, due instant, params).
    pub fire: NewFire,
    /// Its job's pool.
    pub pool: String,
    /// Its job's priority.
    pub priority: i32,
    /// Its job's overlap policy.
    pub overlap: Overlap,
    /// What becomes of its run if its node dies.
    pub recover: Recover,
    /// Its job's digest on the proposing node ([`Job::digest`]).
    pub digest: String,
    /// Not started before this instant of the database clock (a retry's back-off, an
    /// `@reboot` jitter), Unix ms.
    pub ready_at: Option<i64>,
    /// Only the proposing node may run it (`@reboot`).
    pub pinned: bool,
    /// Record it `skipped` with this reason, whatever the policies say (a missed fire its
    /// job's `catch_up` does not run): the record is still claimed once across the nodes.
    pub skip: Option<(String, SkipKind)>,
}

impl Proposal {
    /// A proposal of `fire` of `job` under `key`.
    pub fn of(job: &Job, key: ClaimKey, fire: NewFire) -> Proposal {
        Proposal {
            pinned: matches!(key, ClaimKey::Boot { .. }),
            key,
            fire,
            pool: job.pool.clone(),
            priority: job.priority,
            overlap: job.overlap,
            recover: job.recover,
            digest: job.digest(),
            ready_at: None,
            skip: None,
        }
    }
}

/// What became of one proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded `queued`; `reason` says what holds it, if its job's overlap policy does.
    Queued {
        /// Its run.
        id: RunId,
        /// Why it cannot start yet, if known now.
        reason: Option<String>,
    },
    /// Recorded `skipped` by a policy.
    Skipped {
        /// Its run.
        id: RunId,
        /// Which policy and why.
        reason: String,
        /// The policy, for metrics.
        kind: SkipKind,
    },
    /// The job is paused: no record (its schedule moved on).
    Paused,
    /// Another node claimed this fire already.
    Taken,
    /// This node's version of the job differs from the cluster's: it proposes none of its
    /// fires until its config matches (a reload) or it publishes its own.
    JobDiffers,
}

/// A running run that must stop (`overlap = "replace"`): its node learns it from its next
/// heartbeat, or at once if it is the claiming node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The run.
    pub id: RunId,
    /// The node it runs on.
    pub node: String,
    /// Why, for its record.
    pub reason: String,
}

/// What a claim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// One per proposal, in order.
    pub outcomes: Vec<Outcome>,
    /// Fires that were waiting (any node's) and were declined now: replaced, or pushed out of
    /// a full queue by fires of higher priority. Recorded `skipped` with this reason.
    pub withdrawn: Vec<(RunId, String, SkipKind)>,
    /// Runs to stop.
    pub stops: Vec<Stop>,
}

impl PgNode {
    /// Claims `proposals` in one transaction under the cluster lock.
    pub async fn claim(&self, proposals: &[Proposal]) -> Result<Claimed, ClusterError> {
        if proposals.is_empty() {
            return Ok(Claimed::default());
        }
        within(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(db)?;
            let locked = lock(&tx).await?;
            self.fence(&tx).await?;
            release_held(&tx).await?;
            let claimed = claim(&tx, locked, &self.node, proposals).await?;
            if claimed
                .outcomes
                .iter()
                .any(|outcome| matches!(outcome, Outcome::Queued { .. }))
            {
                tx.batch_execute("NOTIFY pacer_queue").await.map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(claimed)
        })
        .await
    }
}

/// Held fires whose job has nothing running and nothing else queued join the queue, as
/// one daemon's admission releases them when the job's run ends. Call under the lock.
pub(super) async fn release_held(tx: &Transaction<'_>) -> Result<(), ClusterError> {
    let statement = tx
        .prepare_cached(
            "UPDATE runs AS held SET held = false
             WHERE held.status = 'queued' AND held.held
               AND NOT EXISTS (SELECT 1 FROM runs AS other
                               WHERE other.job = held.job AND other.id <> held.id
                                     AND (other.status = 'running'
                                          OR (other.status = 'queued' AND NOT other.held)))",
        )
        .await
        .map_err(db)?;
    tx.execute(&statement, &[]).await.map_err(db)?;
    Ok(())
}

/// What the cluster says of a job a proposal names.
#[derive(Debug, Clone)]
struct JobView {
    last_fire: Option<i64>,
    paused: bool,
    /// The cluster's digest, if published.
    digest: Option<String>,
    /// Whether the proposing node's digest equals it.
    same: bool,
}

async fn claim(
    tx: &Transaction<'_>,
    locked: Locked,
    node: &str,
    proposals: &[Proposal],
) -> Result<Claimed, ClusterError> {
    let jobs: Vec<&str> = proposals.iter().map(|p| p.fire.job.as_str()).collect();
    let digests: Vec<&str> = proposals.iter().map(|p| p.digest.as_str()).collect();
    let keys: Vec<String> = proposals.iter().map(|p| p.key.to_string()).collect();
    let views = tx
        .query(
            "SELECT t.job, job_state.last_fire, coalesce(job_state.paused, false) AS paused,
                    job_state.digest, job_state.digest = md5(t.digest) AS same
             FROM unnest($1::text[], $2::text[]) AS t (job, digest)
             LEFT JOIN job_state ON job_state.job = t.job",
            &[&jobs, &digests],
        )
        .await
        .map_err(db)?;
    let mut view_of: HashMap<String, JobView> = HashMap::new();
    for row in views {
        let job: String = row.try_get("job").map_err(db)?;
        let view = JobView {
            last_fire: row.try_get("last_fire").map_err(db)?,
            paused: row.try_get("paused").map_err(db)?,
            digest: row.try_get("digest").map_err(db)?,
            same: row
                .try_get::<_, Option<bool>>("same")
                .map_err(db)?
                .unwrap_or(false),
        };
        // A node proposes one digest per job; should two differ in a batch, any mismatch wins.
        view_of
            .entry(job)
            .and_modify(|known| known.same &= view.same)
            .or_insert(view);
    }
    let taken: HashSet<String> = tx
        .query(
            "SELECT fire_key FROM runs WHERE fire_key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.try_get("fire_key"))
        .collect::<Result<_, _>>()
        .map_err(db)?;
    let mut state = load_state(tx, &jobs, locked, proposals.len()).await?;
    let mut plan = Plan::default();
    let mut last_fire: HashMap<&str, Option<i64>> = HashMap::new();
    for (proposal, key) in proposals.iter().zip(&keys) {
        let fire = &proposal.fire;
        let view = &view_of[&fire.job];
        if !view.same {
            plan.outcomes.push(Planned::Done(Outcome::JobDiffers));
            continue;
        }
        let last = last_fire.entry(fire.job.as_str()).or_insert(view.last_fire);
        if fire.advances_schedule && last.is_some_and(|last| fire.scheduled_at <= last) {
            plan.outcomes.push(Planned::Done(Outcome::Taken));
            continue;
        }
        if taken.contains(key) {
            plan.outcomes.push(Planned::Done(Outcome::Taken));
            continue;
        }
        if fire.advances_schedule {
            *last = Some(fire.scheduled_at);
        }
        let paused_applies = matches!(
            fire.trigger,
            Trigger::Schedule | Trigger::CatchUp | Trigger::Chained
        );
        if paused_applies && view.paused {
            plan.outcomes.push(Planned::Done(Outcome::Paused));
            continue;
        }
        let digest = view.digest.clone().unwrap_or_default();
        let decision = match &proposal.skip {
            Some((reason, kind)) => Decision::Skip {
                reason: reason.clone(),
                kind: *kind,
            },
            None => state.submit(proposal, plan.outcomes.len()),
        };
        plan.outcomes.push(Planned::Insert {
            key: key.clone(),
            digest,
            decision,
        });
    }
    plan.advance = last_fire
        .into_iter()
        .filter_map(|(job, at)| Some((job.to_owned(), at?)))
        .collect();
    write(tx, locked, node, proposals, plan, state).await
}

/// What the policy decided for a fire that gets a record.
#[derive(Debug, Clone)]
enum Decision {
    /// Queued (held by its job's overlap policy, with the reason, or not).
    Queue { held: Option<String> },
    /// Skipped at once.
    Skip { reason: String, kind: SkipKind },
}

#[derive(Debug)]
enum Planned {
    Done(Outcome),
    Insert {
        key: String,
        digest: String,
        decision: Decision,
    },
}

#[derive(Debug, Default)]
struct Plan {
    outcomes: Vec<Planned>,
    advance: Vec<(String, i64)>,
}

/// A waiting fire's place in the queue: higher priority first, then earlier due time, then
/// age (a proposal in this batch is younger than every recorded fire).
type Rank = (i64, i64, i64);

/// What is waiting and going, for the jobs of a claim, and the queue's worst entries; updated
/// as the batch's fires are decided one after another.
#[derive(Debug, Default)]
struct ClaimState {
    max_queue: i64,
    /// Fires waiting in the cluster (held ones included).
    queued: i64,
    jobs: HashMap<String, Load>,
    /// The lowest-ranked waiting (not held) fires, worst first: what a full queue pushes out.
    worst: Vec<(Rank, Waiting)>,
    /// Recorded fires declined now.
    withdrawn: Vec<(RunId, String, SkipKind)>,
    /// Fires of this batch queued first, then pushed out by later ones of higher priority.
    pushed_out: Vec<(usize, String)>,
    stops: Vec<Stop>,
}

/// A fire waiting, recorded or in this batch (by its proposal's index).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    Recorded(RunId, String),
    New(usize, String),
}

#[derive(Debug, Default, Clone)]
struct Load {
    /// Running runs, with their nodes.
    running: Vec<(RunId, String)>,
    /// Waiting fires not held.
    queued: Vec<Waiting>,
    /// The fire held back by `overlap = queue/replace`.
    held: Option<Waiting>,
}

async fn load_state(
    tx: &Transaction<'_>,
    jobs: &[&str],
    locked: Locked,
    batch: usize,
) -> Result<ClaimState, ClusterError> {
    let mut state = ClaimState {
        max_queue: locked.max_queue,
        ..ClaimState::default()
    };
    let active = tx
        .query(
            "SELECT id, job, status, held, node FROM runs
             WHERE job = ANY($1) AND status IN ('queued', 'running') ORDER BY id",
            &[&jobs],
        )
        .await
        .map_err(db)?;
    for row in active {
        let id: RunId = row.try_get("id").map_err(db)?;
        let job: String = row.try_get("job").map_err(db)?;
        let status: String = row.try_get("status").map_err(db)?;
        let load = state.jobs.entry(job.clone()).or_default();
        if status == "running" {
            let node: Option<String> = row.try_get("node").map_err(db)?;
            load.running.push((id, node.unwrap_or_default()));
        } else if row.try_get::<_, bool>("held").map_err(db)? {
            load.held = Some(Waiting::Recorded(id, job));
        } else {
            load.queued.push(Waiting::Recorded(id, job));
        }
    }
    state.queued = tx
        .query_one(
            "SELECT count(*) AS queued FROM runs WHERE status = 'queued'",
            &[],
        )
        .await
        .map_err(db)?
        .try_get("queued")
        .map_err(db)?;
    if state.queued + i64::try_from(batch).unwrap_or(i64::MAX) > state.max_queue {
        let worst = tx
            .query(
                "SELECT id, job, priority, scheduled_at FROM runs
                 WHERE status = 'queued' AND NOT held
                 ORDER BY priority, scheduled_at DESC, id DESC LIMIT $1",
                &[&i64::try_from(batch).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(db)?;
        for row in worst {
            let id: RunId = row.try_get("id").map_err(db)?;
            let priority: i32 = row.try_get("priority").map_err(db)?;
            let rank = (
                -i64::from(priority),
                row.try_get("scheduled_at").map_err(db)?,
                id,
            );
            state
                .worst
                .push((rank, Waiting::Recorded(id, row.try_get("job").map_err(db)?)));
        }
    }
    Ok(state)
}

impl ClaimState {
    /// One daemon's `Admission::submit`, against the cluster's fires.
    fn submit(&mut self, proposal: &Proposal, index: usize) -> Decision {
        let name = proposal.fire.job.clone();
        let load = self.jobs.get(&name).cloned().unwrap_or_default();
        let busy = !load.running.is_empty() || !load.queued.is_empty() || load.held.is_some();
        let rank: Rank = (
            -i64::from(proposal.priority),
            proposal.fire.scheduled_at,
            i64::MAX / 2 + i64::try_from(index).unwrap_or(0),
        );
        let me = Waiting::New(index, name.clone());
        match proposal.overlap {
            _ if !busy => {}
            Overlap::Allow => {}
            Overlap::Skip => {
                return Decision::Skip {
                    reason: format!("{} (overlap = \"skip\")", describe_busy(&name, &load)),
                    kind: SkipKind::Overlap,
                };
            }
            Overlap::Queue if load.held.is_some() => {
                return Decision::Skip {
                    reason: format!(
                        "{}, and another fire already waits for it (overlap = \"queue\" holds \
                         at most one)",
                        describe_busy(&name, &load)
                    ),
                    kind: SkipKind::Overlap,
                };
            }
            Overlap::Queue => return self.hold(me, rank),
            Overlap::Replace => {
                let successor = format!(
                    "replaced by the {} fire due at {} (overlap = \"replace\")",
                    proposal.fire.trigger,
                    rfc3339_ms(proposal.fire.scheduled_at)
                );
                let waiting: Vec<Waiting> = load
                    .queued
                    .iter()
                    .chain(load.held.iter())
                    .cloned()
                    .collect();
                for fire in waiting {
                    self.remove(&fire);
                    if let Waiting::Recorded(id, _) = fire {
                        self.withdrawn
                            .push((id, successor.clone(), SkipKind::Replaced));
                    }
                }
                self.stops
                    .extend(load.running.iter().map(|(id, node)| Stop {
                        id: *id,
                        node: node.clone(),
                        reason: successor.clone(),
                    }));
                return self.hold(me, rank);
            }
        }
        if !self.make_room(rank) {
            return Decision::Skip {
                reason: self.queue_full_reason(),
                kind: SkipKind::QueueFull,
            };
        }
        self.queued += 1;
        self.jobs.entry(name).or_default().queued.push(me.clone());
        self.worst.push((rank, me));
        self.worst.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        Decision::Queue { held: None }
    }

    fn hold(&mut self, fire: Waiting, rank: Rank) -> Decision {
        if !self.make_room(rank) {
            return Decision::Skip {
                reason: self.queue_full_reason(),
                kind: SkipKind::QueueFull,
            };
        }
        let name = match &fire {
            Waiting::Recorded(_, job) | Waiting::New(_, job) => job.clone(),
        };
        self.queued += 1;
        let load = self.jobs.entry(name.clone()).or_default();
        // Released at once if the job has nothing going (the replaced runs still go).
        if load.running.is_empty() && load.queued.is_empty() {
            load.queued.push(fire);
            return Decision::Queue { held: None };
        }
        load.held = Some(fire);
        Decision::Queue {
            held: Some(format!(
                "waiting for the previous run of `{name}` to end (overlap)"
            )),
        }
    }

    /// With the queue full, pushes out the worst-ranked waiting fire if `rank` outranks it.
    /// Whether there is room now.
    fn make_room(&mut self, rank: Rank) -> bool {
        if self.queued < self.max_queue {
            return true;
        }
        self.worst.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let Some((worst_rank, _)) = self.worst.first() else {
            return false;
        };
        if *worst_rank <= rank {
            return false;
        }
        let reason = format!(
            "{}, and fires of higher priority came",
            self.queue_full_reason()
        );
        let (_, declined) = self.worst.remove(0);
        self.remove(&declined);
        match declined {
            Waiting::Recorded(id, _) => self.withdrawn.push((id, reason, SkipKind::QueueFull)),
            Waiting::New(index, _) => self.pushed_out.push((index, reason)),
        }
        self.queued < self.max_queue
    }

    /// Takes a waiting fire out of the counts.
    fn remove(&mut self, fire: &Waiting) {
        let name = match fire {
            Waiting::Recorded(_, job) | Waiting::New(_, job) => job,
        };
        if let Some(load) = self.jobs.get_mut(name) {
            load.queued.retain(|f| f != fire);
            if load.held.as_ref() == Some(fire) {
                load.held = None;
            }
        }
        self.worst.retain(|(_, f)| f != fire);
        self.queued -= 1;
    }

    fn queue_full_reason(&self) -> String {
        format!(
            "the queue is full: {} fires wait for a slot (max_queue = {})",
            self.queued, self.max_queue
        )
    }
}

/// The words one daemon's admission uses for a job that is still busy.
fn describe_busy(name: &str, load: &Load) -> String {
    let ids: Vec<String> = load.running.iter().map(|(id, _)| id.to_string()).collect();
    match ids.as_slice() {
        [id] => format!("run {id} of `{name}` is still running"),
        [] => format!("an earlier fire of `{name}` is still waiting for a slot"),
        ids => format!("runs {} of `{name}` are still running", ids.join(", ")),
    }
}

async fn write(
    tx: &Transaction<'_>,
    locked: Locked,
    node: &str,
    proposals: &[Proposal],
    plan: Plan,
    mut state: ClaimState,
) -> Result<Claimed, ClusterError> {
    let pushed_out: HashMap<usize, String> = state.pushed_out.drain(..).collect();
    let mut rows = Rows::default();
    for (index, (proposal, planned)) in proposals.iter().zip(&plan.outcomes).enumerate() {
        let Planned::Insert {
            key,
            digest,
            decision,
        } = planned
        else {
            continue;
        };
        let decision = match pushed_out.get(&index) {
            Some(reason) => Decision::Skip {
                reason: reason.clone(),
                kind: SkipKind::QueueFull,
            },
            None => decision.clone(),
        };
        rows.push(index, proposal, key, digest, &decision)?;
    }
    let inserted = rows.insert(tx, locked, node).await?;
    if !plan.advance.is_empty() {
        let (jobs, ats): (Vec<String>, Vec<i64>) = plan.advance.into_iter().unzip();
        tx.execute(
            "INSERT INTO job_state (job, last_fire)
             SELECT job, at FROM unnest($1::text[], $2::bigint[]) AS t (job, at)
             ON CONFLICT (job) DO UPDATE
                 SET last_fire = greatest(coalesce(job_state.last_fire, excluded.last_fire),
                                          excluded.last_fire)",
            &[&jobs, &ats],
        )
        .await
        .map_err(db)?;
    }
    if !state.withdrawn.is_empty() {
        let ids: Vec<RunId> = state.withdrawn.iter().map(|(id, _, _)| *id).collect();
        let reasons: Vec<&str> = state.withdrawn.iter().map(|(_, r, _)| r.as_str()).collect();
        tx.execute(
            "UPDATE runs SET status = 'skipped', error = t.reason, pending_params = NULL
             FROM unnest($1::bigint[], $2::text[]) AS t (id, reason)
             WHERE runs.id = t.id AND runs.status = 'queued'",
            &[&ids, &reasons],
        )
        .await
        .map_err(db)?;
    }
    if !state.stops.is_empty() {
        let ids: Vec<RunId> = state.stops.iter().map(|stop| stop.id).collect();
        tx.execute(
            "UPDATE runs SET cancel_requested = true WHERE id = ANY($1) AND status = 'running'",
            &[&ids],
        )
        .await
        .map_err(db)?;
    }
    let mut outcomes = Vec::with_capacity(proposals.len());
    for (index, planned) in plan.outcomes.into_iter().enumerate() {
        let outcome = match planned {
            Planned::Done(outcome) => outcome,
            Planned::Insert { decision, .. } => match (inserted.get(&index), decision) {
                (None, _) => Outcome::Taken,
                (Some(&id), _) if pushed_out.contains_key(&index) => Outcome::Skipped {
                    id,
                    reason: pushed_out[&index].clone(),
                    kind: SkipKind::QueueFull,
                },
                (Some(&id), Decision::Queue { held }) => Outcome::Queued { id, reason: held },
                (Some(&id), Decision::Skip { reason, kind }) => {
                    Outcome::Skipped { id, reason, kind }
                }
            },
        };
        outcomes.push(outcome);
    }
    Ok(Claimed {
        outcomes,
        withdrawn: state.withdrawn,
        stops: state.stops,
    })
}

/// New rows, column by column, for one `INSERT ... SELECT FROM unnest(...)`.
#[derive(Debug, Default)]
struct Rows {
    index: Vec<i64>,
    key: Vec<String>,
    job: Vec<String>,
    plugin: Vec<String>,
    pool: Vec<String>,
    priority: Vec<i32>,
    digest: Vec<String>,
    recover: Vec<bool>,
    status: Vec<&'static str>,
    trigger: Vec<&'static str>,
    attempt: Vec<i32>,
    scheduled_at: Vec<i64>,
    queued_at: Vec<i64>,
    ready_at: Vec<Option<i64>>,
    held: Vec<bool>,
    pinned: Vec<bool>,
    error: Vec<Option<String>>,
    params: Vec<Option<String>>,
    pending: Vec<Option<String>>,
}

impl Rows {
    fn push(
        &mut self,
        index: usize,
        proposal: &Proposal,
        key: &str,
        digest: &str,
        decision: &Decision,
    ) -> Result<(), ClusterError> {
        let fire = &proposal.fire;
        let json = |value: &serde_json::Value| {
            serde_json::to_string(value).map_err(|e| ClusterError::Corrupt(e.to_string()))
        };
        let (status, error, held, params, pending) = match decision {
            Decision::Queue { held } => (
                "queued",
                held.clone(),
                held.is_some(),
                Some(json(&mask_secrets(&fire.params))?),
                if fire.own_params {
                    Some(json(&fire.params)?)
                } else {
                    None
                },
            ),
            // A skipped fire never reaches its plugin: its params would only be noise.
            Decision::Skip { reason, .. } => ("skipped", Some(reason.clone()), false, None, None),
        };
        self.index.push(i64::try_from(index).unwrap_or(i64::MAX));
        self.key.push(key.to_owned());
        self.job.push(fire.job.clone());
        self.plugin.push(fire.plugin.clone());
        self.pool.push(proposal.pool.clone());
        self.priority.push(proposal.priority);
        self.digest.push(digest.to_owned());
        self.recover.push(proposal.recover == Recover::Retry);
        self.status.push(status);
        self.trigger.push(fire.trigger.as_str());
        self.attempt
            .push(i32::try_from(fire.attempt).unwrap_or(i32::MAX));
        self.scheduled_at.push(fire.scheduled_at);
        self.queued_at.push(fire.accepted_at);
        self.ready_at.push(proposal.ready_at);
        self.held.push(held);
        self.pinned.push(proposal.pinned);
        self.error.push(error);
        self.params.push(params);
        self.pending.push(pending);
        Ok(())
    }

    /// Inserts the rows; the new id of each, by proposal index (a key that exists already
    /// has none: the unique key is the backstop of the checks made before).
    async fn insert(
        self,
        tx: &Transaction<'_>,
        locked: Locked,
        node: &str,
    ) -> Result<HashMap<usize, RunId>, ClusterError> {
        if self.index.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = tx
            .query(
                "INSERT INTO runs (fire_key, job, plugin, pool, priority, digest, recover, status,
                                   trigger, attempt, scheduled_at, queued_at, claimed_at,
                                   ready_at, held, pinned_to, error, params, pending_params)
                 SELECT t.key, t.job, t.plugin, t.pool, t.priority, t.digest, t.recover,
                        t.status, t.trigger, t.attempt, t.scheduled_at, t.queued_at, $20,
                        t.ready_at, t.held, CASE WHEN t.pinned THEN $21 END, t.error, t.params,
                        t.pending
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::integer[], $7::text[], $8::boolean[], $9::text[], $10::text[],
                             $11::integer[], $12::bigint[], $13::bigint[], $14::bigint[],
                             $15::boolean[], $16::boolean[], $17::text[], $18::text[],
                             $19::text[])
                      WITH ORDINALITY AS t (index, key, job, plugin, pool, priority, digest,
                                            recover, status, trigger, attempt, scheduled_at,
                                            queued_at, ready_at, held, pinned, error, params,
                                            pending, n)
                 ORDER BY t.n
                 ON CONFLICT (fire_key) DO NOTHING
                 RETURNING id, fire_key",
                &[
                    &self.index,
                    &self.key,
                    &self.job,
                    &self.plugin,
                    &self.pool,
                    &self.priority,
                    &self.digest,
                    &self.recover,
                    &self.status,
                    &self.trigger,
                    &self.attempt,
                    &self.scheduled_at,
                    &self.queued_at,
                    &self.ready_at,
                    &self.held,
                    &self.pinned,
                    &self.error,
                    &self.params,
                    &self.pending,
                    &locked.now,
                    &node,
                ],
            )
            .await
            .map_err(db)?;
        let by_key: HashMap<String, usize> = self
            .key
            .iter()
            .zip(&self.index)
            .map(|(key, index)| (key.clone(), usize::try_from(*index).unwrap_or(usize::MAX)))
            .collect();
        let mut ids = HashMap::new();
        for row in rows {
            let key: String = row.try_get("fire_key").map_err(db)?;
            if let Some(index) = by_key.get(&key) {
                ids.insert(*index, row.try_get("id").map_err(db)?);
            }
        }
        Ok(ids)
    }
}
