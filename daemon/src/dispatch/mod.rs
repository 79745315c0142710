//! Admission: the one place that decides when a fire becomes a run.
//!
//! Every trigger (schedule, manual, retry, catch-up, chained) takes the same path:
//!
//! 1. the job's **overlap** policy, against its runs still going and its fires still waiting;
//! 2. the **bounded queue** (`max_queue`), ordered by priority (higher first), then due time;
//! 3. **admission** once the global `max_concurrency`, the pool's `max_concurrency`, the pool's
//!    `max_starts_per_second` token bucket and the PSI thresholds all allow.
//!
//! Fires due at the same instant are all submitted before [`Dispatcher::admit`] runs, so
//! priority decides among them. Nothing leaves without a record: every refusal comes back as a
//! [`Skip`] for the caller to record. `docs/admission.md` draws this path.

mod bucket;
mod pressure;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Job, Overlap, Pool, PressureLimits};
use crate::model::Trigger;
use crate::store::RunId;
use crate::time::rfc3339_ms;

use bucket::TokenBucket;
use pressure::PressureGate;
pub use pressure::RECHECK_MS;

/// A fire asking to become a run.
#[derive(Debug)]
pub struct Request {
    /// The job.
    pub job: Arc<Job>,
    /// Why it runs.
    pub trigger: Trigger,
    /// 1, or the retry's attempt number.
    pub attempt: u32,
    /// The due instant (request time for manual runs), Unix ms.
    pub scheduled_at: i64,
    /// The params the plugin will get.
    pub params: Arc<serde_json::Value>,
    /// Whether recording it advances the job's last scheduled fire.
    pub advances_schedule: bool,
    /// Told what becomes of the request (`pacer run` follows it); retries keep it.
    pub notify: Option<mpsc::UnboundedSender<RunUpdate>>,
}

impl Request {
    /// Tells whoever follows this request; they may have stopped listening, which is fine.
    pub fn tell(&self, update: RunUpdate) {
        if let Some(notify) = &self.notify {
            let _ = notify.send(update);
        }
    }
}

/// What a `pacer run` learns about its run, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunUpdate {
    /// The run started with this id.
    Started {
        /// Its id.
        id: RunId,
        /// Its attempt.
        attempt: u32,
    },
    /// It waits for admission (a cap, a pool, pressure, or its job's previous run), for this
    /// reason; it gets its id when it starts.
    Queued {
        /// What it waits for.
        reason: String,
    },
    /// A policy declined it, for this reason.
    Skipped {
        /// Which policy and why.
        reason: String,
    },
    /// The run ended (a retry may follow).
    Finished {
        /// Its id.
        id: RunId,
        /// How it ended.
        status: crate::model::Status,
        /// Why, if it did not succeed.
        error: Option<String>,
    },
}

/// A request a policy declined: record it as `skipped` with `reason`.
#[derive(Debug)]
pub struct Skip {
    /// The declined request.
    pub request: Request,
    /// Which policy and why, naming what was going on.
    pub reason: String,
    /// The policy, as a bounded label for metrics.
    pub kind: SkipKind,
}

/// Which policy declined a fire: the `reason` label of `pacer_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipKind {
    /// The job's run was still going (`overlap`).
    Overlap,
    /// A newer fire replaced it before it started (`overlap = "replace"`).
    Replaced,
    /// `max_queue` was reached.
    QueueFull,
    /// The job's plugin is not installed or was refused.
    PluginMissing,
    /// Missed while the daemon was down or the clock jumped (`catch_up`).
    Missed,
    /// The daemon stopped before it could start.
    Shutdown,
}

impl SkipKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipKind::Overlap => "overlap",
            SkipKind::Replaced => "replaced",
            SkipKind::QueueFull => "queue_full",
            SkipKind::PluginMissing => "plugin_missing",
            SkipKind::Missed => "missed",
            SkipKind::Shutdown => "shutdown",
        }
    }
}

/// A request allowed to start now.
#[derive(Debug)]
pub struct Admitted {
    /// Its slot, released by [`Dispatcher::finished`].
    pub slot: SlotId,
    /// The request.
    pub request: Request,
    /// How long it waited, ms.
    pub queue_ms: i64,
    /// Resolves with a reason when the run must stop (cancel, replace, shutdown).
    pub cancel: oneshot::Receiver<String>,
}

/// Identifies an admitted run before it has a run id.
pub type SlotId = u64;

/// In-flight and queued counts, for `pacer status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Runs in flight.
    pub in_flight: u32,
    /// Fires waiting.
    pub queued: u32,
}

/// A snapshot of admission for `pacer status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchStatus {
    /// All pools together.
    pub total: Load,
    /// Per pool.
    pub pools: BTreeMap<String, Load>,
    /// Why new starts wait although slots are free (pressure), if they do.
    pub waiting_on: Option<String>,
}

/// Orders the queue: higher priority first, then earlier due time, then arrival.
type QueueKey = (i64, i64, u64);

#[derive(Debug)]
struct Entry {
    request: Request,
    enqueued_at: i64,
    seq: u64,
}

impl Entry {
    fn key(&self) -> QueueKey {
        (
            -i64::from(self.request.job.priority),
            self.request.scheduled_at,
            self.seq,
        )
    }
}

#[derive(Debug)]
struct PoolState {
    cap: Option<u32>,
    bucket: Option<TokenBucket>,
    in_flight: u32,
    queue: BTreeMap<QueueKey, Entry>,
    /// Fires of the pool's jobs held by `overlap = "queue"`/`"replace"`, counted here so that
    /// `max_queue` and the status are checked without walking every job.
    held: u32,
}

#[derive(Debug, Default)]
struct JobLoad {
    running: Vec<SlotId>,
    /// Entries of this job in a pool queue.
    queued: u32,
    /// A fire held back by `overlap = "queue"` or `"replace"` until the job's runs end.
    waiting: Option<Entry>,
}

#[derive(Debug)]
struct Slot {
    /// The job as admitted: its pool is the one the slot counts against, even if a reload
    /// has moved the job since.
    job: Arc<Job>,
    run_id: Option<RunId>,
    cancel: Option<oneshot::Sender<String>>,
}

/// The admission state: queues, slots and the policies that govern them.
#[derive(Debug)]
pub struct Dispatcher {
    max_concurrency: u32,
    max_queue: u32,
    in_flight: u32,
    pools: BTreeMap<String, PoolState>,
    jobs: HashMap<String, JobLoad>,
    slots: HashMap<SlotId, Slot>,
    pressure: PressureGate,
    pressure_wait: Option<String>,
    next_slot: SlotId,
    next_seq: u64,
}

impl Dispatcher {
    /// Admission under the given caps, pools and pressure thresholds.
    pub fn new(
        max_concurrency: u32,
        max_queue: u32,
        pools: &BTreeMap<String, Pool>,
        pressure: PressureLimits,
        now: i64,
    ) -> Dispatcher {
        let mut dispatcher = Dispatcher {
            max_concurrency,
            max_queue,
            in_flight: 0,
            pools: BTreeMap::new(),
            jobs: HashMap::new(),
            slots: HashMap::new(),
            pressure: PressureGate::new(pressure.clone()),
            pressure_wait: None,
            next_slot: 0,
            next_seq: 0,
        };
        dispatcher.reconfigure(max_concurrency, max_queue, pools, pressure, now);
        dispatcher
    }

    /// Applies new caps and pools (on reload); runs in flight keep their slots.
    pub fn reconfigure(
        &mut self,
        max_concurrency: u32,
        max_queue: u32,
        pools: &BTreeMap<String, Pool>,
        pressure: PressureLimits,
        now: i64,
    ) {
        self.max_concurrency = max_concurrency;
        self.max_queue = max_queue;
        self.pressure = PressureGate::new(pressure);
        for (name, pool) in pools {
            let state = self.pools.entry(name.clone()).or_insert_with(|| PoolState {
                cap: None,
                bucket: None,
                in_flight: 0,
                queue: BTreeMap::new(),
                held: 0,
            });
            state.cap = pool.max_concurrency;
            let rate_changed =
                state.bucket.as_ref().map(TokenBucket::rate) != pool.max_starts_per_second;
            if rate_changed {
                state.bucket = pool
                    .max_starts_per_second
                    .map(|rate| TokenBucket::new(rate, now));
            }
        }
    }

    /// Applies the job's overlap policy and queues `request`; returns every request declined
    /// along the way (the new one, or older ones it replaced).
    pub fn submit(&mut self, request: Request, now: i64) -> Vec<Skip> {
        let job = Arc::clone(&request.job);
        let name = job.name.as_str();
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry {
            request,
            enqueued_at: now,
            seq,
        };
        let load = self.jobs.get(name);
        let busy = load.is_some_and(|load| {
            !load.running.is_empty() || load.queued > 0 || load.waiting.is_some()
        });
        let held = load.is_some_and(|load| load.waiting.is_some());
        let mut skips = Vec::new();
        match job.overlap {
            Overlap::Allow => {}
            Overlap::Skip if busy => {
                let reason = format!("{} (overlap = \"skip\")", self.describe_busy(name));
                return vec![Skip {
                    request: entry.request,
                    reason,
                    kind: SkipKind::Overlap,
                }];
            }
            Overlap::Skip => {}
            Overlap::Queue if held => {
                return vec![Skip {
                    request: entry.request,
                    reason: format!(
                        "{}, and another fire already waits for it (overlap = \"queue\" holds \
                         at most one)",
                        self.describe_busy(name)
                    ),
                    kind: SkipKind::Overlap,
                }];
            }
            Overlap::Queue if busy => return self.hold(entry, skips),
            Overlap::Queue => {}
            Overlap::Replace if busy => {
                let successor = format!(
                    "replaced by the {} fire due at {} (overlap = \"replace\")",
                    entry.request.trigger,
                    rfc3339_ms(entry.request.scheduled_at)
                );
                skips.extend(self.withdraw_queued(name, &successor));
                self.cancel_job(name, &successor);
                return self.hold(entry, skips);
            }
            Overlap::Replace => {}
        }
        if !self.make_room(&entry, &mut skips) {
            skips.push(self.queue_full(entry.request));
            return skips;
        }
        self.enqueue(entry);
        skips
    }

    /// Holds `entry` until its job's runs have ended.
    fn hold(&mut self, entry: Entry, mut skips: Vec<Skip>) -> Vec<Skip> {
        if !self.make_room(&entry, &mut skips) {
            skips.push(self.queue_full(entry.request));
            return skips;
        }
        let name = entry.request.job.name.clone();
        *self.held_in(&entry.request.job.pool) += 1;
        self.jobs.entry(name.clone()).or_default().waiting = Some(entry);
        self.release_waiting(&name);
        skips
    }

    /// With the queue full, declines the worst-ranked fire waiting in a pool queue if `entry`
    /// outranks it (so a full queue keeps the best fires, as priority promises), recording it in
    /// `skips`. Whether `entry` has room now.
    fn make_room(&mut self, entry: &Entry, skips: &mut Vec<Skip>) -> bool {
        if self.queued() < self.max_queue {
            return true;
        }
        let worst = self
            .pools
            .iter()
            .filter_map(|(name, pool)| Some((*pool.queue.keys().next_back()?, name.clone())))
            .max()
            .filter(|(key, _)| *key > entry.key());
        let Some((key, pool)) = worst else {
            return false;
        };
        let reason = format!(
            "{}, and fires of higher priority came",
            self.queue_full_reason()
        );
        let declined = self
            .pools
            .get_mut(&pool)
            .and_then(|pool| pool.queue.remove(&key))
            .expect("found above");
        let name = declined.request.job.name.clone();
        if let Some(load) = self.jobs.get_mut(&name) {
            load.queued = load.queued.saturating_sub(1);
        }
        skips.push(Skip {
            request: declined.request,
            reason,
            kind: SkipKind::QueueFull,
        });
        self.release_waiting(&name);
        self.queued() < self.max_queue
    }

    fn queue_full(&self, request: Request) -> Skip {
        Skip {
            request,
            reason: self.queue_full_reason(),
            kind: SkipKind::QueueFull,
        }
    }

    fn queue_full_reason(&self) -> String {
        format!(
            "the queue is full: {} fires wait for a slot (max_queue = {})",
            self.queued(),
            self.max_queue
        )
    }

    fn enqueue(&mut self, entry: Entry) {
        let job = &entry.request.job;
        self.jobs.entry(job.name.clone()).or_default().queued += 1;
        let pool = self
            .pools
            .get_mut(&job.pool)
            .expect("config validation guarantees the pool exists");
        pool.queue.insert(entry.key(), entry);
    }

    /// Moves a held fire into its pool's queue once its job has nothing running and nothing
    /// queued: a fire still waiting for a slot counts as the previous run, so `queue` never
    /// lets two fires of one job reach the pool queue together.
    fn release_waiting(&mut self, name: &str) {
        let Some(load) = self.jobs.get_mut(name) else {
            return;
        };
        if !load.running.is_empty() || load.queued > 0 {
            return;
        }
        if let Some(entry) = load.waiting.take() {
            *self.held_in(&entry.request.job.pool) -= 1;
            self.enqueue(entry);
        }
    }

    /// Removes the job's fires that wait in a pool queue (for `replace`).
    fn withdraw_queued(&mut self, name: &str, reason: &str) -> Vec<Skip> {
        let mut skips = Vec::new();
        for pool in self.pools.values_mut() {
            let keys: Vec<QueueKey> = pool
                .queue
                .iter()
                .filter(|(_, e)| e.request.job.name == name)
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                if let Some(entry) = pool.queue.remove(&key) {
                    skips.push(Skip {
                        request: entry.request,
                        reason: reason.to_owned(),
                        kind: SkipKind::Replaced,
                    });
                }
            }
        }
        let held = self.jobs.get_mut(name).and_then(|load| {
            load.queued = 0;
            load.waiting.take()
        });
        if let Some(entry) = held {
            *self.held_in(&entry.request.job.pool) -= 1;
            skips.push(Skip {
                request: entry.request,
                reason: reason.to_owned(),
                kind: SkipKind::Replaced,
            });
        }
        skips
    }

    /// The held-fire count of `pool`.
    fn held_in(&mut self, pool: &str) -> &mut u32 {
        &mut self
            .pools
            .get_mut(pool)
            .expect("config validation guarantees the pool exists")
            .held
    }

    fn describe_busy(&self, name: &str) -> String {
        let Some(load) = self.jobs.get(name) else {
            return "the previous run is still going".to_owned();
        };
        let ids: Vec<String> = load
            .running
            .iter()
            .filter_map(|slot| self.slots.get(slot)?.run_id)
            .map(|id| id.to_string())
            .collect();
        match (ids.as_slice(), load.running.len()) {
            ([id], _) => format!("run {id} of `{name}` is still running"),
            ([], 0) => format!("an earlier fire of `{name}` is still waiting for a slot"),
            ([], _) => format!("a run of `{name}` is starting"),
            (ids, _) => format!("runs {} of `{name}` are still running", ids.join(", ")),
        }
    }

    /// Starts as many queued requests as the caps, tokens and pressure allow, best first.
    pub fn admit(&mut self, now: i64) -> Vec<Admitted> {
        let mut admitted = Vec::new();
        self.pressure_wait = None;
        while self.in_flight < self.max_concurrency && self.queued_in_pools() > 0 {
            if let Some(reason) = self.pressure.blocked(now) {
                self.pressure_wait = Some(reason);
                break;
            }
            let global_cap = self.max_concurrency;
            let best = self
                .pools
                .values_mut()
                .filter_map(|pool| {
                    let key = *pool.queue.keys().next()?;
                    let has_room = pool.in_flight < pool.cap.unwrap_or(global_cap);
                    let has_token = pool.bucket.as_mut().is_none_or(|b| b.ready(now));
                    (has_room && has_token).then_some((key, pool))
                })
                .min_by_key(|(key, _)| *key);
            let Some((key, pool)) = best else { break };
            let entry = pool.queue.remove(&key).expect("chosen above");
            pool.in_flight += 1;
            if let Some(bucket) = pool.bucket.as_mut() {
                bucket.take(now);
            }
            self.in_flight += 1;
            let slot = self.next_slot;
            self.next_slot += 1;
            let (cancel_tx, cancel_rx) = oneshot::channel();
            let job = Arc::clone(&entry.request.job);
            let load = self.jobs.entry(job.name.clone()).or_default();
            load.queued = load.queued.saturating_sub(1);
            load.running.push(slot);
            self.slots.insert(
                slot,
                Slot {
                    job,
                    run_id: None,
                    cancel: Some(cancel_tx),
                },
            );
            admitted.push(Admitted {
                slot,
                queue_ms: (now - entry.enqueued_at).max(0),
                request: entry.request,
                cancel: cancel_rx,
            });
        }
        admitted
    }

    /// Records the run id of an admitted request once its record exists.
    pub fn started(&mut self, slot: SlotId, run_id: RunId) {
        if let Some(slot) = self.slots.get_mut(&slot) {
            slot.run_id = Some(run_id);
        }
    }

    /// Releases a slot once the run's processes are gone.
    pub fn finished(&mut self, slot: SlotId) {
        let Some(done) = self.slots.remove(&slot) else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(pool) = self.pools.get_mut(&done.job.pool) {
            pool.in_flight = pool.in_flight.saturating_sub(1);
        }
        let name = &done.job.name;
        if let Some(load) = self.jobs.get_mut(name) {
            load.running.retain(|s| *s != slot);
        }
        self.release_waiting(name);
        if let Some(load) = self.jobs.get(name)
            && load.running.is_empty()
            && load.queued == 0
            && load.waiting.is_none()
        {
            self.jobs.remove(name);
        }
    }

    /// When admission should look again although nothing finished: a token refills, or
    /// pressure is re-read.
    pub fn next_wake(&mut self, now: i64) -> Option<i64> {
        if self.in_flight >= self.max_concurrency || self.queued_in_pools() == 0 {
            return None;
        }
        if self.pressure_wait.is_some() {
            return Some(now + RECHECK_MS);
        }
        let global_cap = self.max_concurrency;
        self.pools
            .values_mut()
            .filter(|pool| {
                !pool.queue.is_empty() && pool.in_flight < pool.cap.unwrap_or(global_cap)
            })
            .filter_map(|pool| pool.bucket.as_mut().map(|b| b.next_token_at(now)))
            .filter(|at| *at > now)
            .min()
    }

    /// Asks run `run_id` to stop; false if no such run is in flight.
    pub fn cancel(&mut self, run_id: RunId, reason: &str) -> bool {
        let Some(slot) = self.slots.values_mut().find(|s| s.run_id == Some(run_id)) else {
            return false;
        };
        if let Some(cancel) = slot.cancel.take() {
            let _ = cancel.send(reason.to_owned());
        }
        true
    }

    fn cancel_job(&mut self, name: &str, reason: &str) {
        for slot in self.slots.values_mut().filter(|s| s.job.name == name) {
            if let Some(cancel) = slot.cancel.take() {
                let _ = cancel.send(reason.to_owned());
            }
        }
    }

    /// Asks every run in flight to stop.
    pub fn cancel_all(&mut self, reason: &str) {
        for slot in self.slots.values_mut() {
            if let Some(cancel) = slot.cancel.take() {
                let _ = cancel.send(reason.to_owned());
            }
        }
    }

    /// Takes every waiting request out (at shutdown), for recording.
    pub fn drain(&mut self) -> Vec<Request> {
        let mut drained: Vec<Request> = self
            .pools
            .values_mut()
            .flat_map(|pool| std::mem::take(&mut pool.queue).into_values())
            .map(|entry| entry.request)
            .collect();
        for load in self.jobs.values_mut() {
            load.queued = 0;
            drained.extend(load.waiting.take().map(|entry| entry.request));
        }
        for pool in self.pools.values_mut() {
            pool.held = 0;
        }
        drained
    }

    /// The fires of job `name` waiting for admission: due time, arrival time, and why they wait.
    pub fn waiting(&self, name: &str) -> Vec<(i64, i64, String)> {
        let mut waiting: Vec<(i64, i64, String)> = self
            .pools
            .iter()
            .flat_map(|(pool_name, pool)| {
                pool.queue
                    .values()
                    .filter(move |e| e.request.job.name == name)
                    .map(move |e| (e, pool_name))
            })
            .map(|(entry, pool)| {
                (
                    entry.request.scheduled_at,
                    entry.enqueued_at,
                    self.why_waiting(pool),
                )
            })
            .collect();
        if let Some(entry) = self.jobs.get(name).and_then(|load| load.waiting.as_ref()) {
            waiting.push((
                entry.request.scheduled_at,
                entry.enqueued_at,
                format!("waiting for the previous run of `{name}` to end (overlap)"),
            ));
        }
        waiting
    }

    /// What holds the fires queued in `pool`: the first limit that is reached.
    fn why_waiting(&self, pool: &str) -> String {
        if let Some(pressure) = &self.pressure_wait {
            return format!("new starts wait: {pressure}");
        }
        let state = self.pools.get(pool);
        match state.and_then(|state| Some((state.in_flight, state.cap?))) {
            Some((in_flight, cap)) if in_flight >= cap => format!(
                "waiting for a slot in pool `{pool}` ({in_flight} runs in flight of its \
                 max_concurrency = {cap})"
            ),
            _ if self.in_flight >= self.max_concurrency => format!(
                "waiting for a slot (pool `{pool}`; {} runs in flight of max_concurrency = {})",
                self.in_flight, self.max_concurrency
            ),
            _ => match state.and_then(|state| state.bucket.as_ref()) {
                Some(bucket) => format!(
                    "waiting for its turn: pool `{pool}` starts at most {} runs per second \
                     (max_starts_per_second)",
                    bucket.rate()
                ),
                None => format!("waiting for admission in pool `{pool}`"),
            },
        }
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Fires waiting, held ones included.
    pub fn queued(&self) -> u32 {
        let held: u32 = self.pools.values().map(|pool| pool.held).sum();
        self.queued_in_pools() + held
    }

    fn queued_in_pools(&self) -> u32 {
        let n: usize = self.pools.values().map(|p| p.queue.len()).sum();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Counts for `pacer status`.
    pub fn status(&self) -> DispatchStatus {
        let pools: BTreeMap<String, Load> = self
            .pools
            .iter()
            .map(|(name, pool)| {
                (
                    name.clone(),
                    Load {
                        in_flight: pool.in_flight,
                        queued: u32::try_from(pool.queue.len())
                            .unwrap_or(u32::MAX)
                            .saturating_add(pool.held),
                    },
                )
            })
            .collect();
        DispatchStatus {
            total: Load {
                in_flight: self.in_flight,
                queued: self.queued(),
            },
            pools,
            waiting_on: self.pressure_wait.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
