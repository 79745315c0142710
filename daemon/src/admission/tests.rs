//! Admission rules, each checked on the state machine with fixed instants.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::config::{Config, load_text as config};

/// Admission under a config, with the fires it was given remembered by key.
struct Rig {
    config: Config,
    admission: LocalAdmission,
    fires: HashMap<FireKey, (String, i64)>,
    next: FireKey,
    /// The last submission's outcome, kept so `submit` can record the fire before returning it.
    last: Submitted,
}

impl Rig {
    fn new(config: Config) -> Rig {
        let admission = LocalAdmission::new(&Limits::of(&config), 0);
        Rig {
            config,
            admission,
            fires: HashMap::new(),
            next: 1,
            last: Submitted::default(),
        }
    }

    /// Submits a fire of `job` due at `at`, its record committed as run `key * 10`.
    fn submit(&mut self, job: &str, at: i64, now: i64) -> Submitted {
        let key = self.submit_unrecorded(job, at, now);
        self.admission
            .recorded(key, RunId::try_from(key).unwrap() * 10);
        std::mem::take(&mut self.last)
    }

    fn submit_unrecorded(&mut self, job: &str, at: i64, now: i64) -> FireKey {
        let key = self.next;
        self.next += 1;
        self.fires.insert(key, (job.to_owned(), at));
        self.last = self.admission.submit(
            Candidate {
                key,
                job: Arc::clone(self.config.job(job).unwrap()),
                trigger: Trigger::Schedule,
                scheduled_at: at,
                run_id: None,
                waiting_since: now,
            },
            now,
        );
        key
    }

    fn admit(&mut self, now: i64) -> Vec<Admitted> {
        self.admission.admit(now)
    }

    fn names(&self, admitted: &[Admitted]) -> Vec<String> {
        admitted
            .iter()
            .map(|a| self.fires[&a.key].0.clone())
            .collect()
    }

    fn due(&self, admitted: &Admitted) -> i64 {
        self.fires[&admitted.key].1
    }
}

fn reasons(submitted: &Submitted) -> Vec<String> {
    submitted.refused.iter().map(|s| s.reason.clone()).collect()
}

fn jobs(extra_daemon: &str, jobs: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[daemon]\n{extra_daemon}\n[pools.slow]\nmax_concurrency = 1\n\n[pools.rated]\nmax_starts_per_second = 2\n"
    );
    for (name, settings) in jobs {
        text.push_str(&format!(
            "\n[[jobs]]\nname = \"{name}\"\nplugin = \"exec\"\n{settings}\n"
        ));
    }
    text
}

#[test]
fn the_global_cap_holds_and_priority_then_due_time_decide() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 2",
        &[
            ("low", "priority = -1\noverlap = \"allow\""),
            ("mid", "overlap = \"allow\""),
            ("high", "priority = 5\noverlap = \"allow\""),
        ],
    ));
    let mut rig = Rig::new(config);
    for (job, at) in [("low", 10), ("mid", 20), ("mid", 10), ("high", 30)] {
        assert_eq!(rig.submit(job, at, 100), Submitted::default());
    }
    let first = rig.admit(100);
    assert_eq!(rig.names(&first), ["high", "mid"]);
    assert_eq!(
        rig.due(&first[1]),
        10,
        "earlier due time first within a priority"
    );
    assert!(rig.admit(100).is_empty(), "the cap of 2 is reached");
    assert_eq!(
        rig.admission.status().total,
        Load {
            in_flight: 2,
            queued: 2
        }
    );
    rig.admission.finished(first[0].key);
    let next = rig.admit(150);
    assert_eq!(rig.names(&next), ["mid"]);
    assert_eq!(next[0].queue_ms, 50);
}

#[test]
fn a_fire_starts_only_once_its_record_exists_and_is_not_overtaken_meanwhile() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("first", "priority = 1"), ("second", "")],
    ));
    let mut rig = Rig::new(config);
    let first = rig.submit_unrecorded("first", 0, 0);
    rig.submit("second", 0, 0);
    assert!(
        rig.admit(0).is_empty(),
        "the head has no record yet, and the fire behind it does not overtake it"
    );
    rig.admission.recorded(first, 77);
    let admitted = rig.admit(1);
    assert_eq!(rig.names(&admitted), ["first"]);
}

#[test]
fn a_pool_cap_holds_while_other_pools_proceed() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 8",
        &[
            ("s1", "pool = \"slow\""),
            ("s2", "pool = \"slow\""),
            ("d", ""),
        ],
    ));
    let mut rig = Rig::new(config);
    for job in ["s1", "s2", "d"] {
        rig.submit(job, 0, 0);
    }
    let admitted = rig.admit(0);
    assert_eq!(rig.names(&admitted), ["s1", "d"]);
    let status = rig.admission.status();
    assert_eq!(
        status.pools["slow"],
        Load {
            in_flight: 1,
            queued: 1
        }
    );
    assert_eq!(
        status.pools["default"],
        Load {
            in_flight: 1,
            queued: 0
        }
    );
}

#[test]
fn a_start_rate_spaces_starts() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 8",
        &[("r", "pool = \"rated\"\noverlap = \"allow\"")],
    ));
    let mut rig = Rig::new(config);
    for at in 0..5 {
        rig.submit("r", at, 0);
    }
    assert_eq!(rig.admit(0).len(), 2, "a bucket of max(1, rate) = 2 tokens");
    assert_eq!(rig.admission.next_wake(0), Some(500));
    assert!(rig.admit(499).is_empty());
    assert_eq!(rig.admit(500).len(), 1);
    assert_eq!(rig.admit(1_000).len(), 1);
}

#[test]
fn overlap_skip_names_the_run_still_going() {
    let (_dir, config) = config(&jobs("", &[("j", "")]));
    let mut rig = Rig::new(config);
    let first = rig.submit_unrecorded("j", 0, 0);
    assert_eq!(
        reasons(&rig.submit("j", 1, 1)),
        ["an earlier fire of `j` is still waiting for a slot (overlap = \"skip\")"]
    );
    rig.admission.recorded(first, 41);
    let admitted = rig.admit(1);
    assert_eq!(
        reasons(&rig.submit("j", 3, 3)),
        ["run 41 of `j` is still running (overlap = \"skip\")"]
    );
    rig.admission.finished(admitted[0].key);
    assert_eq!(rig.submit("j", 4, 4), Submitted::default());
}

#[test]
fn a_job_idle_again_is_judged_afresh_before_and_after_a_reconfigure() {
    let (_dir, config) = config(&jobs("", &[("j", "")]));
    let mut rig = Rig::new(config);
    let limits = Limits::of(&rig.config);
    for round in 0..3 {
        let at = round * 10;
        assert_eq!(
            rig.submit("j", at, at),
            Submitted::default(),
            "round {round}"
        );
        let admitted = rig.admit(at);
        assert_eq!(admitted.len(), 1, "round {round}");
        assert_eq!(
            reasons(&rig.submit("j", at + 1, at + 1)),
            [format!(
                "run {} of `j` is still running (overlap = \"skip\")",
                admitted[0].key * 10
            )],
            "round {round}"
        );
        rig.admission.finished(admitted[0].key);
        assert_eq!(rig.admission.status().total, Load::default());
        if round == 1 {
            rig.admission.reconfigure(&limits, at + 2);
        }
    }
}

#[test]
fn overlap_queue_holds_one_fire_until_the_run_ends() {
    let (_dir, config) = config(&jobs("", &[("j", "overlap = \"queue\"")]));
    let mut rig = Rig::new(config);
    rig.submit("j", 0, 0);
    let first = rig.admit(0);
    assert_eq!(rig.submit("j", 10, 10), Submitted::default());
    assert_eq!(
        reasons(&rig.submit("j", 20, 20)),
        [
            "run 10 of `j` is still running, and another fire already waits for it (overlap = \"queue\" holds at most one)"
        ]
    );
    assert!(rig.admit(30).is_empty(), "held while the run goes");
    assert_eq!(rig.admission.status().total.queued, 1);
    assert_eq!(
        rig.admission.waiting("j")[0].reason,
        "waiting for the previous run of `j` to end (overlap)"
    );
    rig.admission.finished(first[0].key);
    let second = rig.admit(40);
    assert_eq!(second.len(), 1);
    assert_eq!(rig.due(&second[0]), 10);
    assert_eq!(second[0].queue_ms, 30);
}

#[test]
fn overlap_queue_counts_a_fire_waiting_for_a_slot_as_the_previous_run() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("busy", ""), ("j", "overlap = \"queue\"")],
    ));
    let mut rig = Rig::new(config);
    rig.submit("busy", 0, 0);
    let busy = rig.admit(0);
    assert_eq!(rig.submit("j", 10, 10), Submitted::default());
    assert_eq!(rig.submit("j", 20, 20), Submitted::default());
    assert_eq!(
        reasons(&rig.submit("j", 30, 30)),
        [
            "an earlier fire of `j` is still waiting for a slot, and another fire already waits for it (overlap = \"queue\" holds at most one)"
        ]
    );
    rig.admission.finished(busy[0].key);
    let first = rig.admit(40);
    assert_eq!(first.len(), 1);
    assert_eq!(rig.due(&first[0]), 10);
    rig.admission.finished(first[0].key);
    let second = rig.admit(50);
    assert_eq!(
        second.iter().map(|a| rig.due(a)).collect::<Vec<_>>(),
        [20],
        "the held fire starts only after the first one ended"
    );
}

#[test]
fn overlap_replace_stops_the_run_and_starts_after_its_exit() {
    let (_dir, config) = config(&jobs("", &[("j", "overlap = \"replace\"")]));
    let mut rig = Rig::new(config);
    rig.submit("j", 0, 0);
    let first = rig.admit(0);
    let replacing = rig.submit("j", 1_000, 1_000);
    assert_eq!(
        replacing.stop,
        [Stop {
            key: first[0].key,
            reason: "replaced by the schedule fire due at 1970-01-01T00:00:01.000Z (overlap = \"replace\")"
                .to_owned()
        }]
    );
    assert!(replacing.refused.is_empty());
    assert!(
        rig.admit(1_000).is_empty(),
        "the successor waits for the old run's exit"
    );
    let third = rig.submit("j", 2_000, 2_000);
    assert_eq!(
        third.refused.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [SkipKind::Replaced],
        "the fire still waiting is replaced in turn"
    );
    rig.admission.finished(first[0].key);
    let next = rig.admit(2_100);
    assert_eq!(rig.due(&next[0]), 2_000);
}

#[test]
fn overlap_allow_runs_side_by_side() {
    let (_dir, config) = config(&jobs("", &[("j", "overlap = \"allow\"")]));
    let mut rig = Rig::new(config);
    for at in 0..3 {
        assert_eq!(rig.submit("j", at, at), Submitted::default());
    }
    assert_eq!(rig.admit(3).len(), 3);
}

#[test]
fn a_full_queue_declines_with_a_reason() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1\nmax_queue = 2",
        &[("j", "overlap = \"allow\"")],
    ));
    let mut rig = Rig::new(config);
    rig.submit("j", 0, 0);
    assert_eq!(rig.admit(0).len(), 1);
    for at in 1..3 {
        assert_eq!(rig.submit("j", at, 0), Submitted::default());
    }
    assert_eq!(
        reasons(&rig.submit("j", 3, 0)),
        ["the queue is full: 2 fires wait for a slot (max_queue = 2)"]
    );
}

#[test]
fn pressure_holds_new_starts_and_is_rechecked() {
    let dir = tempfile::tempdir().unwrap();
    let psi = dir.path().join("psi");
    std::fs::create_dir(&psi).unwrap();
    std::fs::write(
        psi.join("cpu"),
        "some avg10=95.00 avg60=0 avg300=0 total=0\n",
    )
    .unwrap();
    let (_cfg_dir, config) = config(&jobs(
        &format!(
            "max_cpu_pressure = 50\npressure_dir = \"{}\"",
            psi.display()
        ),
        &[("j", "")],
    ));
    let mut rig = Rig::new(config);
    rig.submit("j", 0, 0);
    assert!(rig.admit(0).is_empty());
    assert_eq!(
        rig.admission.status().waiting_on.as_deref(),
        Some("cpu pressure is 95.00% (some avg10), above max_cpu_pressure = 50")
    );
    assert_eq!(rig.admission.next_wake(0), Some(RECHECK_MS));
    std::fs::write(
        psi.join("cpu"),
        "some avg10=5.00 avg60=0 avg300=0 total=0\n",
    )
    .unwrap();
    assert_eq!(rig.admit(RECHECK_MS).len(), 1);
    assert_eq!(rig.admission.status().waiting_on, None);
}

#[test]
fn a_withdrawn_fire_leaves_and_frees_its_place() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("j", "overlap = \"allow\""), ("q", "overlap = \"queue\"")],
    ));
    let mut rig = Rig::new(config);
    for at in 0..3 {
        rig.submit("j", at, 0);
    }
    let running = rig.admit(0);
    assert!(
        !rig.admission.withdraw(running[0].key),
        "a running fire is not waiting"
    );
    assert!(rig.admission.withdraw(2));
    assert!(!rig.admission.withdraw(2), "only once");
    rig.submit("q", 5, 5);
    rig.submit("q", 6, 6);
    assert!(rig.admission.withdraw(5), "a held fire");
    assert_eq!(rig.admission.status().total.queued, 2);
    rig.admission.finished(running[0].key);
    let next = rig.admit(10);
    assert_eq!(rig.due(&next[0]), 2);
}

#[test]
fn reconfigure_keeps_runs_and_applies_new_caps() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("j", "overlap = \"allow\"")],
    ));
    let mut rig = Rig::new(config);
    for at in 0..3 {
        rig.submit("j", at, 0);
    }
    assert_eq!(rig.admit(0).len(), 1);
    let mut limits = Limits::of(&rig.config);
    limits.max_concurrency = 3;
    rig.admission.reconfigure(&limits, 0);
    assert_eq!(rig.admit(0).len(), 2);
    assert_eq!(rig.admission.status().total.in_flight, 3);
}

#[test]
fn a_waiting_fire_names_the_limit_that_holds_it() {
    let (_dir, config) = config(&jobs(
        "",
        &[
            ("a", "pool = \"slow\""),
            ("b", "pool = \"slow\""),
            ("r1", "pool = \"rated\""),
            ("r2", "pool = \"rated\""),
            ("r3", "pool = \"rated\""),
        ],
    ));
    let mut rig = Rig::new(config);
    for job in ["a", "b", "r1", "r2", "r3"] {
        rig.submit(job, 0, 0);
    }
    let admitted = rig.admit(0);
    assert_eq!(rig.names(&admitted), ["a", "r1", "r2"]);
    assert_eq!(
        rig.admission.waiting("b")[0].reason,
        "waiting for a slot in pool `slow` (1 runs in flight of its max_concurrency = 1)"
    );
    let r3 = rig.admission.waiting("r3")[0].key;
    assert_eq!(
        rig.admission.why_waiting(r3).as_deref(),
        Some(
            "waiting for its turn: pool `rated` starts at most 2 runs per second (max_starts_per_second)"
        )
    );
}

#[test]
fn a_full_queue_keeps_the_fires_of_highest_priority() {
    let settings: Vec<String> = (1..=5).map(|p| format!("priority = {p}")).collect();
    let queued = ["q1", "q2", "q3", "q4", "q5"];
    let mut specs = vec![("busy", "")];
    specs.extend(queued.iter().zip(&settings).map(|(n, s)| (*n, s.as_str())));
    let (_dir, config) = config(&jobs("max_concurrency = 1\nmax_queue = 2", &specs));
    let mut rig = Rig::new(config);
    rig.submit("busy", 0, 0);
    let busy = rig.admit(0);
    let mut declined = Vec::new();
    for job in queued {
        declined.extend(rig.submit(job, 1_000, 1_000).refused);
    }
    let declined_jobs: Vec<&str> = declined
        .iter()
        .map(|refusal| rig.fires[&refusal.key].0.as_str())
        .collect();
    assert_eq!(
        declined_jobs,
        ["q1", "q2", "q3"],
        "in the order they were pushed out"
    );
    assert_eq!(
        declined[0].reason,
        "the queue is full: 2 fires wait for a slot (max_queue = 2), and fires of higher priority came"
    );
    rig.admission.finished(busy[0].key);
    let next = rig.admit(2_000);
    assert_eq!(rig.names(&next), ["q5"]);
}

#[test]
fn a_reload_keeps_each_job_load_by_name_and_moves_a_job_to_its_new_pool() {
    let (_before_dir, before) = config(&jobs("", &[("a", ""), ("idle", "")]));
    let (_after_dir, after) = config(&jobs("", &[("a", "pool = \"slow\""), ("fresh", "")]));
    let mut rig = Rig::new(before);
    rig.submit("a", 0, 0);
    rig.submit("idle", 0, 0);
    let admitted = rig.admit(0);
    assert_eq!(rig.names(&admitted), ["a", "idle"]);
    rig.admission.finished(admitted[1].key);
    rig.config = after;
    rig.admission.reconfigure(&Limits::of(&rig.config), 1);
    assert_eq!(
        rig.submit("fresh", 2, 2),
        Submitted::default(),
        "a new job starts idle, whatever load it is given"
    );
    assert_eq!(
        reasons(&rig.submit("a", 2, 2)),
        [format!(
            "run {} of `a` is still running (overlap = \"skip\")",
            admitted[0].key * 10
        )],
        "the run of the job as it was before the reload still counts"
    );
    rig.admission.finished(admitted[0].key);
    assert_eq!(rig.submit("a", 3, 3), Submitted::default());
    let next = rig.admit(3);
    assert_eq!(rig.names(&next), ["fresh", "a"]);
    let status = rig.admission.status();
    assert_eq!(
        status.pools["slow"].in_flight, 1,
        "`a` runs in its new pool"
    );
    assert_eq!(status.pools["default"].in_flight, 1);
}
