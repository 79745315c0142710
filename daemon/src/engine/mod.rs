//! The engine: every decision the daemon makes, and no I/O.
//!
//! It is a state machine fed with [`Input`]s (the timeline's next instant came, a write was
//! committed, a run started or ended, a control request, a reload) and the current instant,
//! and it answers with [`Effect`]s (write these records, start this run, stop that one, reply,
//! observe) that the daemon's edge (`crate::daemon`) carries out, feeding their outcomes back
//! in as inputs. So each decision (when a fire is due, catch-up, retry and back-off, pause,
//! chaining, the reload diff, overlap and admission) is tested at fixed instants, and the same
//! engine can sit on another store.
//!
//! Every fire is a record from the moment it is accepted: the engine asks for its `queued`
//! row and starts it only once that row is committed, so a crash never loses an accepted fire
//! and a restart finds each one again ([`Engine::new`] takes them back in their order).

mod catch_up;
pub mod chain;
mod cluster;
mod fire;
mod flow;
mod reload;
#[cfg(test)]
mod tests;
mod verbs;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admission::{Admission, AdmissionStatus, FireKey, SkipKind};
use crate::config::{Config, Job};
use crate::control::{Request, Response};
use crate::counter_map::CounterMap;
use crate::model::{RunSpan, Status, Trigger};
use crate::plugins::Registry;
use crate::scheduler::{Scheduler, TimerId};
use crate::store::postgres::{AdmittedRun, Outcome, Proposal, Room};
use crate::store::{JobState, QueuedFire, RunId, Write};
use foldhash::HashMap as FastMap;

pub use cluster::NodeIdentity;
use fire::Fire;
pub use fire::{ReplyTo, Waiter};

/// Fires of a paused job remembered for `pacer why`.
const PAUSED_FIRES_KEPT: usize = 20;

/// How long the plugin directories or the config file must be quiet before they are read
/// again: an installer's write, then rename, then chmod arrive as one change.
const SETTLE_MS: i64 = 500;

/// Names a write whose outcome the engine waits for.
pub type Ticket = u64;

/// Something the engine is told.
#[derive(Debug)]
pub enum Input {
    /// The instant [`Engine::next_wake`] named came (or the wall clock was re-read).
    Tick,
    /// Writes the engine asked for were committed (with the new row's id where one was
    /// inserted), or failed for good.
    Written(Vec<(Ticket, Result<Option<RunId>, String>)>),
    /// The run of a fire was spawned and its record is `running`.
    Started {
        /// The fire.
        key: FireKey,
        /// When its process was spawned, Unix ms.
        started_at: i64,
    },
    /// The run of a fire has no process left, and its end is being recorded: its slot is
    /// free. Optional: [`Input::Finished`] frees the slot too when this did not come first.
    Exited {
        /// The fire.
        key: FireKey,
    },
    /// The run of a fire ended: its processes are gone and its record is complete.
    Finished {
        /// The fire.
        key: FireKey,
        /// How it ended.
        status: Status,
        /// Why, if it did not succeed.
        error: Option<String>,
        /// Its spawn and reap, when it got that far.
        span: Option<RunSpan>,
    },
    /// A run was stopped before its `running` record was written, and that write was taken
    /// back: its plugin never ran and its record is still `queued`.
    Withdrawn {
        /// The fire.
        key: FireKey,
        /// Why it did not start.
        reason: String,
    },
    /// A control request from `pacer` or an application.
    Control {
        /// What was asked.
        request: Request,
        /// Where the answers go.
        reply: ReplyTo,
    },
    /// The config file or a drop-in changed on disk.
    ConfigChanged,
    /// SIGHUP: reload now.
    ReloadSignal,
    /// The config, read for a reload (or why it could not be).
    ConfigLoaded(Result<Box<Config>, String>),
    /// Something changed in a plugin directory.
    PluginsChanged,
    /// A rescan of the plugin directories finished.
    Rescanned(Registry),
    /// The `@reboot` jobs that have not fired in this boot.
    Boot(Vec<Arc<Job>>),
    /// The history became unwritable (why), or writable again (`None`).
    History(Option<String>),
    /// The cluster answered this node's claims: per ticket, and the waiting fires it declined
    /// and the runs to stop as a consequence.
    Claimed {
        /// Per claim.
        outcomes: Vec<(Ticket, Result<Outcome, String>)>,
        /// Waiting fires declined (replaced, pushed out of a full queue).
        withdrawn: Vec<(RunId, String, SkipKind)>,
        /// Runs to stop (`overlap = "replace"`).
        stops: Vec<(RunId, String)>,
    },
    /// The cluster admitted these runs to this node (or could not be asked).
    Admitted(Result<Vec<AdmittedRun>, String>),
    /// A peer changed the cluster's queue: there may be runs to take.
    ClusterChanged,
    /// A heartbeat was acknowledged.
    Beat {
        /// This node's runs whose cancel was asked for.
        cancel: Vec<RunId>,
        /// This node's clock minus the database's, ms.
        offset_ms: i64,
    },
    /// A heartbeat failed: the cluster's database cannot be reached (why).
    BeatFailed(String),
    /// The jobs paused in the cluster (any node may pause).
    PausedJobs(HashSet<String>),
    /// A run watched for a backlog is over (on whichever node ran it).
    RunOver {
        /// Its job.
        job: String,
    },
    /// This node was declared dead by its peers, or could not beat for longer than its
    /// lease allows: its runs stop now.
    Fenced(String),
    /// The daemon stops: no fire is taken or started any more. Fires waiting stay `queued`
    /// for the next start.
    Shutdown,
    /// Stop every run in flight, for this reason (the shutdown grace is over).
    StopAll(String),
}

/// Something the engine asks the edge to do.
#[derive(Debug)]
pub enum Effect {
    /// Write this record; with a ticket, report its outcome as [`Input::Written`].
    Write(Write, Option<Ticket>),
    /// Start the run of an admitted fire.
    Start(Start),
    /// Ask a run in flight to stop (SIGTERM to its process group, SIGKILL after a grace).
    Stop {
        /// The run's fire.
        key: FireKey,
        /// Why, for its record.
        reason: String,
    },
    /// Answer a client.
    Reply {
        /// Who.
        to: ReplyTo,
        /// The answer.
        response: Response,
        /// Whether this is its last answer (the connection may close).
        last: bool,
    },
    /// Update the metrics.
    Observe(Observation),
    /// Read the config file again and report it as [`Input::ConfigLoaded`].
    LoadConfig,
    /// Rescan the plugin directories, starting from this registry, and report
    /// [`Input::Rescanned`].
    Rescan(Registry, Vec<PathBuf>),
    /// Watch these plugin directories for changes.
    WatchPlugins(Vec<PathBuf>),
    /// Find which of these `@reboot` jobs have not fired in this boot, and report
    /// [`Input::Boot`].
    CheckBoot(Vec<Arc<Job>>),
    /// Remember that this `@reboot` job fired in this boot.
    MarkBooted(String),
    /// Propose a fire to the cluster; report the outcome as [`Input::Claimed`].
    Claim(Box<Proposal>, Ticket),
    /// Ask the cluster for runs this node may start; report [`Input::Admitted`].
    Admit(Room),
    /// A run the cluster admitted here cannot start here: record it failed, for this reason.
    Refuse {
        /// The run.
        run_id: RunId,
        /// Why.
        reason: String,
    },
    /// Cancel run `id`, wherever in the cluster it waits or runs; answer `to`.
    Cancel {
        /// The run.
        id: RunId,
        /// Who asked.
        to: ReplyTo,
    },
    /// Tell `to` what becomes of run `id` (it may run on another node), until it started, or
    /// with `wait` until it ended.
    Follow {
        /// The run.
        id: RunId,
        /// Who follows it.
        to: ReplyTo,
        /// Until its end.
        wait: bool,
    },
    /// Make this config the cluster's (after a reload): its jobs' digests and its caps.
    Publish(Arc<Config>),
    /// Report [`Input::RunOver`] once run `id` is over.
    Watch {
        /// The run.
        id: RunId,
    },
    /// Tell the service manager the daemon is ready again after a reload, and how it went.
    Ready {
        /// The jobs in force.
        jobs: usize,
        /// Whether the new config is in force (else the previous one stays).
        reload_applied: bool,
    },
}

/// What the edge needs to start a run.
#[derive(Debug, Clone)]
pub struct Start {
    /// The fire.
    pub key: FireKey,
    /// Its record.
    pub run_id: RunId,
    /// Its job.
    pub job: Arc<Job>,
    /// Why it runs.
    pub trigger: Trigger,
    /// Its attempt.
    pub attempt: u32,
    /// Its due instant, Unix ms.
    pub scheduled_at: i64,
    /// The params the plugin gets.
    pub params: Arc<serde_json::Value>,
    /// How long it waited for admission, ms.
    pub queue_ms: i64,
    /// The plugin library.
    pub plugin: Arc<Path>,
    /// Captured output kept, from the config in force when it was admitted (so a reload
    /// applies to the runs that start after it).
    pub output_limit: u64,
}

/// Something the metrics count.
#[derive(Debug)]
pub enum Observation {
    /// A fire was declined.
    Skipped {
        /// Its job.
        job: String,
        /// Which policy.
        kind: SkipKind,
    },
    /// A fire was admitted after waiting `wait_ms`.
    Admitted {
        /// Its job (the metric counts its pool).
        job: Arc<Job>,
        /// How long it waited.
        wait_ms: i64,
    },
    /// A run started this late.
    Started {
        /// `started_at - scheduled_at`.
        lateness_ms: i64,
    },
    /// A run ended.
    Finished {
        /// Its job.
        job: Arc<Job>,
        /// How.
        status: Status,
        /// Its spawn and reap.
        span: Option<RunSpan>,
    },
    /// Runs in flight and fires waiting now.
    Load(AdmissionStatus),
    /// A job was paused or resumed.
    Paused {
        /// The job.
        job: Arc<Job>,
        /// Whether it is paused now.
        paused: bool,
    },
    /// The jobs in force changed (a reload).
    Jobs {
        /// The config in force.
        config: Arc<Config>,
        /// The paused jobs.
        paused: HashSet<String>,
    },
    /// A job left the config.
    JobRemoved(String),
    /// How many plugin libraries are refused.
    PluginsRefused(usize),
    /// Whether the history can be written.
    HistoryWritable(bool),
}

/// What the history says at start.
#[derive(Debug, Default)]
pub struct Resume {
    /// Each job's last fire, paused flag and timing.
    pub states: HashMap<String, JobState>,
    /// Each job's newest status.
    pub last_status: HashMap<String, Status>,
    /// Fires still `queued`, oldest first.
    pub queued: Vec<QueuedFire>,
}

/// The daemon's state and every decision that changes it.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    registry: Registry,
    scheduler: Scheduler,
    admission: Box<dyn Admission>,
    fires: CounterMap<FireKey, Fire>,
    /// Run ids come from the database, not from a counter of the engine's own.
    by_run: FastMap<RunId, FireKey>,
    next_key: FireKey,
    /// What to do when each ticketed write is committed.
    after: CounterMap<Ticket, After>,
    next_ticket: Ticket,
    paused: HashSet<String>,
    /// Recent fires of paused jobs, which leave no record, for `pacer why`.
    paused_fires: HashMap<String, VecDeque<i64>>,
    last_status: FastMap<String, Status>,
    /// Missed fires of `catch_up = "all"` jobs, recorded, waiting for their turn, per job.
    backlog: HashMap<String, VecDeque<FireKey>>,
    /// Jobs whose next missed fire may go (their previous one ended or was declined).
    backlog_turn: HashSet<String>,
    /// Jobs with a missed fire out of their backlog, not ended yet.
    catching_up: HashSet<String>,
    /// Recorded fires waiting outside admission (on the timeline or in a backlog), per pool.
    deferred: FastMap<String, u32>,
    /// When the engine started, Unix ms: fires due before were missed while it was down.
    started_at: i64,
    /// Since when the daemon has been up, Unix ms (its status's uptime): the process may have
    /// waited for the history before the engine started.
    up_since: i64,
    pid: u32,
    rescan: Option<TimerId>,
    rescanning: bool,
    rescan_again: bool,
    reload: Option<TimerId>,
    /// Clients waiting for the reload under way.
    reloading: Vec<ReplyTo>,
    /// A config is being read.
    loading: bool,
    history_error: Option<String>,
    /// When the history last became unwritable and, once it could be written again, until
    /// when (Unix ms): the fires due in between waited for it, so a missed one says so.
    history_held: Option<(i64, Option<i64>)>,
    stopping: bool,
    /// This node's own state, when it is one of a cluster.
    cluster: Option<cluster::Cluster>,
    /// Fires proposed to the cluster to be recorded `skipped`, and why.
    skip_reasons: HashMap<FireKey, (String, SkipKind)>,
    out: Vec<Effect>,
}

/// What to do once a ticketed write is committed.
#[derive(Debug)]
enum After {
    /// A fire's `queued` record exists.
    Queued(FireKey),
    /// A fire's final record (declined or cancelled before it started) exists.
    Ended(FireKey),
    /// A pause or resume is recorded: tell the client `message`. If it could not be, it is
    /// undone (the history, which every restart and every node reads, is what holds), and the
    /// client is told so.
    Paused {
        /// Who asked.
        to: ReplyTo,
        /// The job.
        job: Arc<Job>,
        /// Whether it was paused (else resumed).
        paused: bool,
        /// Whether that changed anything (else there is nothing to undo).
        changed: bool,
        /// The answer once recorded.
        message: String,
    },
}

impl Engine {
    /// An engine for `config` at `now`, resuming from what the history says: each job's
    /// schedule continues after its last recorded fire (so fires missed while the daemon was
    /// down come due at once), and every fire still `queued` takes its place again, in its
    /// original order. Take the effects this produced with [`Engine::take_effects`].
    pub fn new(
        config: Arc<Config>,
        registry: Registry,
        admission: Box<dyn Admission>,
        resume: Resume,
        pid: u32,
        now: i64,
    ) -> Engine {
        Engine::with_cluster(config, registry, admission, resume, pid, now, None)
    }

    /// [`Engine::new`] for one node of a cluster (`node`), or for one daemon (`None`).
    pub fn with_cluster(
        config: Arc<Config>,
        registry: Registry,
        admission: Box<dyn Admission>,
        resume: Resume,
        pid: u32,
        now: i64,
        node: Option<NodeIdentity>,
    ) -> Engine {
        let Resume {
            states,
            last_status,
            queued,
        } = resume;
        let mut engine = Engine {
            scheduler: Scheduler::new(now, config.daemon.max_catch_up),
            admission,
            registry,
            fires: CounterMap::default(),
            by_run: FastMap::default(),
            next_key: 1,
            after: CounterMap::default(),
            next_ticket: 1,
            paused: states
                .iter()
                .filter(|(_, state)| state.paused)
                .map(|(name, _)| name.clone())
                .collect(),
            paused_fires: HashMap::new(),
            last_status: last_status.into_iter().collect(),
            backlog: HashMap::new(),
            backlog_turn: HashSet::new(),
            catching_up: HashSet::new(),
            deferred: FastMap::default(),
            started_at: now,
            up_since: now,
            pid,
            rescan: None,
            rescanning: false,
            rescan_again: false,
            reload: None,
            reloading: Vec::new(),
            loading: false,
            history_error: None,
            history_held: None,
            stopping: false,
            cluster: node.map(|node| {
                cluster::Cluster::new(
                    node,
                    crate::admission::PressureGate::new(config.daemon.pressure.clone()),
                )
            }),
            skip_reasons: HashMap::new(),
            out: Vec::new(),
            config,
        };
        for change in engine.registry.changes_since(&Registry::default()) {
            reload::log_change(&change);
        }
        engine.observe(Observation::PluginsRefused(engine.registry.refused_count()));
        engine.out.push(Effect::WatchPlugins(
            engine.config.daemon.plugin_dirs.clone(),
        ));
        let jobs = engine.config.jobs.clone();
        for job in jobs.iter().filter(|job| job.enabled) {
            let state = states.get(&job.name);
            let last_fire = engine.resume_schedule(job, state, now);
            engine.scheduler.add(Arc::clone(job), last_fire, now);
        }
        engine.requeue(queued, now);
        engine.check_boot();
        engine.admit(now);
        engine
    }

    /// Where `job`'s schedule continues from: its last recorded fire, unless it is new or its
    /// timing changed while the daemon was down (then from now, as a reload would, and that
    /// instant is written so a crash before its first fire loses none).
    fn resume_schedule(&mut self, job: &Job, state: Option<&JobState>, now: i64) -> Option<i64> {
        let timing = job.timing();
        let known = state.and_then(|state| state.last_fire.map(|at| (at, &state.timing)));
        match known {
            Some((at, Some(recorded))) if *recorded == timing => Some(at),
            Some((at, None)) => {
                // Written by a version that did not record timings: trust it, and note it.
                self.write(Write::LastFire {
                    job: job.name.clone(),
                    at,
                    timing: Some(timing),
                });
                Some(at)
            }
            _ => {
                self.write(Write::LastFire {
                    job: job.name.clone(),
                    at: now,
                    timing: Some(timing),
                });
                None
            }
        }
    }

    /// Counts the daemon's uptime from `at` (Unix ms), when its process began to start, rather
    /// than from the engine's start, which may have waited for a locked or full history.
    pub fn up_since(&mut self, at: i64) {
        self.up_since = at.min(self.started_at);
    }

    /// Handles `input` at `now`, then starts what admission allows; returns what to do.
    pub fn handle(&mut self, input: Input, now: i64) -> Vec<Effect> {
        match input {
            Input::Tick => self.tick(now),
            Input::Written(results) => self.written(results, now),
            Input::Started { key, started_at } => self.started(key, started_at),
            Input::Exited { key } => self.exited(key),
            Input::Finished {
                key,
                status,
                error,
                span,
            } => self.finished(key, status, error.as_deref(), span, now),
            Input::Withdrawn { key, reason } => self.withdrawn(key, &reason),
            Input::Control { request, reply } => self.control(request, reply, now),
            Input::ConfigChanged => self.config_changed(now),
            Input::ReloadSignal => self.request_reload(None),
            Input::ConfigLoaded(result) => self.apply_config(result, now),
            Input::PluginsChanged => self.plugins_changed(now),
            Input::Rescanned(registry) => self.rescanned(registry),
            Input::Boot(jobs) => self.boot(jobs, now),
            Input::History(error) => self.history(error, now),
            Input::Claimed {
                outcomes,
                withdrawn,
                stops,
            } => self.claimed(outcomes, withdrawn, stops),
            Input::Admitted(answer) => self.admitted(answer, now),
            Input::ClusterChanged => {
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.want();
                }
            }
            Input::Beat { cancel, offset_ms } => self.beat(cancel, offset_ms),
            Input::BeatFailed(error) => self.beat_failed(error),
            Input::PausedJobs(paused) => self.paused = paused,
            Input::RunOver { job } => self.run_over(&job),
            Input::Fenced(why) => self.fenced(&why),
            Input::Shutdown => self.stopping = true,
            Input::StopAll(reason) => self.stop_all(&reason),
        }
        self.admit(now);
        // The next fires of the jobs that just fired are computed when the timeline is next
        // looked at (`next_wake`, `take_due`): after this step's records were asked for, so in
        // the daemon while they are being committed, not before.
        self.take_effects()
    }

    /// The effects produced outside [`Engine::handle`] (by [`Engine::new`]).
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    /// When the engine has something to do next without outside events, Unix ms.
    pub fn next_wake(&mut self, now: i64) -> Option<i64> {
        if self.stopping {
            return None;
        }
        let timeline = self
            .scheduler
            .next_wake()
            .filter(|_| self.history_error.is_none());
        let admission = match &self.cluster {
            Some(cluster) => cluster.next_wake(),
            None => self.admission.next_wake(now),
        };
        [timeline, admission].into_iter().flatten().min()
    }

    /// Whether a run that exited still waits for its end to be recorded.
    pub fn ends_unrecorded(&self) -> bool {
        self.fires
            .values()
            .any(|candidate| candidate.state == fire::State::Exited)
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> u32 {
        match &self.cluster {
            Some(cluster) => cluster.running(),
            None => self.admission.status().total.in_flight,
        }
    }

    /// The config in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    fn tick(&mut self, now: i64) {
        if self.cluster.as_ref().is_some_and(cluster::Cluster::skewed) {
            // A node whose clock is off would propose fires at the wrong instants; the others
            // propose them.
            let due = self.scheduler.take_due(now);
            drop(due);
            return;
        }
        if self.stopping || self.history_error.is_some() {
            // Nothing moves past a history that cannot be written: the fires stay on the
            // timeline, and are taken (as missed, if long overdue) once it can.
            return;
        }
        let due = self.scheduler.take_due(now);
        self.take_due(due, now);
    }

    /// The history became unwritable (why), or writable again (`None`).
    fn history(&mut self, error: Option<String>, now: i64) {
        self.observe(Observation::HistoryWritable(error.is_none()));
        match (&self.history_error, &error) {
            (None, Some(_)) => self.history_held = Some((now, None)),
            (Some(_), None) => {
                if let Some((_, until)) = &mut self.history_held {
                    *until = Some(now);
                }
            }
            _ => {}
        }
        self.history_error = error;
    }

    fn write(&mut self, write: Write) {
        self.out.push(Effect::Write(write, None));
    }

    fn write_then(&mut self, write: Write, after: After) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.after.insert(ticket, after);
        self.out.push(Effect::Write(write, Some(ticket)));
    }

    fn observe(&mut self, observation: Observation) {
        self.out.push(Effect::Observe(observation));
    }

    fn reply(&mut self, to: ReplyTo, response: Response, last: bool) {
        self.out.push(Effect::Reply { to, response, last });
    }

    /// Why the job's plugin cannot be used now, if it cannot.
    fn plugin_problem(&self, job: &Job) -> Option<String> {
        self.registry
            .problem(&job.plugin, &self.config.daemon.plugin_dirs)
    }

    /// Remembers a paused job's fire, which leaves no record; its schedule still moves on.
    fn pass_paused(&mut self, fire: &Fire) {
        let fires = self.paused_fires.entry(fire.job.name.clone()).or_default();
        if fires.len() == PAUSED_FIRES_KEPT {
            fires.pop_front();
        }
        fires.push_back(fire.scheduled_at);
        if fire.advances_schedule {
            self.write(Write::LastFire {
                job: fire.job.name.clone(),
                at: fire.scheduled_at,
                timing: None,
            });
        }
    }
}

/// The message for a job that is not in the config in force, with the near name a typo meant.
fn unknown_job(config: &Config, name: &str) -> String {
    match config.nearest_job(name) {
        Some(near) => format!("no job `{name}` in the config in force: did you mean `{near}`?"),
        None => format!("no job `{name}` in the config in force (pacer jobs lists them)"),
    }
}
