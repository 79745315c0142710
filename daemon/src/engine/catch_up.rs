//! What comes due on the timeline, and the `catch_up` policy for fires that came due while
//! the daemon was down (or found very late: a suspend, a clock jump, a history that could not
//! be written).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use super::fire::{Fire, Then};
use crate::admission::SkipKind;
use crate::config::defaults::MAX_LISTED_MISSED;
use crate::config::{CatchUp, Job};
use crate::model::{Status, Trigger};
use crate::scheduler::{Due, Timer};
use crate::time::rfc3339_ms;
use crate::units::format_duration;

impl Engine {
    /// Handles what the timeline found due, in due order, so that a job's fires are recorded
    /// in the order they came due even when some were missed and later ones were not (the
    /// history could not be written for a while): fires on time go to admission together (so
    /// priority decides among them), missed ones follow their job's `catch_up`.
    pub(super) fn take_due(&mut self, due: Vec<Due>, now: i64) {
        let mut missed_left: HashMap<String, u32> = HashMap::new();
        for item in &due {
            if let Due::Fire {
                job, missed: true, ..
            } = item
            {
                *missed_left.entry(job.name.clone()).or_default() += 1;
            }
        }
        for item in due {
            match item {
                Due::Fire {
                    job,
                    at,
                    missed: false,
                } => {
                    self.accept(
                        Fire::of(&job, Trigger::Schedule, at, now),
                        Then::Admission,
                        now,
                    );
                }
                Due::Fire {
                    job,
                    at,
                    missed: true,
                } => {
                    let left = missed_left.get_mut(&job.name).map_or(0, |left| {
                        *left -= 1;
                        *left
                    });
                    self.catch_up(&job, at, left, now);
                }
                Due::Gap { job, from, before } => {
                    let reason = format!(
                        "missed, with every later fire before {}: more than {MAX_LISTED_MISSED} \
                         fires were missed, and those between are not recorded one by one",
                        rfc3339_ms(before)
                    );
                    self.skip_missed(Fire::of(&job, Trigger::CatchUp, from, now), reason);
                }
                Due::Timer {
                    timer: Timer::Fire(key),
                    ..
                } => self.offer(key, now),
                Due::Timer {
                    timer: Timer::Rescan,
                    ..
                } => self.start_rescan(),
                Due::Timer {
                    timer: Timer::Reload,
                    ..
                } => {
                    self.reload = None;
                    tracing::info!("the config file changed; reloading");
                    self.request_reload(None);
                }
            }
        }
    }

    /// Applies `job`'s `catch_up` policy to its missed fire at `at`, with `left` more of its
    /// missed fires due after it: `skip` records each as skipped; `once` runs the latest and
    /// records the others; `all` runs the newest `max_catch_up`, one after another, and records
    /// the older ones.
    fn catch_up(&mut self, job: &Arc<Job>, at: i64, left: u32, now: i64) {
        let cap = self.config.daemon.max_catch_up;
        let why = self.why_missed(at, now);
        let fire = Fire::of(job, Trigger::CatchUp, at, now);
        match job.catch_up {
            // One after another, so a long outage does not put every missed fire in the
            // queue at once (where `overlap = "skip"` would decline all but the first).
            CatchUp::All if left < cap => {
                self.accept(fire, Then::Backlog, now);
            }
            CatchUp::All => self.skip_missed(
                fire,
                format!(
                    "{why}; catch_up = \"all\" runs only the newest max_catch_up = {cap} \
                     missed fires"
                ),
            ),
            CatchUp::Once if left == 0 => {
                self.accept(fire, Then::Admission, now);
            }
            CatchUp::Once => self.skip_missed(
                fire,
                format!("{why}; catch_up = \"once\" runs only the latest missed fire"),
            ),
            CatchUp::Skip => {
                self.skip_missed(fire, format!("{why} (catch_up = \"skip\")"));
            }
        }
    }

    fn why_missed(&self, at: i64, now: i64) -> String {
        if at <= self.started_at {
            return "missed while pacerd was not running".to_owned();
        }
        match self.history_held {
            Some((since, until)) if at >= since && until.is_none_or(|until| at <= until) => {
                format!(
                    "missed while the history could not be written (from {} to {})",
                    rfc3339_ms(since),
                    rfc3339_ms(until.unwrap_or(now))
                )
            }
            _ => format!(
                "missed: found {} late (the machine was suspended or the wall clock jumped)",
                format_duration(Duration::from_millis(u64::try_from(now - at).unwrap_or(0)))
            ),
        }
    }

    /// Records a missed fire the policy does not run (a paused job's leaves no record).
    fn skip_missed(&mut self, fire: Fire, reason: String) {
        if self.paused.contains(&fire.job.name) {
            self.pass_paused(&fire);
            return;
        }
        if self.cluster.is_some() {
            self.propose_skipped(fire, reason, SkipKind::Missed);
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.fires.insert(key, fire);
        self.decline(key, Status::Skipped, reason, Some(SkipKind::Missed));
    }

    /// Offers the next missed fire of each `catch_up = "all"` job whose previous one is done.
    pub(super) fn next_catch_ups(&mut self, now: i64) {
        if self.backlog_turn.is_empty() {
            return;
        }
        for name in std::mem::take(&mut self.backlog_turn) {
            let Some(key) = self
                .backlog
                .get_mut(&name)
                .and_then(std::collections::VecDeque::pop_front)
            else {
                continue;
            };
            if self
                .backlog
                .get(&name)
                .is_some_and(std::collections::VecDeque::is_empty)
            {
                self.backlog.remove(&name);
            }
            self.offer(key, now);
        }
    }
}
