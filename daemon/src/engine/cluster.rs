//! The engine as one node of a cluster (`[cluster]`): its fires are proposed to the shared
//! database, which records each once across the nodes and applies the overlap policy and the
//! queue bound over every node's runs; the runs a node starts are the ones the database
//! admits to it under the cluster-wide caps. What stays the node's own: its timeline (every
//! node computes the same fires; a fire another node claimed first is simply not its), its
//! `node_max_concurrency`, its pressure thresholds, and the runs it carries out.

use std::collections::HashSet;
use std::sync::Arc;

use super::fire::{Fire, State, Then};
use super::{After, Effect, Engine, Observation, Start};
use crate::admission::{FireKey, PressureGate, SkipKind};
use crate::control::{Response, RunUpdate};
use crate::model::{Status, Trigger};
use crate::store::RunId;
use crate::store::postgres::{AdmittedRun, ClaimKey, Outcome, Proposal, Room};

/// A node polls the cluster's queue at least this often, besides being woken by claims.
const POLL_MS: i64 = 1_000;

/// What a node knows of itself when it joins.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// `node_id`.
    pub node: String,
    /// This process's incarnation (each join gets a new one).
    pub incarnation: i64,
    /// The kernel's boot id, for `@reboot` fires pinned to this node.
    pub boot_id: String,
    /// Runs this node may have in flight: `node_max_concurrency`, or the global cap.
    pub slots: u32,
    /// A node whose clock is further than this from the database's stops proposing fires.
    pub max_clock_skew_ms: i64,
    /// The database, as `user@host:port/database` (no password), for `pacer status`.
    pub database: String,
}

/// The node's own state in a cluster.
#[derive(Debug)]
pub(super) struct Cluster {
    identity: NodeIdentity,
    pressure: PressureGate,
    /// Runs of this node in flight.
    running: u32,
    /// An admission call is out; its answer comes as [`super::Input::Admitted`].
    admitting: bool,
    /// Something may be waiting (a claim committed, a run ended, a peer's notice).
    wanted: bool,
    /// The next poll of the cluster's queue, Unix ms.
    next_poll: i64,
    manual_seq: u64,
    /// This node's wall clock minus the database's, ms.
    offset_ms: i64,
    /// Jobs this node's config defines differently from the cluster's, warned about once.
    differs: HashSet<String>,
    /// The last heartbeat's failure, until one lands again.
    unreachable: Option<String>,
}

impl Cluster {
    pub(super) fn new(identity: NodeIdentity, pressure: PressureGate) -> Cluster {
        Cluster {
            identity,
            pressure,
            running: 0,
            admitting: false,
            wanted: true,
            next_poll: 0,
            manual_seq: 0,
            offset_ms: 0,
            differs: HashSet::new(),
            unreachable: None,
        }
    }

    /// Something may wait in the cluster's queue.
    pub(super) fn want(&mut self) {
        self.wanted = true;
    }

    /// Runs of this node in flight.
    pub(super) fn running(&self) -> u32 {
        self.running
    }

    /// Whether this node's clock is too far from the database's to propose fires.
    pub(super) fn skewed(&self) -> bool {
        self.offset_ms.abs() > self.identity.max_clock_skew_ms
    }

    /// When to look at the cluster's queue again, Unix ms.
    pub(super) fn next_wake(&self) -> Option<i64> {
        (!self.admitting && self.running < self.identity.slots).then_some(self.next_poll)
    }

    /// The node, for the status.
    pub(super) fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Why the job cannot run from this node, when its definition differs from the cluster's.
    pub(super) fn drift(&self, job: &str) -> Option<String> {
        self.differs.contains(job).then(|| {
            "defined differently on this node than in the cluster's config: this node proposes \
             none of its fires (pacer nodes shows the drift)"
                .to_owned()
        })
    }

    /// Why the cluster's database cannot be reached, since the last heartbeat failed.
    pub(super) fn unreachable(&self) -> Option<&str> {
        self.unreachable.as_deref()
    }
}

impl Engine {
    /// Proposes `fire` to the cluster: its record, its overlap policy and the queue bound are
    /// the database's decision, answered as [`super::Input::Claimed`]. A missed fire of a
    /// `catch_up = "all"` job waits in its job's backlog (not yet proposed) for its turn.
    pub(super) fn propose(&mut self, mut fire: Fire, then: &Then) -> Option<FireKey> {
        let key = self.next_key;
        self.next_key += 1;
        if *then == Then::Backlog {
            let job = fire.job.name.clone();
            fire.state = State::Backlog;
            self.fires.insert(key, fire);
            self.backlog.entry(job.clone()).or_default().push_back(key);
            if !self.catching_up.contains(&job) {
                self.backlog_turn.insert(job);
            }
            return Some(key);
        }
        self.claim(key, fire, *then == Then::Timeline);
        Some(key)
    }

    /// Proposes `fire` to be recorded `skipped` for `reason` (a missed fire its job's
    /// `catch_up` does not run), once across the nodes.
    pub(super) fn propose_skipped(&mut self, fire: Fire, reason: String, kind: SkipKind) {
        let key = self.next_key;
        self.next_key += 1;
        self.skip_reasons.insert(key, (reason, kind));
        self.claim(key, fire, false);
    }

    /// Sends the claim of fire `key`.
    fn claim(&mut self, key: FireKey, mut fire: Fire, deferred: bool) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let claim_key = match fire.trigger {
            _ if fire.at_boot => ClaimKey::Boot {
                job: fire.job.name.clone(),
                boot_id: cluster.identity.boot_id.clone(),
            },
            Trigger::Schedule | Trigger::CatchUp => ClaimKey::Schedule {
                job: fire.job.name.clone(),
                at: fire.scheduled_at,
            },
            Trigger::Retry => ClaimKey::Retry {
                previous: fire.retry_of.unwrap_or_default(),
            },
            Trigger::Chained => ClaimKey::Chained {
                job: fire.job.name.clone(),
                upstream: fire.upstream.unwrap_or_default(),
            },
            Trigger::Manual => {
                cluster.manual_seq += 1;
                ClaimKey::Manual(format!(
                    "{}.{}.{}",
                    cluster.identity.node, cluster.identity.incarnation, cluster.manual_seq
                ))
            }
        };
        let mut proposal = Proposal::of(&fire.job, claim_key, fire.record());
        proposal.skip = self.skip_reasons.remove(&key);
        if deferred {
            // Its instant on the database's clock, which the cluster's admission reads.
            proposal.ready_at = Some(fire.scheduled_at - cluster.offset_ms);
        }
        fire.state = State::Recording(Then::Cluster);
        self.fires.insert(key, fire);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.after.insert(ticket, After::Queued(key));
        self.out.push(Effect::Claim(Box::new(proposal), ticket));
    }

    /// A backlog fire's turn came: it is proposed now.
    pub(super) fn propose_backlog(&mut self, key: FireKey) {
        let Some(fire) = self.fires.remove(&key) else {
            return;
        };
        self.catching_up.insert(fire.job.name.clone());
        self.claim(key, fire, false);
    }

    /// The cluster's answers to this node's claims.
    pub(super) fn claimed(
        &mut self,
        outcomes: Vec<(u64, Result<Outcome, String>)>,
        withdrawn: Vec<(RunId, String, SkipKind)>,
        stops: Vec<(RunId, String)>,
    ) {
        for (ticket, outcome) in outcomes {
            let Some(After::Queued(key)) = self.after.remove(&ticket) else {
                continue;
            };
            let Some(fire) = self.fires.remove(&key) else {
                continue;
            };
            self.claim_outcome(&fire, outcome);
        }
        for (_, reason, kind) in withdrawn {
            tracing::info!("a waiting fire was declined: {reason}");
            self.observe(Observation::Skipped {
                job: String::new(),
                kind,
            });
        }
        for (id, reason) in stops {
            if let Some(&key) = self.by_run.get(&id) {
                self.out.push(Effect::Stop { key, reason });
            }
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.wanted = true;
        }
    }

    fn claim_outcome(&mut self, fire: &Fire, outcome: Result<Outcome, String>) {
        let backlog_done = fire.trigger == Trigger::CatchUp;
        if let (
            Ok(Outcome::Queued { .. } | Outcome::Skipped { .. } | Outcome::Taken),
            Some(cluster),
        ) = (&outcome, self.cluster.as_mut())
            && cluster.differs.remove(&fire.job.name)
        {
            tracing::info!(job = %fire.job.name, "this node's `{}` agrees with the cluster's again", fire.job.name);
        }
        match outcome {
            Ok(Outcome::Queued { id, reason }) => {
                tracing::debug!(job = %fire.job.name, run_id = id, "fire claimed and queued");
                if let Some(waiter) = fire.waiter {
                    let reason = reason.unwrap_or_else(|| {
                        "waiting for a node of the cluster to take it".to_owned()
                    });
                    self.reply(
                        waiter.to,
                        Response::Run(RunUpdate::Queued { id, reason }),
                        false,
                    );
                    self.out.push(Effect::Follow {
                        id,
                        to: waiter.to,
                        wait: waiter.wait,
                    });
                }
                if fire.at_boot {
                    self.out.push(Effect::MarkBooted(fire.job.name.clone()));
                }
                // A missed fire of a backlog lets the next one go once it ended, which may
                // be on another node: the edge watches its record.
                if backlog_done && self.catching_up.contains(&fire.job.name) {
                    self.out.push(Effect::Watch { id });
                }
            }
            Ok(Outcome::Skipped { id, reason, kind }) => {
                tracing::info!(job = %fire.job.name, trigger = %fire.trigger, "fire skipped: {reason}");
                self.observe(Observation::Skipped {
                    job: fire.job.name.clone(),
                    kind,
                });
                self.last_status
                    .insert(fire.job.name.clone(), Status::Skipped);
                if let Some(waiter) = fire.waiter {
                    self.reply(
                        waiter.to,
                        Response::Run(RunUpdate::Skipped {
                            id: Some(id),
                            reason,
                        }),
                        true,
                    );
                }
                if backlog_done && self.catching_up.remove(&fire.job.name) {
                    self.backlog_turn.insert(fire.job.name.clone());
                }
            }
            Ok(Outcome::Paused) => {
                self.pass_paused(fire);
                if let Some(waiter) = fire.waiter {
                    self.reply(
                        waiter.to,
                        Response::Error {
                            message: format!("`{}` is paused", fire.job.name),
                        },
                        true,
                    );
                }
            }
            Ok(Outcome::Taken) => {
                tracing::debug!(job = %fire.job.name, "fire claimed by another node");
                if backlog_done && self.catching_up.remove(&fire.job.name) {
                    self.backlog_turn.insert(fire.job.name.clone());
                }
            }
            Ok(Outcome::JobDiffers) => {
                let name = fire.job.name.clone();
                let cluster = self.cluster.as_mut().expect("claims are a cluster's");
                if cluster.differs.insert(name.clone()) {
                    tracing::warn!(
                        job = %name,
                        "this node's `{name}` differs from the cluster's (its config digest): \
                         this node proposes and runs none of its fires until the configs agree \
                         (pacer nodes shows the drift)"
                    );
                }
                if let Some(waiter) = fire.waiter {
                    self.reply(
                        waiter.to,
                        Response::Error {
                            message: format!(
                                "this node's `{name}` differs from the cluster's config; run it \
                                 from a node whose config matches, or reload this one"
                            ),
                        },
                        true,
                    );
                }
            }
            Err(error) => {
                tracing::error!(job = %fire.job.name, "a fire could not be claimed: {error}");
                if let Some(waiter) = fire.waiter {
                    self.reply(
                        waiter.to,
                        Response::Error {
                            message: format!("the run could not be recorded: {error}"),
                        },
                        true,
                    );
                }
            }
        }
    }

    /// Asks the cluster for runs when this node has room and something may wait.
    pub(super) fn cluster_admit(&mut self, now: i64) {
        let plugins: Vec<String> = self
            .registry
            .all()
            .iter()
            .filter(|info| info.state == crate::plugins::PluginState::Ok)
            .filter_map(|info| info.name.clone())
            .collect();
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if self.stopping || cluster.admitting {
            return;
        }
        let room = cluster.identity.slots.saturating_sub(cluster.running);
        if room == 0 || !(cluster.wanted || now >= cluster.next_poll) {
            return;
        }
        if let Some(reason) = cluster.pressure.blocked(now) {
            tracing::debug!("new starts wait: {reason}");
            cluster.next_poll = now + POLL_MS;
            return;
        }
        cluster.admitting = true;
        cluster.wanted = false;
        cluster.next_poll = now + POLL_MS;
        self.out.push(Effect::Admit(Room {
            slots: room,
            plugins,
        }));
    }

    /// The runs the cluster admitted to this node: each starts here.
    pub(super) fn admitted(&mut self, answer: Result<Vec<AdmittedRun>, String>, now: i64) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.admitting = false;
        let runs = match answer {
            Ok(runs) => runs,
            Err(error) => {
                tracing::warn!("cannot take runs from the cluster's queue: {error}");
                return;
            }
        };
        // A full answer may leave more waiting: ask again at once.
        cluster.wanted = !runs.is_empty();
        for run in runs {
            self.start_admitted(run, now);
        }
    }

    fn start_admitted(&mut self, run: AdmittedRun, now: i64) {
        let Some(job) = self.config.job(&run.job).map(Arc::clone) else {
            self.out.push(Effect::Refuse {
                run_id: run.id,
                reason: format!(
                    "the cluster admitted it to node `{}`, whose config has no job `{}`",
                    self.node_name(),
                    run.job
                ),
            });
            return;
        };
        let Some(plugin) = self
            .registry
            .get(&job.plugin)
            .map(|plugin| plugin.path.clone())
        else {
            let reason = self.plugin_problem(&job).unwrap_or_default();
            self.out.push(Effect::Refuse {
                run_id: run.id,
                reason,
            });
            return;
        };
        let key = self.next_key;
        self.next_key += 1;
        let mut fire = Fire::of(&job, run.trigger, run.scheduled_at, now);
        fire.attempt = run.attempt;
        fire.advances_schedule = false;
        if let Some(params) = run.params {
            fire.params = Arc::new(params);
            fire.own_params = true;
        }
        fire.run_id = Some(run.id);
        fire.state = State::Running;
        self.by_run.insert(run.id, key);
        self.observe(Observation::Admitted {
            job: Arc::clone(&job),
            wait_ms: run.queue_ms,
        });
        let start = Start {
            key,
            run_id: run.id,
            job: Arc::clone(&job),
            trigger: fire.trigger,
            attempt: fire.attempt,
            scheduled_at: fire.scheduled_at,
            params: Arc::clone(&fire.params),
            queue_ms: run.queue_ms,
            plugin,
            output_limit: self.config.daemon.output_limit,
        };
        self.fires.insert(key, fire);
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.running += 1;
        }
        self.out.push(Effect::Start(start));
    }

    /// A watched run (a missed fire of a backlog) is over, on whichever node ran it: the next
    /// missed fire of its job may go.
    pub(super) fn run_over(&mut self, job: &str) {
        if self.catching_up.remove(job) {
            self.backlog_turn.insert(job.to_owned());
        }
    }

    /// A run of this node ended: its slot is free, and the queue may hold more.
    pub(super) fn cluster_finished(&mut self) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.running = cluster.running.saturating_sub(1);
            cluster.wanted = true;
        }
    }

    /// A heartbeat was acknowledged: the cancels asked for this node's runs, and its clock's
    /// offset from the database's.
    /// A heartbeat failed: the status says so until one lands.
    pub(super) fn beat_failed(&mut self, error: String) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.unreachable = Some(error);
        }
    }

    pub(super) fn beat(&mut self, cancel: Vec<RunId>, offset_ms: i64) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let was_skewed = cluster.skewed();
        cluster.offset_ms = offset_ms;
        cluster.unreachable = None;
        match (was_skewed, cluster.skewed()) {
            (false, true) => tracing::error!(
                offset_ms,
                "this node's clock is {offset_ms} ms off the database's, more than \
                 max_clock_skew: it proposes no fires until it is set right (NTP)"
            ),
            (true, false) => tracing::warn!(offset_ms, "this node's clock agrees again"),
            _ => {}
        }
        for id in cancel {
            if let Some(&key) = self.by_run.get(&id)
                && self
                    .fires
                    .get(&key)
                    .is_some_and(|f| f.state == State::Running)
            {
                self.out.push(Effect::Stop {
                    key,
                    reason: "cancelled by pacer cancel (from another node)".to_owned(),
                });
            }
        }
    }

    /// A peer declared this node dead: its runs belong to the cluster again, so they stop
    /// at once, and nothing new is taken.
    pub(super) fn fenced(&mut self, why: &str) {
        tracing::error!("{why}: stopping every run of this node");
        self.stopping = true;
        self.stop_all(why);
    }

    /// A node's request to cancel run `id` goes to the cluster (the run may be anywhere).
    /// A run going on this node is stopped here, and answered here: asking the database too
    /// would race with the stop's own record and could answer "already over".
    pub(super) fn cluster_cancel(&mut self, id: RunId, to: super::ReplyTo) {
        if let Some(&key) = self.by_run.get(&id)
            && self
                .fires
                .get(&key)
                .is_some_and(|f| f.state == State::Running)
        {
            self.out.push(Effect::Stop {
                key,
                reason: "cancelled by pacer cancel".to_owned(),
            });
            self.reply(
                to,
                Response::Done {
                    message: format!(
                        "run {id} is being stopped (SIGTERM to its process group, SIGKILL 1 s \
                         later)"
                    ),
                },
                true,
            );
            return;
        }
        self.out.push(Effect::Cancel { id, to });
    }

    fn node_name(&self) -> &str {
        self.cluster
            .as_ref()
            .map_or("", |cluster| cluster.identity.node.as_str())
    }
}
