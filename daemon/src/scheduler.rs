//! The daemon's one timeline: a heap of every future instant, the jobs' next scheduled fires
//! and one-shot timers (a retry's start, an `@reboot` fire's jitter, a debounced rescan or
//! reload) alike, and the one rule for fires that come due late.
//!
//! This is a pure state machine driven by the instants it is given, so its tests pin exact
//! times. The daemon's loop sleeps until [`Scheduler::next_wake`] and hands each [`Due`] to
//! the core.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::config::Job;
use crate::config::defaults::MAX_LISTED_MISSED;
use crate::time::{from_ms, to_ms};
use foldhash::HashMap as FastMap;

/// A fire found more than this late was missed (the machine was suspended, or the wall clock
/// jumped forward): it follows the job's `catch_up` policy instead of running as if on time.
pub const MISSED_AFTER_MS: i64 = 60_000;

/// Something a one-shot timer was set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// An accepted fire whose instant came: a retry after its back-off, an `@reboot` fire
    /// after its jitter.
    Fire(u64),
    /// The plugin directories have been quiet long enough to rescan.
    Rescan,
    /// The config file has been quiet long enough to reload.
    Reload,
}

/// Identifies a timer, to cancel it.
pub type TimerId = u64;

/// Something the scheduler found due.
#[derive(Debug, Clone)]
pub enum Due {
    /// One fire of a job.
    Fire {
        /// The job.
        job: Arc<Job>,
        /// The due instant (jitter included), Unix ms.
        at: i64,
        /// Whether it was missed (due while the daemon was down, or found very late).
        missed: bool,
    },
    /// Missed fires beyond [`MAX_LISTED_MISSED`], not listed one by one: those from `from` up
    /// to (not including) `before`, where the newest missed fires are listed again, so that
    /// `catch_up` still finds the latest ones.
    Gap {
        /// The job.
        job: Arc<Job>,
        /// The first fire not listed, Unix ms.
        from: i64,
        /// The end of the gap, Unix ms.
        before: i64,
    },
    /// A one-shot timer.
    Timer {
        /// What it was set for.
        timer: Timer,
        /// Its instant, Unix ms.
        at: i64,
    },
}

impl Due {
    fn at(&self) -> i64 {
        match self {
            Due::Fire { at, .. } | Due::Timer { at, .. } => *at,
            Due::Gap { from, .. } => *from,
        }
    }
}

/// What a heap entry stands for: a job's next fire, or a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Job(usize),
    Timer(TimerId),
}

/// The jobs that fire on a schedule and when each fires next, and the timers set.
///
/// Jobs live in numbered slots so that the heap orders plain integers: a burst of 10,000 fires
/// pops 10,000 entries, and comparing names there would cost more than the rest of the burst.
#[derive(Debug)]
pub struct Scheduler {
    /// `(instant, entry)`; an entry whose slot no longer fires then, or whose timer was
    /// cancelled, is stale and skipped.
    heap: BinaryHeap<Reverse<(i64, Entry)>>,
    timers: FastMap<TimerId, Timer>,
    next_timer: TimerId,
    slots: Vec<Option<Scheduled>>,
    free: Vec<usize>,
    by_name: FastMap<String, usize>,
    /// Slots whose fire [`Scheduler::take_due`] handed out and whose next fire is not computed
    /// yet (see [`Scheduler::reschedule`]).
    taken: Vec<usize>,
    /// Fires at or before this instant were due while the daemon was down.
    started_at: i64,
    /// How many of the newest missed fires a gap leaves listed after it (`max_catch_up`, so
    /// `catch_up = "all"` finds as many as it may run).
    max_catch_up: u32,
}

#[derive(Debug)]
struct Scheduled {
    job: Arc<Job>,
    next: Next,
}

/// Where a scheduled job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Its next fire, Unix ms, is in the heap.
    At(i64),
    /// Its fire at this instant was handed out; the one after is computed by `reschedule`.
    After(i64),
}

impl Scheduler {
    /// Applies a reloaded `max_catch_up`.
    pub fn set_max_catch_up(&mut self, max_catch_up: u32) {
        self.max_catch_up = max_catch_up;
    }

    /// An empty scheduler for a daemon that started at `started_at` (Unix ms).
    pub fn new(started_at: i64, max_catch_up: u32) -> Scheduler {
        Scheduler {
            heap: BinaryHeap::new(),
            timers: FastMap::default(),
            next_timer: 0,
            slots: Vec::new(),
            free: Vec::new(),
            by_name: FastMap::default(),
            taken: Vec::new(),
            started_at,
            max_catch_up,
        }
    }

    /// Schedules `job`: its first fire after `last_fire` when one is known (so fires missed
    /// while the daemon was down come due at once), else its first fire after `now`.
    /// Jobs without a recurring schedule (manual-only, `@reboot`) are not held here.
    pub fn add(&mut self, job: Arc<Job>, last_fire: Option<i64>, now: i64) {
        self.remove(&job.name);
        let after = last_fire.unwrap_or(now);
        let Some(at) = job.next_fire_after(from_ms(after)).map(to_ms) else {
            if job.has_timed_schedule() {
                log_schedule_ended(&job);
            }
            return;
        };
        let slot = self.free.pop().unwrap_or(self.slots.len());
        self.by_name.insert(job.name.clone(), slot);
        let scheduled = Some(Scheduled {
            job,
            next: Next::At(at),
        });
        match self.slots.get_mut(slot) {
            Some(place) => *place = scheduled,
            None => self.slots.push(scheduled),
        }
        self.heap.push(Reverse((at, Entry::Job(slot))));
    }

    /// Puts a new version of a job in place, keeping its next fire (a reload that did not
    /// change when it fires).
    pub fn update(&mut self, job: Arc<Job>) {
        if let Some(scheduled) = self.scheduled_mut(&job.name) {
            scheduled.job = job;
        }
    }

    /// Stops scheduling the job called `name`.
    pub fn remove(&mut self, name: &str) {
        // Its heap entry is skipped when popped: the slot no longer fires then.
        if let Some(slot) = self.by_name.remove(name) {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }

    /// Sets a one-shot timer for `at`, Unix ms.
    pub fn set_timer(&mut self, at: i64, timer: Timer) -> TimerId {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.insert(id, timer);
        self.heap.push(Reverse((at, Entry::Timer(id))));
        id
    }

    /// Cancels a timer that has not come due; its heap entry is skipped when popped.
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.timers.remove(&id);
    }

    /// When the earliest fire or timer is due, Unix ms.
    pub fn next_wake(&mut self) -> Option<i64> {
        self.reschedule();
        while let Some(Reverse((at, entry))) = self.heap.peek() {
            if self.is_live(*entry, *at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    fn is_live(&self, entry: Entry, at: i64) -> bool {
        match entry {
            Entry::Job(slot) => self.fires_at(slot, at),
            Entry::Timer(id) => self.timers.contains_key(&id),
        }
    }

    /// The next fire of the job called `name`, Unix ms.
    pub fn next_fire(&self, name: &str) -> Option<i64> {
        let scheduled = self.slots[*self.by_name.get(name)?].as_ref()?;
        match scheduled.next {
            Next::At(at) => Some(at),
            Next::After(taken) => scheduled.job.next_fire_after(from_ms(taken)).map(to_ms),
        }
    }

    /// Every fire and timer due at `now`, in due order.
    ///
    /// A job's fires are at least a second apart, so a fire taken less than a second late is
    /// its job's only due fire: it is handed out at once, and the job's next fire is computed
    /// by [`Scheduler::reschedule`], after the fires were dealt with (computing 10,000 next
    /// fires first would make the last fire of a burst wait for all of them). A fire found
    /// later than that may have company, which is enumerated now.
    pub fn take_due(&mut self, now: i64) -> Vec<Due> {
        self.reschedule();
        let mut due = Vec::new();
        let mut enumerated = false;
        while let Some(&Reverse((at, entry))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let slot = match entry {
                Entry::Timer(id) => {
                    if let Some(timer) = self.timers.remove(&id) {
                        due.push(Due::Timer { timer, at });
                    }
                    continue;
                }
                Entry::Job(slot) if self.fires_at(slot, at) => slot,
                Entry::Job(_) => continue,
            };
            let Some(scheduled) = self.slots[slot].as_mut() else {
                continue;
            };
            if now - at < 1_000 && at > self.started_at {
                scheduled.next = Next::After(at);
                due.push(Due::Fire {
                    job: Arc::clone(&scheduled.job),
                    at,
                    missed: false,
                });
                self.taken.push(slot);
                continue;
            }
            enumerated = true;
            let job = Arc::clone(&scheduled.job);
            let next = self.collect(&job, at, now, &mut due);
            self.set_next(slot, next);
        }
        if enumerated {
            due.sort_by_key(Due::at);
        }
        due
    }

    /// Computes the next fire of each job whose fire [`Scheduler::take_due`] handed out.
    /// `take_due` and `next_wake` call it first, so it runs once the handed-out fires were
    /// dealt with: in the daemon, while their records are being committed.
    fn reschedule(&mut self) {
        for slot in std::mem::take(&mut self.taken) {
            // A slot removed (and perhaps reused) since is no longer waiting for this.
            let Some(Scheduled {
                job,
                next: Next::After(taken),
            }) = &self.slots[slot]
            else {
                continue;
            };
            let next = job.next_fire_after(from_ms(*taken)).map(to_ms);
            self.set_next(slot, next);
        }
    }

    /// Puts the slot's next fire in the heap, or frees the slot when its schedule has ended.
    fn set_next(&mut self, slot: usize, next: Option<i64>) {
        let Some(scheduled) = self.slots[slot].as_mut() else {
            return;
        };
        match next {
            Some(at) => {
                scheduled.next = Next::At(at);
                self.heap.push(Reverse((at, Entry::Job(slot))));
            }
            None => {
                log_schedule_ended(&scheduled.job);
                let name = scheduled.job.name.clone();
                self.remove(&name);
            }
        }
    }

    fn scheduled_mut(&mut self, name: &str) -> Option<&mut Scheduled> {
        let slot = *self.by_name.get(name)?;
        self.slots[slot].as_mut()
    }

    fn fires_at(&self, slot: usize, at: i64) -> bool {
        self.slots[slot]
            .as_ref()
            .is_some_and(|scheduled| scheduled.next == Next::At(at))
    }

    /// Appends the fires of `job` from `first` up to `now` and returns its next fire after them.
    ///
    /// Past [`MAX_LISTED_MISSED`] missed fires the walk jumps to shortly before `now` (far
    /// enough back for `max_catch_up` fires at the longest spacing seen) and leaves a
    /// [`Due::Gap`] for what it jumped over.
    fn collect(&self, job: &Arc<Job>, first: i64, now: i64, due: &mut Vec<Due>) -> Option<i64> {
        let mut at = Some(first);
        let mut listed_missed = 0;
        let mut jumped = false;
        let mut previous: Option<i64> = None;
        let mut widest: i64 = 0;
        while let Some(fire) = at.filter(|fire| *fire <= now) {
            let missed = fire <= self.started_at || fire < now - MISSED_AFTER_MS;
            if missed && !jumped && listed_missed == MAX_LISTED_MISSED {
                jumped = true;
                // At most as many again as were listed, so the listing stays bounded whatever
                // max_catch_up says.
                let tail_fires = self.max_catch_up.clamp(1, MAX_LISTED_MISSED);
                let tail = widest.saturating_mul(i64::from(tail_fires) + 1);
                let resume_after = now.saturating_sub(tail);
                if resume_after > fire {
                    let resume = job.next_fire_after(from_ms(resume_after)).map(to_ms);
                    due.push(Due::Gap {
                        job: Arc::clone(job),
                        from: fire,
                        before: resume.map_or(now, |r| r.min(now)),
                    });
                    at = resume;
                    continue;
                }
            }
            listed_missed += u32::from(missed);
            if let Some(previous) = previous {
                widest = widest.max(fire - previous);
            }
            previous = Some(fire);
            due.push(Due::Fire {
                job: Arc::clone(job),
                at: fire,
                missed,
            });
            at = job.next_fire_after(from_ms(fire)).map(to_ms);
        }
        at
    }
}

/// A schedule ends only where supported time does (late on 9999-12-30 UTC), but a job that
/// stops firing is never dropped without a word.
fn log_schedule_ended(job: &Job) {
    tracing::warn!(
        job = %job.name,
        "no fire left before supported time ends ({}); the job no longer fires on its schedule",
        crate::time::rfc3339_ms(to_ms(jiff::Timestamp::MAX))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_text as config;

    fn ms(text: &str) -> i64 {
        to_ms(text.parse().unwrap())
    }

    fn fires(due: &[Due]) -> Vec<(String, String, bool)> {
        due.iter()
            .map(|d| match d {
                Due::Fire { job, at, missed } => {
                    (job.name.clone(), from_ms(*at).to_string(), *missed)
                }
                Due::Gap { job, from, .. } => (
                    job.name.clone(),
                    format!("gap from {}", from_ms(*from)),
                    true,
                ),
                Due::Timer { timer, at } => (format!("{timer:?}"), from_ms(*at).to_string(), false),
            })
            .collect()
    }

    const TWO_JOBS: &str = r#"
[[jobs]]
name = "minutely"
plugin = "exec"
schedule = "* * * * *"

[[jobs]]
name = "every-20s"
plugin = "exec"
schedule = "*/20 * * * * *"
"#;

    #[test]
    fn fires_come_due_in_order_and_reschedule() {
        let (_dir, config) = config(TWO_JOBS);
        let start = ms("2027-01-01T00:00:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        for job in &config.jobs {
            scheduler.add(Arc::clone(job), None, start);
        }
        assert_eq!(scheduler.next_wake(), Some(ms("2027-01-01T00:00:40Z")));
        assert!(
            scheduler
                .take_due(ms("2027-01-01T00:00:39.999Z"))
                .is_empty()
        );
        assert_eq!(
            fires(&scheduler.take_due(ms("2027-01-01T00:00:40Z"))),
            [("every-20s".into(), "2027-01-01T00:00:40Z".into(), false)]
        );
        assert_eq!(scheduler.next_wake(), Some(ms("2027-01-01T00:01:00Z")));
        assert_eq!(
            fires(&scheduler.take_due(ms("2027-01-01T00:01:00.002Z"))),
            [
                ("minutely".into(), "2027-01-01T00:01:00Z".into(), false),
                ("every-20s".into(), "2027-01-01T00:01:00Z".into(), false),
            ],
            "fires due together come in the order their jobs were scheduled"
        );
        assert_eq!(
            scheduler.next_fire("minutely"),
            Some(ms("2027-01-01T00:02:00Z"))
        );
    }

    #[test]
    fn a_restart_resumes_after_the_last_fire_without_repeating_it() {
        let (_dir, config) = config(TWO_JOBS);
        let job = Arc::clone(config.job("minutely").unwrap());
        let start = ms("2027-01-01T00:03:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        scheduler.add(job, Some(ms("2027-01-01T00:01:00Z")), start);
        assert_eq!(
            fires(&scheduler.take_due(start)),
            [
                ("minutely".into(), "2027-01-01T00:02:00Z".into(), true),
                ("minutely".into(), "2027-01-01T00:03:00Z".into(), true),
            ],
            "fires missed while down are due at once, marked missed; 00:01 is not repeated"
        );
        assert_eq!(
            scheduler.next_fire("minutely"),
            Some(ms("2027-01-01T00:04:00Z"))
        );
    }

    #[test]
    fn a_very_long_outage_lists_the_oldest_and_the_newest_fires_around_one_gap() {
        let (_dir, config) =
            config("[[jobs]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\n");
        let job = Arc::clone(config.job("tick").unwrap());
        // Four hours of per-second fires: 14,400, more than are listed one by one.
        let start = ms("2027-01-01T04:00:00.500Z");
        let mut scheduler = Scheduler::new(start, 3);
        scheduler.add(job, Some(ms("2027-01-01T00:00:00Z")), start);
        let due = scheduler.take_due(start);
        let listed = usize::try_from(MAX_LISTED_MISSED).unwrap();
        let fires = fires(&due);
        assert_eq!(fires[0].1, "2027-01-01T00:00:01Z");
        assert_eq!(fires[listed - 1].1, "2027-01-01T02:46:40Z");
        assert_eq!(fires[listed].1, "gap from 2027-01-01T02:46:41Z");
        let tail: Vec<&str> = fires[listed + 1..].iter().map(|f| f.1.as_str()).collect();
        assert_eq!(
            tail,
            [
                "2027-01-01T03:59:57Z",
                "2027-01-01T03:59:58Z",
                "2027-01-01T03:59:59Z",
                "2027-01-01T04:00:00Z"
            ],
            "the newest fires, enough for max_catch_up = 3 and the latest"
        );
        assert!(fires[listed + 1..].iter().all(|f| f.2), "all missed");
        let Due::Gap { before, .. } = &due[listed] else {
            panic!("a gap")
        };
        assert_eq!(*before, ms("2027-01-01T03:59:57Z"));
        scheduler.reschedule();
        assert_eq!(
            scheduler.next_fire("tick"),
            Some(ms("2027-01-01T04:00:01Z"))
        );
    }

    #[test]
    fn a_clock_jump_forward_marks_old_fires_missed() {
        let (_dir, config) = config(TWO_JOBS);
        let job = Arc::clone(config.job("minutely").unwrap());
        let start = ms("2027-01-01T00:00:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        scheduler.add(job, None, start);
        // Five minutes pass in one step: fires over a minute late are missed, later ones not.
        assert_eq!(
            fires(&scheduler.take_due(ms("2027-01-01T00:05:10Z"))),
            [
                ("minutely".into(), "2027-01-01T00:01:00Z".into(), true),
                ("minutely".into(), "2027-01-01T00:02:00Z".into(), true),
                ("minutely".into(), "2027-01-01T00:03:00Z".into(), true),
                ("minutely".into(), "2027-01-01T00:04:00Z".into(), true),
                ("minutely".into(), "2027-01-01T00:05:00Z".into(), false),
            ]
        );
    }

    #[test]
    fn a_clock_jump_backward_repeats_nothing() {
        let (_dir, config) = config(TWO_JOBS);
        let job = Arc::clone(config.job("minutely").unwrap());
        let start = ms("2027-01-01T00:10:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        scheduler.add(job, None, start);
        assert!(scheduler.take_due(ms("2027-01-01T00:02:00Z")).is_empty());
        assert_eq!(scheduler.next_wake(), Some(ms("2027-01-01T00:11:00Z")));
    }

    #[test]
    fn removed_jobs_stop_firing() {
        let (_dir, config) = config(TWO_JOBS);
        let start = ms("2027-01-01T00:00:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        for job in &config.jobs {
            scheduler.add(Arc::clone(job), None, start);
        }
        scheduler.remove("every-20s");
        assert_eq!(scheduler.next_wake(), Some(ms("2027-01-01T00:01:00Z")));
        assert_eq!(
            fires(&scheduler.take_due(ms("2027-01-01T00:01:00Z"))).len(),
            1
        );
    }

    #[test]
    fn a_reused_slot_or_a_rescheduled_job_never_fires_twice() {
        let (_dir, config) = config(TWO_JOBS);
        let minutely = Arc::clone(config.job("minutely").unwrap());
        let every_20s = Arc::clone(config.job("every-20s").unwrap());
        let start = ms("2027-01-01T00:00:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        scheduler.add(Arc::clone(&minutely), None, start);
        // Scheduling a job again replaces it; its old heap entry is stale.
        scheduler.add(Arc::clone(&minutely), None, start);
        // The removed job's slot goes to the next job added.
        scheduler.remove("minutely");
        scheduler.add(every_20s, None, start);
        scheduler.add(minutely, None, start);
        assert_eq!(
            fires(&scheduler.take_due(ms("2027-01-01T00:01:00Z"))),
            [
                ("every-20s".into(), "2027-01-01T00:00:40Z".into(), false),
                ("every-20s".into(), "2027-01-01T00:01:00Z".into(), false),
                ("minutely".into(), "2027-01-01T00:01:00Z".into(), false),
            ]
        );
        assert_eq!(
            scheduler.next_fire("every-20s"),
            Some(ms("2027-01-01T00:01:20Z"))
        );
    }

    #[test]
    fn timers_share_the_timeline_with_fires_and_can_be_cancelled() {
        let (_dir, config) = config(TWO_JOBS);
        let start = ms("2027-01-01T00:00:30Z");
        let mut scheduler = Scheduler::new(start, 100);
        scheduler.add(Arc::clone(config.job("minutely").unwrap()), None, start);
        scheduler.set_timer(ms("2027-01-01T00:01:00Z"), Timer::Fire(7));
        let rescan = scheduler.set_timer(ms("2027-01-01T00:00:31Z"), Timer::Rescan);
        scheduler.set_timer(ms("2027-01-01T00:00:45Z"), Timer::Reload);
        assert_eq!(scheduler.next_wake(), Some(ms("2027-01-01T00:00:31Z")));
        scheduler.cancel_timer(rescan);
        assert_eq!(
            scheduler.next_wake(),
            Some(ms("2027-01-01T00:00:45Z")),
            "a cancelled timer does not wake anyone"
        );
        assert_eq!(
            fires(&scheduler.take_due(ms("2027-01-01T00:01:00Z"))),
            [
                ("Reload".into(), "2027-01-01T00:00:45Z".into(), false),
                ("minutely".into(), "2027-01-01T00:01:00Z".into(), false),
                ("Fire(7)".into(), "2027-01-01T00:01:00Z".into(), false),
            ]
        );
        assert!(scheduler.take_due(ms("2027-01-01T00:01:00Z")).is_empty());
    }

    #[test]
    fn manual_and_reboot_jobs_are_not_scheduled() {
        let (_dir, config) = config(
            "[[jobs]]\nname = \"m\"\nplugin = \"exec\"\n\n[[jobs]]\nname = \"r\"\nplugin = \"exec\"\nschedule = \"@reboot\"\n",
        );
        let mut scheduler = Scheduler::new(0, 100);
        for job in &config.jobs {
            scheduler.add(Arc::clone(job), None, 0);
        }
        assert_eq!(scheduler.next_wake(), None);
    }
}
