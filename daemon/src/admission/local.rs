//! Admission for one daemon: queues, slots and token buckets in memory.
//!
//! Fires due at the same instant are all submitted before [`Admission::admit`] runs, so
//! priority decides among them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::bucket::TokenBucket;
use super::pressure::{PressureGate, RECHECK_MS};
use super::{
    Admission, AdmissionStatus, Admitted, Candidate, FireKey, Limits, Load, Refusal, RunId,
    SkipKind, Stop, Submitted, Waiting,
};
use crate::config::{Job, Overlap};
use crate::counter_map::CounterMap;
use crate::time::rfc3339_ms;
use foldhash::HashMap as FastMap;

/// Orders a pool's queue: higher priority first, then earlier due time, then arrival.
type QueueKey = (i64, i64, u64);

/// A pool, by its place in [`LocalAdmission::pools`] (pools are never removed).
type PoolId = usize;

/// A job's load, by its place in [`LocalAdmission::loads`]: a load is freed only when idle,
/// so every entry, place and slot that names one names the right one.
type LoadId = usize;

#[derive(Debug)]
struct Entry {
    fire: Candidate,
    enqueued_at: i64,
    seq: u64,
    /// Its job's load and its pool, found once when it was submitted: a burst of fires moves
    /// through admission without looking a job up by name again.
    load: LoadId,
    pool: PoolId,
}

impl Entry {
    fn key(&self) -> QueueKey {
        (
            -i64::from(self.fire.job.priority),
            self.fire.scheduled_at,
            self.seq,
        )
    }
}

#[derive(Debug)]
struct PoolState {
    /// Its name, for the status and the reasons given (places and slots name the pool by its
    /// index).
    name: String,
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
    /// The job's name, its key in [`LocalAdmission::load_ids`].
    name: String,
    running: Vec<FireKey>,
    /// Entries of this job in a pool queue.
    queued: u32,
    /// A fire held back by `overlap = "queue"` or `"replace"` until the job's runs end.
    waiting: Option<Entry>,
}

impl JobLoad {
    /// The held fire, taken out, if its job has nothing running and nothing queued.
    fn take_releasable(&mut self) -> Option<Entry> {
        if self.running.is_empty() && self.queued == 0 {
            self.waiting.take()
        } else {
            None
        }
    }

    /// Whether the job has a fire running, in a pool queue, or held.
    fn busy(&self) -> bool {
        !self.running.is_empty() || self.queued > 0 || self.waiting.is_some()
    }
}

/// Where a waiting fire is, so a cancel finds it without a search.
#[derive(Debug, Clone)]
enum Place {
    Queue(PoolId, QueueKey),
    Held(LoadId),
}

#[derive(Debug)]
struct Slot {
    /// The pool the slot counts against, as the job had it when admitted (a reload may move
    /// the job since).
    pool: PoolId,
    /// The load of the job as it was when admitted.
    load: LoadId,
    run_id: Option<RunId>,
}

/// The admission state of one daemon.
#[derive(Debug)]
pub struct LocalAdmission {
    max_concurrency: u32,
    max_queue: u32,
    in_flight: u32,
    pools: Vec<PoolState>,
    pool_ids: BTreeMap<String, PoolId>,
    loads: Vec<JobLoad>,
    load_ids: FastMap<String, LoadId>,
    /// Loads freed by [`Admission::reconfigure`], to be reused.
    free_loads: Vec<LoadId>,
    /// The load and pool of each job seen since the last reconfigure, by the job's address:
    /// a fire finds them without hashing and comparing names, whose bytes are far apart in
    /// memory for a burst of many jobs. The jobs are kept in `known_jobs`, so no address is
    /// reused meanwhile.
    known: FastMap<usize, (LoadId, PoolId)>,
    known_jobs: Vec<Arc<Job>>,
    places: CounterMap<FireKey, Place>,
    slots: CounterMap<FireKey, Slot>,
    pressure: PressureGate,
    pressure_wait: Option<String>,
    next_seq: u64,
}

impl LocalAdmission {
    /// Admission under `limits`.
    pub fn new(limits: &Limits, now: i64) -> LocalAdmission {
        let mut admission = LocalAdmission {
            max_concurrency: limits.max_concurrency,
            max_queue: limits.max_queue,
            in_flight: 0,
            pools: Vec::new(),
            pool_ids: BTreeMap::new(),
            loads: Vec::new(),
            load_ids: FastMap::default(),
            free_loads: Vec::new(),
            known: FastMap::default(),
            known_jobs: Vec::new(),
            places: CounterMap::default(),
            slots: CounterMap::default(),
            pressure: PressureGate::new(limits.pressure.clone()),
            pressure_wait: None,
            next_seq: 0,
        };
        admission.reconfigure(limits, now);
        admission
    }

    /// Holds `entry` until its job's runs have ended.
    fn hold(&mut self, entry: Entry, mut submitted: Submitted) -> Submitted {
        if !self.make_room(&entry, &mut submitted.refused) {
            submitted.refused.push(self.queue_full(entry.fire.key));
            return submitted;
        }
        let load = entry.load;
        self.pools[entry.pool].held += 1;
        self.places.insert(entry.fire.key, Place::Held(load));
        self.loads[load].waiting = Some(entry);
        self.release_waiting(load);
        submitted
    }

    /// With the queue full, declines the worst-ranked fire waiting in a pool queue if `entry`
    /// outranks it (so a full queue keeps the best fires, as priority promises). Whether
    /// `entry` has room now.
    fn make_room(&mut self, entry: &Entry, refused: &mut Vec<Refusal>) -> bool {
        if self.queued() < self.max_queue {
            return true;
        }
        let worst = self
            .pools
            .iter()
            .enumerate()
            .filter_map(|(id, pool)| Some((*pool.queue.keys().next_back()?, id)))
            .max()
            .filter(|(key, _)| *key > entry.key());
        let Some((key, pool)) = worst else {
            return false;
        };
        let reason = format!(
            "{}, and fires of higher priority came",
            self.queue_full_reason()
        );
        let Some(declined) = self.remove_queued(pool, key) else {
            return false;
        };
        refused.push(Refusal {
            key: declined.fire.key,
            reason,
            kind: SkipKind::QueueFull,
        });
        self.release_waiting(declined.load);
        self.queued() < self.max_queue
    }

    fn queue_full(&self, key: FireKey) -> Refusal {
        Refusal {
            key,
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
        self.loads[entry.load].queued += 1;
        let key = entry.key();
        self.places
            .insert(entry.fire.key, Place::Queue(entry.pool, key));
        self.pools[entry.pool].queue.insert(key, entry);
    }

    /// The load of job `name`, made if it has none: its name is copied only then.
    fn load_of(&mut self, name: &str) -> LoadId {
        if let Some(id) = self.load_ids.get(name) {
            return *id;
        }
        let load = JobLoad {
            name: name.to_owned(),
            ..JobLoad::default()
        };
        let id = match self.free_loads.pop() {
            Some(id) => {
                self.loads[id] = load;
                id
            }
            None => {
                self.loads.push(load);
                self.loads.len() - 1
            }
        };
        self.load_ids.insert(name.to_owned(), id);
        id
    }

    /// The load and the pool of `job`.
    fn place_of(&mut self, job: &Arc<Job>) -> (LoadId, PoolId) {
        let address = Arc::as_ptr(job) as usize;
        if let Some(known) = self.known.get(&address) {
            return *known;
        }
        let load = self.load_of(&job.name);
        let pool = *self
            .pool_ids
            .get(&job.pool)
            .expect("config validation guarantees the pool exists");
        self.known.insert(address, (load, pool));
        self.known_jobs.push(Arc::clone(job));
        (load, pool)
    }

    /// Takes an entry out of a pool queue, keeping the counts right.
    fn remove_queued(&mut self, pool: PoolId, key: QueueKey) -> Option<Entry> {
        let entry = self.pools[pool].queue.remove(&key)?;
        self.places.remove(&entry.fire.key);
        let load = &mut self.loads[entry.load];
        load.queued = load.queued.saturating_sub(1);
        Some(entry)
    }

    /// Moves a held fire into its pool's queue once its job has nothing running and nothing
    /// queued: a fire still waiting for a slot counts as the previous run, so `queue` never
    /// lets two fires of one job reach the pool queue together.
    fn release_waiting(&mut self, load: LoadId) {
        if let Some(entry) = self.loads[load].take_releasable() {
            self.enqueue_held(entry);
        }
    }

    /// Moves a fire held by its job into its pool's queue.
    fn enqueue_held(&mut self, entry: Entry) {
        self.pools[entry.pool].held -= 1;
        self.enqueue(entry);
    }

    /// Removes the job's fires that wait in a pool queue or are held (for `replace`).
    fn withdraw_job(&mut self, load: LoadId, reason: &str) -> Vec<Refusal> {
        let keys: Vec<FireKey> = self.loads[load]
            .waiting
            .iter()
            .map(|entry| entry.fire.key)
            .chain(self.pools_by_name().flat_map(|pool| {
                pool.queue
                    .values()
                    .filter(|entry| entry.load == load)
                    .map(|entry| entry.fire.key)
            }))
            .collect();
        keys.into_iter()
            .filter(|key| self.withdraw(*key))
            .map(|key| Refusal {
                key,
                reason: reason.to_owned(),
                kind: SkipKind::Replaced,
            })
            .collect()
    }

    fn describe_busy(&self, load: LoadId) -> String {
        let load = &self.loads[load];
        let name = &load.name;
        let ids: Vec<String> = load
            .running
            .iter()
            .filter_map(|key| self.slots.get(key)?.run_id)
            .map(|id| id.to_string())
            .collect();
        match (ids.as_slice(), load.running.len()) {
            ([id], _) => format!("run {id} of `{name}` is still running"),
            ([], 0) => format!("an earlier fire of `{name}` is still waiting for a slot"),
            ([], _) => format!("a run of `{name}` is starting"),
            (ids, _) => format!("runs {} of `{name}` are still running", ids.join(", ")),
        }
    }

    /// What holds the fires queued in `pool`: the first limit that is reached.
    fn why_waiting_in(&self, pool: PoolId) -> String {
        if let Some(pressure) = &self.pressure_wait {
            return format!("new starts wait: {pressure}");
        }
        let state = &self.pools[pool];
        let pool = &state.name;
        match state.cap.map(|cap| (state.in_flight, cap)) {
            Some((in_flight, cap)) if in_flight >= cap => format!(
                "waiting for a slot in pool `{pool}` ({in_flight} runs in flight of its \
                 max_concurrency = {cap})"
            ),
            _ if self.in_flight >= self.max_concurrency => format!(
                "waiting for a slot (pool `{pool}`; {} runs in flight of max_concurrency = {})",
                self.in_flight, self.max_concurrency
            ),
            _ => match &state.bucket {
                Some(bucket) => format!(
                    "waiting for its turn: pool `{pool}` starts at most {} runs per second \
                     (max_starts_per_second)",
                    bucket.rate()
                ),
                None => format!("waiting for admission in pool `{pool}`"),
            },
        }
    }

    /// The pools in the order of their names, as `pacer why` lists what waits in them.
    fn pools_by_name(&self) -> impl Iterator<Item = &PoolState> {
        self.pool_ids.values().map(|id| &self.pools[*id])
    }

    fn held_reason(name: &str) -> String {
        format!("waiting for the previous run of `{name}` to end (overlap)")
    }

    /// Fires waiting, held ones included.
    fn queued(&self) -> u32 {
        let held: u32 = self.pools.iter().map(|pool| pool.held).sum();
        self.queued_in_pools() + held
    }

    fn queued_in_pools(&self) -> u32 {
        let n: usize = self.pools.iter().map(|p| p.queue.len()).sum();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn entry(&self, key: FireKey) -> Option<&Entry> {
        match self.places.get(&key)? {
            Place::Queue(pool, queue_key) => self.pools[*pool].queue.get(queue_key),
            Place::Held(load) => self.loads[*load].waiting.as_ref(),
        }
    }
}

impl Admission for LocalAdmission {
    fn reconfigure(&mut self, limits: &Limits, now: i64) {
        // Idle loads go here, so that jobs renamed or removed by reloads leave nothing behind;
        // the jobs of the config before are let go.
        self.known.clear();
        self.known_jobs.clear();
        let loads = &mut self.loads;
        let free = &mut self.free_loads;
        self.load_ids.retain(|_, id| {
            let load = &mut loads[*id];
            let busy = load.busy();
            if !busy {
                *load = JobLoad::default();
                free.push(*id);
            }
            busy
        });
        self.max_concurrency = limits.max_concurrency;
        self.max_queue = limits.max_queue;
        self.pressure = PressureGate::new(limits.pressure.clone());
        for (name, pool) in &limits.pools {
            let id = match self.pool_ids.get(name) {
                Some(id) => *id,
                None => {
                    self.pools.push(PoolState {
                        name: name.clone(),
                        cap: None,
                        bucket: None,
                        in_flight: 0,
                        queue: BTreeMap::new(),
                        held: 0,
                    });
                    self.pool_ids.insert(name.clone(), self.pools.len() - 1);
                    self.pools.len() - 1
                }
            };
            let state = &mut self.pools[id];
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

    fn submit(&mut self, fire: Candidate, now: i64) -> Submitted {
        let key = fire.key;
        let overlap = fire.job.overlap;
        let (load, pool) = self.place_of(&fire.job);
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry {
            enqueued_at: fire.waiting_since.min(now),
            fire,
            seq,
            load,
            pool,
        };
        let busy = self.loads[load].busy();
        let held = self.loads[load].waiting.is_some();
        let mut submitted = Submitted::default();
        match overlap {
            _ if !busy => {}
            Overlap::Allow => {}
            Overlap::Skip => {
                submitted.refused.push(Refusal {
                    key,
                    reason: format!("{} (overlap = \"skip\")", self.describe_busy(load)),
                    kind: SkipKind::Overlap,
                });
                return submitted;
            }
            Overlap::Queue if held => {
                submitted.refused.push(Refusal {
                    key,
                    reason: format!(
                        "{}, and another fire already waits for it (overlap = \"queue\" holds \
                         at most one)",
                        self.describe_busy(load)
                    ),
                    kind: SkipKind::Overlap,
                });
                return submitted;
            }
            Overlap::Queue => return self.hold(entry, submitted),
            Overlap::Replace => {
                let successor = format!(
                    "replaced by the {} fire due at {} (overlap = \"replace\")",
                    entry.fire.trigger,
                    rfc3339_ms(entry.fire.scheduled_at)
                );
                submitted.refused = self.withdraw_job(load, &successor);
                submitted
                    .stop
                    .extend(self.loads[load].running.iter().map(|running| Stop {
                        key: *running,
                        reason: successor.clone(),
                    }));
                return self.hold(entry, submitted);
            }
        }
        if !self.make_room(&entry, &mut submitted.refused) {
            submitted.refused.push(self.queue_full(key));
            return submitted;
        }
        self.enqueue(entry);
        submitted
    }

    fn recorded(&mut self, key: FireKey, id: RunId) {
        let entry = match self.places.get(&key) {
            Some(Place::Queue(pool, queue_key)) => self.pools[*pool].queue.get_mut(queue_key),
            Some(Place::Held(load)) => self.loads[*load].waiting.as_mut(),
            None => None,
        };
        if let Some(entry) = entry {
            entry.fire.run_id = Some(id);
        } else if let Some(slot) = self.slots.get_mut(&key) {
            slot.run_id = Some(id);
        }
    }

    fn admit(&mut self, now: i64) -> Vec<Admitted> {
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
                .iter_mut()
                .enumerate()
                .filter_map(|(id, pool)| {
                    let (key, head) = pool.queue.iter().next()?;
                    let key = *key;
                    // A fire is started only once its record exists, and the queue's order
                    // holds: the head waits for its record rather than being overtaken.
                    let recorded = head.fire.run_id.is_some();
                    let has_room = pool.in_flight < pool.cap.unwrap_or(global_cap);
                    let has_token = pool.bucket.as_mut().is_none_or(|b| b.ready(now));
                    (recorded && has_room && has_token).then_some((key, id))
                })
                .min_by_key(|(key, _)| *key);
            let Some((key, pool_id)) = best else { break };
            let pool = &mut self.pools[pool_id];
            let Some(entry) = pool.queue.remove(&key) else {
                break;
            };
            pool.in_flight += 1;
            if let Some(bucket) = pool.bucket.as_mut() {
                bucket.take(now);
            }
            self.in_flight += 1;
            let fire = entry.fire;
            self.places.remove(&fire.key);
            let load = &mut self.loads[entry.load];
            load.queued = load.queued.saturating_sub(1);
            load.running.push(fire.key);
            self.slots.insert(
                fire.key,
                Slot {
                    pool: pool_id,
                    load: entry.load,
                    run_id: fire.run_id,
                },
            );
            admitted.push(Admitted {
                key: fire.key,
                queue_ms: (now - entry.enqueued_at).max(0),
            });
        }
        admitted
    }

    fn finished(&mut self, key: FireKey) {
        let Some(done) = self.slots.remove(&key) else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        let pool = &mut self.pools[done.pool];
        pool.in_flight = pool.in_flight.saturating_sub(1);
        // The job's load stays when it falls idle (until the next reconfigure), so that its
        // next fire does not copy its name again.
        let load = &mut self.loads[done.load];
        load.running.retain(|running| *running != key);
        if let Some(entry) = load.take_releasable() {
            self.enqueue_held(entry);
        }
    }

    fn withdraw(&mut self, key: FireKey) -> bool {
        let Some(place) = self.places.get(&key).cloned() else {
            return false;
        };
        match place {
            Place::Queue(pool, queue_key) => {
                let Some(entry) = self.remove_queued(pool, queue_key) else {
                    return false;
                };
                self.release_waiting(entry.load);
            }
            Place::Held(load) => {
                self.places.remove(&key);
                let Some(entry) = self.loads[load].waiting.take() else {
                    return false;
                };
                self.pools[entry.pool].held -= 1;
            }
        }
        true
    }

    fn next_wake(&mut self, now: i64) -> Option<i64> {
        if self.in_flight >= self.max_concurrency || self.queued_in_pools() == 0 {
            return None;
        }
        if self.pressure_wait.is_some() {
            return Some(now + RECHECK_MS);
        }
        let global_cap = self.max_concurrency;
        self.pools
            .iter_mut()
            .filter(|pool| {
                !pool.queue.is_empty() && pool.in_flight < pool.cap.unwrap_or(global_cap)
            })
            .filter_map(|pool| pool.bucket.as_mut().map(|b| b.next_token_at(now)))
            .filter(|at| *at > now)
            .min()
    }

    fn status(&self) -> AdmissionStatus {
        let pools: BTreeMap<String, Load> = self
            .pools
            .iter()
            .map(|pool| {
                (
                    pool.name.clone(),
                    Load {
                        in_flight: pool.in_flight,
                        queued: u32::try_from(pool.queue.len())
                            .unwrap_or(u32::MAX)
                            .saturating_add(pool.held),
                    },
                )
            })
            .collect();
        AdmissionStatus {
            total: Load {
                in_flight: self.in_flight,
                queued: self.queued(),
            },
            pools,
            waiting_on: self.pressure_wait.clone(),
        }
    }

    fn waiting(&self, job: &str) -> Vec<Waiting> {
        let Some(&load) = self.load_ids.get(job) else {
            return Vec::new();
        };
        let mut waiting: Vec<Waiting> = self
            .pools_by_name()
            .flat_map(|pool| pool.queue.values().filter(move |e| e.load == load))
            .map(|entry| Waiting {
                key: entry.fire.key,
                scheduled_at: entry.fire.scheduled_at,
                since: entry.enqueued_at,
                reason: self.why_waiting_in(entry.pool),
            })
            .collect();
        if let Some(entry) = self.loads[load].waiting.as_ref() {
            waiting.push(Waiting {
                key: entry.fire.key,
                scheduled_at: entry.fire.scheduled_at,
                since: entry.enqueued_at,
                reason: Self::held_reason(job),
            });
        }
        waiting
    }

    fn why_waiting(&self, key: FireKey) -> Option<String> {
        match self.places.get(&key)? {
            Place::Queue(pool, _) => Some(self.why_waiting_in(*pool)),
            Place::Held(load) => self
                .entry(key)
                .map(|_| Self::held_reason(&self.loads[*load].name)),
        }
    }
}
