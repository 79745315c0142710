//! Turns schedules into fires: a heap of jobs ordered by their next fire, and the one rule for
//! fires that come due late.
//!
//! This is a pure state machine driven by the instants it is given, so its tests pin exact
//! times. The daemon's loop sleeps until [`Scheduler::next_wake`] (re-reading the wall clock at
//! least every minute) and hands each [`Due`] to dispatch.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::config::Job;
use crate::time::{from_ms, to_ms};

/// A fire found more than this late was missed (the machine was suspended, or the wall clock
/// jumped forward): it follows the job's `catch_up` policy instead of running as if on time.
pub const MISSED_AFTER_MS: i64 = 60_000;

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
    /// More missed fires than `max_catch_up`: the first one not listed, and when the gap ended.
    Gap {
        /// The job.
        job: Arc<Job>,
        /// The first missed fire beyond the cap, Unix ms.
        from: i64,
        /// When the scheduler noticed, Unix ms.
        until: i64,
    },
}

/// The jobs that fire on a schedule and when each fires next.
#[derive(Debug)]
pub struct Scheduler {
    heap: BinaryHeap<Reverse<(i64, String)>>,
    next: HashMap<String, (Arc<Job>, i64)>,
    /// Fires at or before this instant were due while the daemon was down.
    started_at: i64,
    max_catch_up: u32,
}

impl Scheduler {
    /// An empty scheduler for a daemon that started at `started_at` (Unix ms).
    pub fn new(started_at: i64, max_catch_up: u32) -> Scheduler {
        Scheduler {
            heap: BinaryHeap::new(),
            next: HashMap::new(),
            started_at,
            max_catch_up,
        }
    }

    /// Schedules `job`: its first fire after `last_fire` when one is known (so fires missed
    /// while the daemon was down come due at once), else its first fire after `now`.
    /// Jobs without a recurring schedule (manual-only, `@reboot`) are not held here.
    pub fn add(&mut self, job: Arc<Job>, last_fire: Option<i64>, now: i64) {
        let after = last_fire.unwrap_or(now);
        if let Some(at) = job.next_fire_after(from_ms(after)).map(to_ms) {
            self.heap.push(Reverse((at, job.name.clone())));
            self.next.insert(job.name.clone(), (job, at));
        }
    }

    /// Puts a new version of a job in place, keeping its next fire (a reload that did not
    /// change when it fires).
    pub fn update(&mut self, job: Arc<Job>) {
        if let Some(entry) = self.next.get_mut(&job.name) {
            entry.0 = job;
        }
    }

    /// Stops scheduling the job called `name`.
    pub fn remove(&mut self, name: &str) {
        // Its heap entry is skipped when popped: it no longer matches `next`.
        self.next.remove(name);
    }

    /// When the earliest fire is due, Unix ms.
    pub fn next_wake(&mut self) -> Option<i64> {
        while let Some(Reverse((at, name))) = self.heap.peek() {
            if self.is_current(*at, name) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// The next fire of the job called `name`, Unix ms.
    pub fn next_fire(&self, name: &str) -> Option<i64> {
        self.next.get(name).map(|(_, at)| *at)
    }

    /// Every fire due at `now`, in due order, each job rescheduled after it.
    pub fn take_due(&mut self, now: i64) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(Reverse((at, name))) = self.heap.peek().cloned() {
            if at > now {
                break;
            }
            self.heap.pop();
            if !self.is_current(at, &name) {
                continue;
            }
            let Some((job, _)) = self.next.remove(&name) else {
                continue;
            };
            let next = self.collect(&job, at, now, &mut due);
            if let Some(next) = next {
                self.heap.push(Reverse((next, name.clone())));
                self.next.insert(name, (job, next));
            }
        }
        due.sort_by_key(|d| match d {
            Due::Fire { at, .. } => *at,
            Due::Gap { from, .. } => *from,
        });
        due
    }

    /// Appends the fires of `job` from `first` up to `now` and returns its next fire after them.
    fn collect(&self, job: &Arc<Job>, first: i64, now: i64, due: &mut Vec<Due>) -> Option<i64> {
        let mut at = Some(first);
        let mut missed_count = 0;
        while let Some(fire) = at.filter(|fire| *fire <= now) {
            let missed = fire <= self.started_at || fire < now - MISSED_AFTER_MS;
            if missed {
                if missed_count == self.max_catch_up {
                    due.push(Due::Gap {
                        job: Arc::clone(job),
                        from: fire,
                        until: now,
                    });
                    return job.next_fire_after(from_ms(now)).map(to_ms);
                }
                missed_count += 1;
            }
            due.push(Due::Fire {
                job: Arc::clone(job),
                at: fire,
                missed,
            });
            at = job.next_fire_after(from_ms(fire)).map(to_ms);
        }
        at
    }

    fn is_current(&self, at: i64, name: &str) -> bool {
        self.next.get(name).is_some_and(|(_, next)| *next == at)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, Environment, load};

    fn config(jobs: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pacer.toml");
        std::fs::write(&path, jobs).unwrap();
        let config = load(
            Path::new(&path),
            Environment {
                can_switch_users: true,
            },
        )
        .unwrap();
        (dir, config)
    }

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
                ("every-20s".into(), "2027-01-01T00:01:00Z".into(), false),
                ("minutely".into(), "2027-01-01T00:01:00Z".into(), false),
            ]
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
    fn missed_fires_beyond_the_cap_become_one_gap() {
        let (_dir, config) = config(TWO_JOBS);
        let job = Arc::clone(config.job("minutely").unwrap());
        let start = ms("2027-01-01T01:00:30Z");
        let mut scheduler = Scheduler::new(start, 2);
        scheduler.add(job, Some(ms("2027-01-01T00:00:00Z")), start);
        assert_eq!(
            fires(&scheduler.take_due(start)),
            [
                ("minutely".into(), "2027-01-01T00:01:00Z".into(), true),
                ("minutely".into(), "2027-01-01T00:02:00Z".into(), true),
                (
                    "minutely".into(),
                    "gap from 2027-01-01T00:03:00Z".into(),
                    true
                ),
            ]
        );
        assert_eq!(
            scheduler.next_fire("minutely"),
            Some(ms("2027-01-01T01:01:00Z"))
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
