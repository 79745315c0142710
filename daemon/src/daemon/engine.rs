//! The daemon's state and every decision that changes it. One task owns the engine, so no
//! lock guards it: fires, run events and control requests are handled one at a time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::runner::{RunEnv, RunEvent, execute};
use crate::config::{CatchUp, Config, Job};
use crate::control::{JobInfo, Request as ControlRequest, Response, StatusInfo};
use crate::dispatch::{Dispatcher, Request, Skip, Started};
use crate::model::{Status, Trigger};
use crate::plugins::{PluginWatcher, Registry, ScanOptions};
use crate::scheduler::{Due, Scheduler};
use crate::store::{JobState, Skipped, Store};
use crate::time::{rfc3339_ms, to_ms};
use crate::units::format_duration;

/// How long the plugin directories must be quiet before a rescan: an installer's write, then
/// rename, then chmod arrive as one change.
const PLUGIN_SETTLE_MS: i64 = 500;

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
    /// When to rescan the plugin directories: changes are let settle first.
    rescan_at: Option<i64>,
    rescanning: bool,
    rescans: mpsc::UnboundedSender<Registry>,
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
        let mut watcher = PluginWatcher::new(channels.plugin_changes);
        watcher.watch(&config.daemon.plugin_dirs);
        Engine {
            watcher,
            rescan_at: None,
            rescanning: false,
            rescans: channels.rescans,
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
        let due = self.scheduler.take_due(now);
        self.handle_due(due, now);
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
    }

    fn handle_due(&mut self, due: Vec<Due>, now: i64) {
        let mut missed: Vec<(Arc<Job>, i64)> = Vec::new();
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
                } => missed.push((job, at)),
                Due::Gap { job, from, until } => {
                    let reason = format!(
                        "missed, with every later fire until {}: more fires were missed than \
                         max_catch_up = {} handles one by one",
                        rfc3339_ms(until),
                        self.config.daemon.max_catch_up
                    );
                    let request = self.fire(&job, Trigger::CatchUp, from);
                    if !self.paused.contains(&job.name) {
                        self.record_skip(Skip { request, reason });
                    }
                }
            }
        }
        self.catch_up(missed, now);
    }

    /// Applies each job's `catch_up` policy to its missed fires (in due order).
    fn catch_up(&mut self, missed: Vec<(Arc<Job>, i64)>, now: i64) {
        let mut latest: HashMap<String, i64> = HashMap::new();
        for (job, at) in &missed {
            latest.insert(job.name.clone(), *at);
        }
        for (job, at) in missed {
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
                CatchUp::All => self.submit_fire(request, now),
                CatchUp::Once if latest.get(&job.name) == Some(&at) => {
                    self.submit_fire(request, now);
                }
                CatchUp::Once => self.skip_fire(
                    request,
                    format!("{why}; catch_up = \"once\" runs only the latest missed fire"),
                ),
                CatchUp::Skip => self.skip_fire(request, format!("{why} (catch_up = \"skip\")")),
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

    fn skip_fire(&mut self, request: Request, reason: String) {
        if self.paused.contains(&request.job.name) {
            self.advance_quietly(&request);
            return;
        }
        self.record_skip(Skip { request, reason });
    }

    fn advance_quietly(&mut self, request: &Request) {
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

    /// Sends a request through admission, unless its plugin is missing.
    pub fn submit(&mut self, request: Request, now: i64) {
        if let Some(reason) = self.plugin_problem(&request.job) {
            self.record_skip(Skip { request, reason });
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
            mut request,
            reason,
        } = skip;
        tracing::info!(job = %request.job.name, trigger = %request.trigger, "fire skipped: {reason}");
        if let Some(notify) = request.notify.take() {
            let _ = notify.send(Started::Skipped(reason.clone()));
        }
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
        for admitted in self.dispatcher.admit(now) {
            let job = &admitted.request.job;
            let Some(path) = self.registry.get(&job.plugin).map(|p| p.path.clone()) else {
                // Only possible if the plugin vanished while the fire was queued.
                let reason = self.plugin_problem(job).unwrap_or_default();
                self.dispatcher.finished(admitted.slot);
                self.record_skip(Skip {
                    request: admitted.request,
                    reason,
                });
                continue;
            };
            tokio::spawn(execute(Arc::clone(&self.env), admitted, path));
        }
    }

    /// Takes in what a run reports.
    pub fn on_event(&mut self, event: RunEvent, now: i64) {
        match event {
            RunEvent::Started { slot, id } => self.dispatcher.started(slot, id),
            RunEvent::Finished {
                slot,
                status,
                request,
            } => {
                self.dispatcher.finished(slot);
                self.last_status.insert(request.job.name.clone(), status);
                if status.is_failure() && request.attempt <= request.job.retries {
                    self.schedule_retry(request, now);
                }
            }
        }
        self.admit(now);
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
            notify: None,
        });
    }

    /// Answers a control request.
    pub fn answer(&mut self, request: &ControlRequest) -> Response {
        match request {
            ControlRequest::Status => Response::Status(self.status()),
            ControlRequest::Jobs => Response::Jobs { jobs: self.jobs() },
            ControlRequest::Plugins => Response::Plugins {
                plugins: self.registry.all().to_vec(),
            },
        }
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
            });
        }
        let deferred: Vec<Request> = self.deferred_requests.drain().map(|(_, r)| r).collect();
        for request in deferred {
            let reason = format!(
                "pacerd stopped before this {} fire was due",
                request.trigger
            );
            self.record_skip(Skip { request, reason });
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
