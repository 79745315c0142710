//! The daemon's state and every decision that changes it. One task owns the engine, so no
//! lock guards it: fires, run events and control requests are handled one at a time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::chain::{Upstream, chained_params};
use super::metrics::Metrics;
use super::runner::{RunEnv, RunEvent, execute};
use crate::config::{CatchUp, Config, Job};
use crate::control::{JobInfo, Request as ControlRequest, Response, StatusInfo, Waiting, WhyInfo};
use crate::dispatch::{Dispatcher, Request, RunUpdate, Skip, SkipKind};
use crate::model::{Status, Trigger};
use crate::plugins::{PluginWatcher, Registry, ScanOptions};
use crate::scheduler::{Due, MAX_LISTED_MISSED, Scheduler};
use crate::store::{JobState, Skipped, Store};
use crate::time::{rfc3339_ms, to_ms};
use crate::units::format_duration;

/// Fires of a paused job remembered for `pacer why`.
const PAUSED_FIRES_KEPT: usize = 20;

/// How long the plugin directories must be quiet before a rescan: an installer's write, then
/// rename, then chmod arrive as one change.
const PLUGIN_SETTLE_MS: i64 = 500;

/// A missed fire, or a stretch of them not listed one by one, waiting for its job's
/// `catch_up` policy.
enum Missed {
    Fire(Arc<Job>, i64),
    /// The job, the first fire of the stretch and its end (exclusive), Unix ms.
    Gap(Arc<Job>, i64, i64),
}

/// Where the engine's background work reports back.
#[derive(Debug)]
pub struct Channels {
    /// Changes in the plugin directories.
    pub plugin_changes: mpsc::UnboundedSender<()>,
    /// Finished rescans of the plugin directories.
    pub rescans: mpsc::UnboundedSender<Registry>,
}

/// The daemon's state.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    registry: Registry,
    scheduler: Scheduler,
    dispatcher: Dispatcher,
    paused: HashSet<String>,
    last_status: HashMap<String, Status>,
    /// Requests held until their `scheduled_at`: retries, and `@reboot` fires with jitter.
    deferred: BinaryHeap<Reverse<(i64, u64)>>,
    deferred_requests: HashMap<u64, Request>,
    next_deferred: u64,
    watcher: PluginWatcher,
    metrics: Arc<Metrics>,
    /// When to rescan the plugin directories: changes are let settle first.
    rescan_at: Option<i64>,
    rescanning: bool,
    rescans: mpsc::UnboundedSender<Registry>,
    /// When to reload after the config file changed.
    reload_at: Option<i64>,
    /// Missed fires of `catch_up = "all"` jobs not submitted yet, per job.
    catch_up_backlog: HashMap<String, VecDeque<Request>>,
    /// Jobs whose next missed fire may be submitted (their previous one ended or was skipped).
    catch_up_next: HashSet<String>,
    /// Recent fires of paused jobs, which leave no record, for `pacer why`.
    paused_fires: HashMap<String, VecDeque<i64>>,
    env: Arc<RunEnv>,
    started: std::time::Instant,
    started_at_ms: i64,
    records: JoinSet<()>,
}

impl Engine {
    /// An engine for `config`, resuming from the persisted job states.
    pub fn new(
        config: Arc<Config>,
        registry: Registry,
        states: &HashMap<String, JobState>,
        last_status: HashMap<String, Status>,
        env: Arc<RunEnv>,
        channels: Channels,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let now = to_ms(env.clock.now());
        let mut scheduler = Scheduler::new(now, config.daemon.max_catch_up);
        for job in config.jobs.iter().filter(|job| job.enabled) {
            let last_fire = states.get(&job.name).and_then(|s| s.last_fire);
            scheduler.add(Arc::clone(job), last_fire, now);
        }
        let dispatcher = Dispatcher::new(
            config.daemon.max_concurrency,
            config.daemon.max_queue,
            &config.pools,
            config.daemon.pressure.clone(),
            now,
        );
        for change in registry.changes_since(&Registry::default()) {
            log_change(&change);
        }
        metrics.plugins_refused(registry.refused_count());
        let mut watcher = PluginWatcher::new(channels.plugin_changes);
        watcher.watch(&config.daemon.plugin_dirs);
        Engine {
            watcher,
            metrics,
            rescan_at: None,
            rescanning: false,
            rescans: channels.rescans,
            reload_at: None,
            catch_up_backlog: HashMap::new(),
            catch_up_next: HashSet::new(),
            paused_fires: HashMap::new(),
            paused: states
                .iter()
                .filter(|(_, s)| s.paused)
                .map(|(name, _)| name.clone())
                .collect(),
            config,
            store: Arc::clone(&env.store),
            registry,
            scheduler,
            dispatcher,
            last_status,
            deferred: BinaryHeap::new(),
            deferred_requests: HashMap::new(),
            next_deferred: 0,
            env,
            started: std::time::Instant::now(),
            started_at_ms: now,
            records: JoinSet::new(),
        }
    }

    /// The current wall-clock time, Unix ms.
    pub fn now(&self) -> i64 {
        to_ms(self.env.clock.now())
    }

    /// The config file or a drop-in changed: reload once it has been quiet for a moment.
    pub fn config_changed(&mut self, now: i64) {
        self.reload_at = Some(now + PLUGIN_SETTLE_MS);
    }

    /// Something changed in a plugin directory: rescan once it has been quiet for a moment.
    pub fn plugins_changed(&mut self, now: i64) {
        self.rescan_at = Some(now + PLUGIN_SETTLE_MS);
    }

    fn start_rescan(&mut self) {
        self.rescan_at = None;
        self.rescanning = true;
        let registry = self.registry.clone();
        let dirs = self.config.daemon.plugin_dirs.clone();
        let launcher = self.env.launcher.clone();
        let done = self.rescans.clone();
        tokio::spawn(async move {
            let rescanned = registry
                .rescan(&dirs, &launcher, ScanOptions::for_current_user())
                .await;
            let _ = done.send(rescanned);
        });
    }

    /// Puts a finished rescan in force: new runs use what it found.
    pub fn install_registry(&mut self, registry: Registry) {
        self.rescanning = false;
        for change in registry.changes_since(&self.registry) {
            log_change(&change);
        }
        self.metrics.plugins_refused(registry.refused_count());
        self.registry = registry;
        self.watcher.watch(&self.config.daemon.plugin_dirs);
    }

    /// Submits `@reboot` jobs due in this boot (their fires are due now, jitter included).
    pub fn fire_at_boot(&mut self, jobs: Vec<Arc<Job>>) {
        let now = self.now();
        for job in jobs {
            let offset = i64::try_from(job.jitter_offset.as_millis()).unwrap_or(0);
            let mut request = self.fire(&job, Trigger::Schedule, now + offset);
            request.advances_schedule = false;
            if offset == 0 {
                self.submit_fire(request, now);
            } else {
                self.defer(request);
            }
        }
        self.admit(now);
    }

    /// Holds `request` until its `scheduled_at`.
    fn defer(&mut self, request: Request) {
        let key = self.next_deferred;
        self.next_deferred += 1;
        self.deferred.push(Reverse((request.scheduled_at, key)));
        self.deferred_requests.insert(key, request);
    }

    /// When the engine has something to do next without outside events.
    pub fn wake_at(&mut self, now: i64) -> Option<i64> {
        let deferred = self.deferred.peek().map(|Reverse((at, _))| *at);
        let rescan = self.rescan_at.filter(|_| !self.rescanning);
        [
            self.scheduler.next_wake(),
            self.dispatcher.next_wake(now),
            deferred,
            rescan,
            self.reload_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles everything due at `now`, then starts what admission allows.
    pub fn tick(&mut self, now: i64) {
        if self.rescan_at.is_some_and(|at| at <= now) && !self.rescanning {
            self.start_rescan();
        }
        if self.reload_at.is_some_and(|at| at <= now) {
            self.reload_at = None;
            tracing::info!("the config file changed; reloading");
            // The outcome is logged by `reload`; an invalid file leaves the old config in force.
            let _ = self.reload(now);
        }
        let due = self.scheduler.take_due(now);
        self.handle_due(due, now);
        self.submit_next_catch_ups(now);
        while let Some(Reverse((at, key))) = self.deferred.peek().copied() {
            if at > now {
                break;
            }
            self.deferred.pop();
            if let Some(request) = self.deferred_requests.remove(&key) {
                self.submit_fire(request, now);
            }
        }
        self.admit(now);
        // Next fires are computed once this tick's fires are in admission (or started).
        self.scheduler.reschedule();
    }

    fn handle_due(&mut self, due: Vec<Due>, now: i64) {
        let mut missed: Vec<Missed> = Vec::new();
        for item in due {
            match item {
                Due::Fire {
                    job,
                    at,
                    missed: false,
                } => {
                    let request = self.fire(&job, Trigger::Schedule, at);
                    self.submit_fire(request, now);
                }
                Due::Fire {
                    job,
                    at,
                    missed: true,
                } => missed.push(Missed::Fire(job, at)),
                Due::Gap { job, from, before } => missed.push(Missed::Gap(job, from, before)),
            }
        }
        self.catch_up(missed, now);
    }

    /// Applies each job's `catch_up` policy to its missed fires, recording them in due order:
    /// `skip` records each; `once` runs the latest and records the others; `all` runs the
    /// newest `max_catch_up` and records the older ones.
    fn catch_up(&mut self, missed: Vec<Missed>, now: i64) {
        let mut count: HashMap<&str, u32> = HashMap::new();
        for item in &missed {
            if let Missed::Fire(job, _) = item {
                *count.entry(job.name.as_str()).or_default() += 1;
            }
        }
        let mut remaining: HashMap<String, u32> = count
            .into_iter()
            .map(|(name, n)| (name.to_owned(), n))
            .collect();
        let cap = self.config.daemon.max_catch_up;
        for item in missed {
            let (job, at) = match item {
                Missed::Fire(job, at) => (job, at),
                Missed::Gap(job, from, before) => {
                    let request = self.fire(&job, Trigger::CatchUp, from);
                    self.skip_missed(
                        request,
                        format!(
                            "missed, with every later fire before {}: more than {MAX_LISTED_MISSED} \
                             fires were missed, and those between are not recorded one by one",
                            rfc3339_ms(before)
                        ),
                    );
                    continue;
                }
            };
            let left = remaining.get_mut(&job.name).map_or(0, |left| {
                *left -= 1;
                *left
            });
            let why = if at <= self.started_at_ms {
                "missed while pacerd was not running".to_owned()
            } else {
                format!(
                    "missed: found {} late (the machine was suspended or the wall clock jumped)",
                    format_duration(Duration::from_millis(u64::try_from(now - at).unwrap_or(0)))
                )
            };
            let request = self.fire(&job, Trigger::CatchUp, at);
            match job.catch_up {
                // One after another, so a long outage does not put every missed fire in the
                // queue at once (where `overlap = "skip"` would decline all but the first).
                CatchUp::All if left < cap => {
                    self.catch_up_backlog
                        .entry(job.name.clone())
                        .or_default()
                        .push_back(request);
                    self.catch_up_next.insert(job.name.clone());
                }
                CatchUp::All => self.skip_missed(
                    request,
                    format!(
                        "{why}; catch_up = \"all\" runs only the newest max_catch_up = {cap} \
                         missed fires"
                    ),
                ),
                CatchUp::Once if left == 0 => self.submit_fire(request, now),
                CatchUp::Once => self.skip_missed(
                    request,
                    format!("{why}; catch_up = \"once\" runs only the latest missed fire"),
                ),
                CatchUp::Skip => self.skip_missed(request, format!("{why} (catch_up = \"skip\")")),
            }
        }
    }

    fn fire(&self, job: &Arc<Job>, trigger: Trigger, at: i64) -> Request {
        Request {
            job: Arc::clone(job),
            trigger,
            attempt: 1,
            scheduled_at: at,
            params: job.params.clone(),
            advances_schedule: true,
            notify: None,
        }
    }

    /// A fire of the job's own (schedule, catch-up, retry, `@reboot`): a paused job's fire
    /// leaves no record, only its schedule moves on.
    fn submit_fire(&mut self, request: Request, now: i64) {
        if self.paused.contains(&request.job.name) {
            self.advance_quietly(&request);
            return;
        }
        self.submit(request, now);
    }

    fn skip_missed(&mut self, request: Request, reason: String) {
        if self.paused.contains(&request.job.name) {
            self.advance_quietly(&request);
            return;
        }
        self.record_skip(Skip {
            request,
            reason,
            kind: SkipKind::Missed,
        });
    }

    fn advance_quietly(&mut self, request: &Request) {
        let fires = self
            .paused_fires
            .entry(request.job.name.clone())
            .or_default();
        if fires.len() == PAUSED_FIRES_KEPT {
            fires.pop_front();
        }
        fires.push_back(request.scheduled_at);
        if !request.advances_schedule {
            return;
        }
        let store = Arc::clone(&self.store);
        let write = store.advance_last_fire(request.job.name.clone(), request.scheduled_at);
        self.records.spawn(async move {
            if let Err(e) = write.await {
                tracing::error!("cannot record the last fire: {e}");
            }
        });
    }

    /// Submits the next missed fire of each `catch_up = "all"` job whose previous one is done.
    fn submit_next_catch_ups(&mut self, now: i64) {
        for name in std::mem::take(&mut self.catch_up_next) {
            // A paused job's fires only move its schedule on, so they need no turn.
            while let Some(request) = self
                .catch_up_backlog
                .get_mut(&name)
                .and_then(VecDeque::pop_front)
            {
                let paused = self.paused.contains(&name);
                self.submit_fire(request, now);
                if !paused {
                    break;
                }
            }
            if self
                .catch_up_backlog
                .get(&name)
                .is_some_and(VecDeque::is_empty)
            {
                self.catch_up_backlog.remove(&name);
            }
        }
    }

    /// Sends a request through admission, unless its plugin is missing.
    pub fn submit(&mut self, request: Request, now: i64) {
        if let Some(reason) = self.plugin_problem(&request.job) {
            self.record_skip(Skip {
                request,
                reason,
                kind: SkipKind::PluginMissing,
            });
            return;
        }
        for skip in self.dispatcher.submit(request, now) {
            self.record_skip(skip);
        }
    }

    /// Why the job's plugin cannot be used now, if it cannot.
    fn plugin_problem(&self, job: &Job) -> Option<String> {
        self.registry
            .problem(&job.plugin, &self.config.daemon.plugin_dirs)
    }

    fn record_skip(&mut self, skip: Skip) {
        let Skip {
            request,
            reason,
            kind,
        } = skip;
        self.metrics.skipped(&request.job.name, kind);
        tracing::info!(job = %request.job.name, trigger = %request.trigger, "fire skipped: {reason}");
        if request.trigger == Trigger::CatchUp {
            self.catch_up_next.insert(request.job.name.clone());
        }
        request.tell(RunUpdate::Skipped {
            reason: reason.clone(),
        });
        self.last_status
            .insert(request.job.name.clone(), Status::Skipped);
        let write = self.store.record_skipped(Skipped {
            job: request.job.name.clone(),
            plugin: request.job.plugin.clone(),
            trigger: request.trigger,
            attempt: request.attempt,
            scheduled_at: request.scheduled_at,
            reason,
            advances_schedule: request.advances_schedule,
        });
        self.records.spawn(async move {
            if let Err(e) = write.await {
                tracing::error!("cannot record a skipped fire: {e}");
            }
        });
    }

    fn admit(&mut self, now: i64) {
        self.admit_due(now);
        self.metrics.load(&self.dispatcher.status());
    }

    fn admit_due(&mut self, now: i64) {
        for admitted in self.dispatcher.admit(now) {
            let job = &admitted.request.job;
            let Some(path) = self.registry.get(&job.plugin).map(|p| p.path.clone()) else {
                // Only possible if the plugin vanished while the fire was queued.
                let reason = self.plugin_problem(job).unwrap_or_default();
                self.dispatcher.finished(admitted.slot);
                self.record_skip(Skip {
                    request: admitted.request,
                    reason,
                    kind: SkipKind::PluginMissing,
                });
                continue;
            };
            self.metrics.admitted(&job.pool, admitted.queue_ms);
            tokio::spawn(execute(Arc::clone(&self.env), admitted, path));
        }
    }

    /// Takes in what a run reports.
    pub fn on_event(&mut self, event: RunEvent, now: i64) {
        match event {
            RunEvent::Started {
                slot,
                id,
                lateness_ms,
            } => {
                self.dispatcher.started(slot, id);
                self.metrics.run_started(lateness_ms);
            }
            RunEvent::Finished {
                slot,
                id,
                status,
                error,
                span,
                request,
            } => {
                self.dispatcher.finished(slot);
                self.metrics.run_finished(&request.job.name, status, span);
                self.last_status.insert(request.job.name.clone(), status);
                if request.trigger == Trigger::CatchUp {
                    self.catch_up_next.insert(request.job.name.clone());
                }
                if status.is_failure() && request.attempt <= request.job.retries {
                    self.schedule_retry(request, now);
                } else {
                    let upstream = Upstream {
                        job: &request.job.name,
                        id,
                        status,
                        error: error.as_deref(),
                    };
                    self.chain(&request.job, &upstream, now);
                }
            }
        }
        self.submit_next_catch_ups(now);
        self.admit(now);
    }

    /// Starts the jobs the finished run's job names for its outcome (after its last retry).
    fn chain(&mut self, job: &Job, upstream: &Upstream<'_>, now: i64) {
        let targets = match upstream.status {
            Status::Succeeded => &job.on_success,
            status if status.is_failure() => &job.on_failure,
            _ => return,
        };
        for name in targets {
            let Some(target) = self.config.job(name).map(Arc::clone) else {
                tracing::warn!(job = %job.name, "chained job `{name}` is no longer in the config");
                continue;
            };
            let params = chained_params(&target.params, upstream, target.plugin == "exec");
            let request = Request {
                job: target,
                trigger: Trigger::Chained,
                attempt: 1,
                scheduled_at: now,
                params: Arc::new(params),
                advances_schedule: false,
                notify: None,
            };
            self.submit_fire(request, now);
        }
    }

    /// A failed attempt is retried after `retry_backoff`, doubling per attempt up to
    /// `retry_backoff_max`; the retry waits in a timer, not in a sleeping task.
    fn schedule_retry(&mut self, failed: Request, now: i64) {
        let job = &failed.job;
        let doublings = failed.attempt.saturating_sub(1).min(30);
        let delay = job
            .retry_backoff
            .saturating_mul(1 << doublings)
            .min(job.retry_backoff_max);
        let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        self.defer(Request {
            job: Arc::clone(job),
            trigger: Trigger::Retry,
            attempt: failed.attempt + 1,
            scheduled_at: at,
            params: failed.params,
            advances_schedule: false,
            notify: failed.notify,
        });
    }

    /// Carries out a control request; answers go to `reply` (several for `run --wait`).
    pub fn handle(&mut self, request: ControlRequest, reply: &mpsc::UnboundedSender<Response>) {
        let now = self.now();
        let answer = match request {
            ControlRequest::Status => Response::Status(self.status()),
            ControlRequest::Jobs => Response::Jobs { jobs: self.jobs() },
            ControlRequest::Plugins => Response::Plugins {
                plugins: self.registry.all().to_vec(),
            },
            ControlRequest::Run { job, params, wait } => match self.run_now(&job, params, now) {
                Ok(updates) => {
                    tokio::spawn(forward_updates(updates, reply.clone(), wait));
                    return;
                }
                Err(message) => Response::Error { message },
            },
            ControlRequest::Cancel { id } => {
                if self.dispatcher.cancel(id, "cancelled by pacer cancel") {
                    Response::Done {
                        message: format!(
                            "run {id} is being stopped (SIGTERM to its process group, SIGKILL 1 s later)"
                        ),
                    }
                } else {
                    Response::Error {
                        message: format!(
                            "run {id} is not running (pacer show {id} tells what became of it)"
                        ),
                    }
                }
            }
            ControlRequest::Pause { job } => self.set_paused(&job, true),
            ControlRequest::Resume { job } => self.set_paused(&job, false),
            ControlRequest::Reload => match self.reload(now) {
                Ok(message) => Response::Done { message },
                Err(message) => Response::Error { message },
            },
            ControlRequest::Why { job } => match self.config.job(&job) {
                Some(_) => Response::Why(WhyInfo {
                    next_fire: self.scheduler.next_fire(&job),
                    paused: self.paused.contains(&job),
                    paused_fires: self
                        .paused_fires
                        .get(&job)
                        .map(|fires| fires.iter().copied().collect())
                        .unwrap_or_default(),
                    waiting: self
                        .dispatcher
                        .waiting(&job)
                        .into_iter()
                        .map(|(scheduled_at, since, reason)| Waiting {
                            scheduled_at,
                            since,
                            reason,
                        })
                        .collect(),
                }),
                None => Response::Error {
                    message: unknown_job(&job),
                },
            },
        };
        let _ = reply.send(answer);
    }

    /// Submits a manual run of `name`; returns where its updates arrive.
    fn run_now(
        &mut self,
        name: &str,
        params: Option<serde_json::Value>,
        now: i64,
    ) -> Result<mpsc::UnboundedReceiver<RunUpdate>, String> {
        let job = Arc::clone(self.config.job(name).ok_or_else(|| unknown_job(name))?);
        let params = merge_params(&job.params, params)?;
        let (notify, updates) = mpsc::unbounded_channel();
        let request = Request {
            job: Arc::clone(&job),
            trigger: Trigger::Manual,
            attempt: 1,
            scheduled_at: now,
            params: Arc::new(params),
            advances_schedule: false,
            notify: Some(notify.clone()),
        };
        self.submit(request, now);
        self.admit(now);
        // Still waiting after admission: say so now rather than when it starts, which may be
        // much later. (A manual fire is due `now`.)
        if let Some((_, _, reason)) = self
            .dispatcher
            .waiting(&job.name)
            .into_iter()
            .find(|(due, since, _)| *due == now && *since == now)
        {
            let _ = notify.send(RunUpdate::Queued { reason });
        }
        Ok(updates)
    }

    fn set_paused(&mut self, name: &str, paused: bool) -> Response {
        let Some(job) = self.config.job(name) else {
            return Response::Error {
                message: unknown_job(name),
            };
        };
        self.metrics.paused(job, paused, self.env.clock.now());
        let changed = if paused {
            self.paused.insert(name.to_owned())
        } else {
            self.paused.remove(name)
        };
        let write = self.store.set_paused(name.to_owned(), paused);
        self.records.spawn(async move {
            if let Err(e) = write.await {
                tracing::error!("cannot record a pause: {e}");
            }
        });
        let message = match (paused, changed) {
            (true, true) => format!(
                "paused `{name}`: its fires leave no record until `pacer resume {name}` (this survives restarts)"
            ),
            (true, false) => format!("`{name}` was already paused"),
            (false, true) => format!("resumed `{name}`"),
            (false, false) => format!("`{name}` was not paused"),
        };
        tracing::info!("{message}");
        Response::Done { message }
    }

    /// Re-reads the config and applies the difference: running runs are untouched, an unchanged
    /// job keeps its next fire, a changed schedule computes its next fire from now. An invalid
    /// config changes nothing.
    pub fn reload(&mut self, now: i64) -> Result<String, String> {
        super::notify::reloading();
        let outcome = self.apply_new_config(now);
        crate::sys::return_free_memory();
        let last_reload = match &outcome {
            Ok(_) => super::notify::Reload::Applied,
            Err(_) => super::notify::Reload::Refused,
        };
        super::notify::ready(self.config.jobs.len(), Some(last_reload));
        outcome
    }

    fn apply_new_config(&mut self, now: i64) -> Result<String, String> {
        let new = crate::config::load(&self.config.path, crate::config::Environment::current())
            .map_err(|errors| {
                let message =
                    format!("the new config is invalid; the old one stays in force:\n{errors}");
                tracing::error!("{message}");
                message
            })?;
        let old = Arc::clone(&self.config);
        let (mut added, mut changed, mut unchanged, mut removed) = (0, 0, 0, 0);
        for job in &new.jobs {
            match old.job(&job.name) {
                Some(before) if same_timing(before, job) => {
                    unchanged += 1;
                    self.scheduler.update(Arc::clone(job));
                }
                before => {
                    if before.is_some() {
                        changed += 1;
                    } else {
                        added += 1;
                    }
                    self.scheduler.remove(&job.name);
                    if job.enabled {
                        self.scheduler.add(Arc::clone(job), None, now);
                    }
                }
            }
        }
        for job in &old.jobs {
            if new.job(&job.name).is_none() {
                removed += 1;
                self.scheduler.remove(&job.name);
                self.metrics.job_removed(&job.name);
            }
        }
        self.scheduler.set_max_catch_up(new.daemon.max_catch_up);
        self.dispatcher.reconfigure(
            new.daemon.max_concurrency,
            new.daemon.max_queue,
            &new.pools,
            new.daemon.pressure.clone(),
            now,
        );
        let mut notes = Vec::new();
        for (key, differs) in [
            ("database", new.daemon.database != old.daemon.database),
            ("socket", new.daemon.socket != old.daemon.socket),
            (
                "metrics_listen",
                new.daemon.metrics_listen != old.daemon.metrics_listen,
            ),
            (
                "history_retention",
                new.daemon.history_retention != old.daemon.history_retention,
            ),
        ] {
            if differs {
                notes.push(format!("`{key}` changes apply at the next start"));
            }
        }
        self.metrics
            .schedules(&new.jobs, &self.paused, self.env.clock.now());
        self.config = Arc::new(new);
        // A reload re-reads everything, the plugins too (cheap: unchanged libraries are not
        // loaded again), so it is the way to make anything the watch missed count.
        self.watcher.watch(&self.config.daemon.plugin_dirs);
        self.rescan_at = Some(now);
        let runtime_dir = old
            .daemon
            .socket
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        self.fire_at_boot(super::reboot::take_due(runtime_dir, &self.config.jobs));
        let mut message = format!(
            "reloaded {}: {added} job(s) added, {changed} changed, {removed} removed, {unchanged} unchanged",
            self.config.path.display()
        );
        for note in notes {
            message.push_str("; ");
            message.push_str(&note);
        }
        tracing::info!("{message}");
        Ok(message)
    }

    /// The config in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    fn status(&self) -> StatusInfo {
        let dispatch = self.dispatcher.status();
        StatusInfo {
            running: true,
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            in_flight: dispatch.total.in_flight,
            queued: dispatch.total.queued,
            pools: dispatch.pools,
            waiting_on: dispatch.waiting_on,
        }
    }

    fn jobs(&self) -> Vec<JobInfo> {
        self.config
            .jobs
            .iter()
            .map(|job| {
                JobInfo::new(
                    job,
                    self.paused.contains(&job.name),
                    self.scheduler.next_fire(&job.name),
                    self.last_status.get(&job.name).copied(),
                    self.plugin_problem(job),
                )
            })
            .collect()
    }

    /// Stops admitting: every waiting fire is recorded as skipped.
    pub fn stop_admitting(&mut self) {
        for request in self.dispatcher.drain() {
            self.record_skip(Skip {
                request,
                reason: "pacerd stopped before the run could start".to_owned(),
                kind: SkipKind::Shutdown,
            });
        }
        let backlog: Vec<Request> = self.catch_up_backlog.drain().flat_map(|(_, b)| b).collect();
        for request in backlog {
            let reason = "pacerd stopped before this missed fire's turn came".to_owned();
            self.record_skip(Skip {
                request,
                reason,
                kind: SkipKind::Shutdown,
            });
        }
        self.catch_up_next.clear();
        let deferred: Vec<Request> = self.deferred_requests.drain().map(|(_, r)| r).collect();
        for request in deferred {
            let reason = format!(
                "pacerd stopped before this {} fire was due",
                request.trigger
            );
            self.record_skip(Skip {
                request,
                reason,
                kind: SkipKind::Shutdown,
            });
        }
        self.deferred.clear();
    }

    /// Asks every run in flight to stop.
    pub fn cancel_all(&mut self, reason: &str) {
        self.dispatcher.cancel_all(reason);
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> u32 {
        self.dispatcher.in_flight()
    }

    /// Waits until every record written on the side (skips, last fires) is committed.
    pub async fn flush_records(&mut self) {
        while self.records.join_next().await.is_some() {}
    }

    /// Drops finished record writes so the set does not grow.
    pub fn reap_records(&mut self) {
        while self.records.try_join_next().is_some() {}
    }
}

fn log_change(change: &crate::plugins::PluginChange) {
    if change.refused {
        tracing::warn!("{}", change.message);
    } else {
        tracing::info!("{}", change.message);
    }
}

/// Whether two versions of a job fire at the same instants, so a reload keeps its next fire.
fn same_timing(before: &Job, after: &Job) -> bool {
    before.schedule_text == after.schedule_text
        && before.timezone.name == after.timezone.name
        && before.jitter == after.jitter
        && before.enabled == after.enabled
}

fn unknown_job(name: &str) -> String {
    format!("no job `{name}` in the config in force (pacer jobs lists them)")
}

/// The job's params with `extra`'s top-level keys put over them.
fn merge_params(
    base: &serde_json::Value,
    extra: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let mut merged = base.clone();
    match extra {
        None => {}
        Some(serde_json::Value::Object(extra)) => {
            if let serde_json::Value::Object(target) = &mut merged {
                target.extend(extra);
            }
        }
        Some(other) => {
            return Err(format!(
                "--params must be a JSON object such as '{{\"key\": \"value\"}}', not {other}"
            ));
        }
    }
    Ok(merged)
}

/// Passes a manual run's updates to the client; without `--wait` it stops once the run started
/// or was skipped.
async fn forward_updates(
    mut updates: mpsc::UnboundedReceiver<RunUpdate>,
    reply: mpsc::UnboundedSender<Response>,
    wait: bool,
) {
    while let Some(update) = updates.recv().await {
        let last = !wait
            && matches!(
                update,
                RunUpdate::Started { .. } | RunUpdate::Queued { .. } | RunUpdate::Skipped { .. }
            )
            || matches!(update, RunUpdate::Skipped { .. });
        if reply.send(Response::Run(update)).is_err() || last {
            return;
        }
    }
}
