//! Admission rules, each checked on the state machine with fixed instants.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::{Config, load_text as config};

fn dispatcher(config: &Config) -> Dispatcher {
    Dispatcher::new(
        config.daemon.max_concurrency,
        config.daemon.max_queue,
        &config.pools,
        config.daemon.pressure.clone(),
        0,
    )
}

fn request(config: &Config, job: &str, at: i64) -> Request {
    Request {
        job: Arc::clone(config.job(job).unwrap()),
        trigger: Trigger::Schedule,
        attempt: 1,
        scheduled_at: at,
        params: serde_json::json!({}).into(),
        advances_schedule: true,
        notify: None,
    }
}

fn names(admitted: &[Admitted]) -> Vec<String> {
    admitted
        .iter()
        .map(|a| a.request.job.name.clone())
        .collect()
}

fn reasons(skips: &[Skip]) -> Vec<String> {
    skips.iter().map(|s| s.reason.clone()).collect()
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
    let mut d = dispatcher(&config);
    for (job, at) in [("low", 10), ("mid", 20), ("mid", 10), ("high", 30)] {
        assert!(d.submit(request(&config, job, at), 100).is_empty());
    }
    let first = d.admit(100);
    assert_eq!(names(&first), ["high", "mid"]);
    assert_eq!(
        first[1].request.scheduled_at, 10,
        "earlier due time first within a priority"
    );
    assert!(d.admit(100).is_empty(), "the cap of 2 is reached");
    assert_eq!(
        d.status().total,
        Load {
            in_flight: 2,
            queued: 2
        }
    );
    d.finished(first[0].slot);
    let next = d.admit(150);
    assert_eq!(names(&next), ["mid"]);
    assert_eq!(next[0].queue_ms, 50);
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
    let mut d = dispatcher(&config);
    for job in ["s1", "s2", "d"] {
        d.submit(request(&config, job, 0), 0);
    }
    assert_eq!(names(&d.admit(0)), ["s1", "d"]);
    let status = d.status();
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
    let mut d = dispatcher(&config);
    for at in 0..5 {
        d.submit(request(&config, "r", at), 0);
    }
    assert_eq!(d.admit(0).len(), 2, "a bucket of max(1, rate) = 2 tokens");
    assert_eq!(d.next_wake(0), Some(500));
    assert!(d.admit(499).is_empty());
    assert_eq!(d.admit(500).len(), 1);
    assert_eq!(d.admit(1_000).len(), 1);
}

#[test]
fn overlap_skip_names_the_run_still_going() {
    let (_dir, config) = config(&jobs("", &[("j", "")]));
    let mut d = dispatcher(&config);
    d.submit(request(&config, "j", 0), 0);
    assert_eq!(
        reasons(&d.submit(request(&config, "j", 1), 1)),
        ["an earlier fire of `j` is still waiting for a slot (overlap = \"skip\")"]
    );
    let admitted = d.admit(1);
    assert_eq!(
        reasons(&d.submit(request(&config, "j", 2), 2)),
        ["a run of `j` is starting (overlap = \"skip\")"]
    );
    d.started(admitted[0].slot, 41);
    assert_eq!(
        reasons(&d.submit(request(&config, "j", 3), 3)),
        ["run 41 of `j` is still running (overlap = \"skip\")"]
    );
    d.finished(admitted[0].slot);
    assert!(d.submit(request(&config, "j", 4), 4).is_empty());
}

#[test]
fn overlap_queue_holds_one_fire_until_the_run_ends() {
    let (_dir, config) = config(&jobs("", &[("j", "overlap = \"queue\"")]));
    let mut d = dispatcher(&config);
    d.submit(request(&config, "j", 0), 0);
    let first = d.admit(0);
    d.started(first[0].slot, 7);
    assert!(d.submit(request(&config, "j", 10), 10).is_empty());
    assert_eq!(
        reasons(&d.submit(request(&config, "j", 20), 20)),
        [
            "run 7 of `j` is still running, and another fire already waits for it (overlap = \"queue\" holds at most one)"
        ]
    );
    assert!(d.admit(30).is_empty(), "held while the run goes");
    assert_eq!(d.status().total.queued, 1);
    d.finished(first[0].slot);
    let second = d.admit(40);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].request.scheduled_at, 10);
    assert_eq!(second[0].queue_ms, 30);
}

#[test]
fn overlap_queue_counts_a_fire_waiting_for_a_slot_as_the_previous_run() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("busy", ""), ("j", "overlap = \"queue\"")],
    ));
    let mut d = dispatcher(&config);
    d.submit(request(&config, "busy", 0), 0);
    let busy = d.admit(0);
    assert!(d.submit(request(&config, "j", 10), 10).is_empty());
    assert!(d.submit(request(&config, "j", 20), 20).is_empty());
    assert_eq!(
        reasons(&d.submit(request(&config, "j", 30), 30)),
        [
            "an earlier fire of `j` is still waiting for a slot, and another fire already waits for it (overlap = \"queue\" holds at most one)"
        ]
    );
    d.finished(busy[0].slot);
    let first = d.admit(40);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].request.scheduled_at, 10);
    d.finished(first[0].slot);
    let second = d.admit(50);
    assert_eq!(
        second
            .iter()
            .map(|a| a.request.scheduled_at)
            .collect::<Vec<_>>(),
        [20],
        "the held fire starts only after the first one ended"
    );
}

#[test]
fn overlap_replace_cancels_and_starts_after_exit() {
    let (_dir, config) = config(&jobs("", &[("j", "overlap = \"replace\"")]));
    let mut d = dispatcher(&config);
    d.submit(request(&config, "j", 0), 0);
    let mut first = d.admit(0);
    d.started(first[0].slot, 7);
    assert!(d.submit(request(&config, "j", 1_000), 1_000).is_empty());
    assert_eq!(
        first[0].cancel.try_recv().unwrap(),
        "replaced by the schedule fire due at 1970-01-01T00:00:01.000Z (overlap = \"replace\")"
    );
    assert!(
        d.admit(1_000).is_empty(),
        "the successor waits for the old run's exit"
    );
    d.finished(first[0].slot);
    assert_eq!(d.admit(1_100)[0].request.scheduled_at, 1_000);
}

#[test]
fn overlap_allow_runs_side_by_side() {
    let (_dir, config) = config(&jobs("", &[("j", "overlap = \"allow\"")]));
    let mut d = dispatcher(&config);
    for at in 0..3 {
        assert!(d.submit(request(&config, "j", at), at).is_empty());
    }
    assert_eq!(d.admit(3).len(), 3);
}

#[test]
fn a_full_queue_declines_with_a_reason() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1\nmax_queue = 2",
        &[("j", "overlap = \"allow\"")],
    ));
    let mut d = dispatcher(&config);
    assert!(d.submit(request(&config, "j", 0), 0).is_empty());
    assert_eq!(d.admit(0).len(), 1);
    for at in 1..3 {
        assert!(d.submit(request(&config, "j", at), 0).is_empty());
    }
    assert_eq!(
        reasons(&d.submit(request(&config, "j", 3), 0)),
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
    let mut d = dispatcher(&config);
    d.submit(request(&config, "j", 0), 0);
    assert!(d.admit(0).is_empty());
    assert_eq!(
        d.status().waiting_on.as_deref(),
        Some("cpu pressure is 95.00% (some avg10), above max_cpu_pressure = 50")
    );
    assert_eq!(d.next_wake(0), Some(RECHECK_MS));
    std::fs::write(
        psi.join("cpu"),
        "some avg10=5.00 avg60=0 avg300=0 total=0\n",
    )
    .unwrap();
    assert_eq!(d.admit(RECHECK_MS).len(), 1);
    assert_eq!(d.status().waiting_on, None);
}

#[test]
fn cancel_and_drain_leave_nothing_unaccounted() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("j", "overlap = \"allow\"")],
    ));
    let mut d = dispatcher(&config);
    for at in 0..3 {
        d.submit(request(&config, "j", at), 0);
    }
    let mut running = d.admit(0);
    d.started(running[0].slot, 9);
    assert!(d.cancel(9, "cancelled by pacer cancel"));
    assert!(!d.cancel(10, "no such run"));
    assert_eq!(
        running[0].cancel.try_recv().unwrap(),
        "cancelled by pacer cancel"
    );
    assert_eq!(d.drain().len(), 2);
    assert_eq!(d.queued(), 0);
    d.finished(running[0].slot);
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn reconfigure_keeps_runs_and_applies_new_caps() {
    let (_dir, config) = config(&jobs(
        "max_concurrency = 1",
        &[("j", "overlap = \"allow\"")],
    ));
    let mut d = dispatcher(&config);
    for at in 0..3 {
        d.submit(request(&config, "j", at), 0);
    }
    assert_eq!(d.admit(0).len(), 1);
    let mut pools = BTreeMap::new();
    pools.insert("default".to_owned(), config.pools["default"].clone());
    d.reconfigure(3, 10, &config.pools, config.daemon.pressure.clone(), 0);
    assert_eq!(d.admit(0).len(), 2);
    assert_eq!(d.in_flight(), 3);
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
    let mut d = dispatcher(&config);
    for job in ["a", "b", "r1", "r2", "r3"] {
        d.submit(request(&config, job, 0), 0);
    }
    assert_eq!(names(&d.admit(0)), ["a", "r1", "r2"]);
    assert_eq!(
        d.waiting("b")[0].2,
        "waiting for a slot in pool `slow` (1 runs in flight of its max_concurrency = 1)"
    );
    assert_eq!(
        d.waiting("r3")[0].2,
        "waiting for its turn: pool `rated` starts at most 2 runs per second (max_starts_per_second)"
    );
}

#[test]
fn a_full_queue_keeps_the_fires_of_highest_priority() {
    let settings: Vec<String> = (1..=5).map(|p| format!("priority = {p}")).collect();
    let queued = ["q1", "q2", "q3", "q4", "q5"];
    let mut specs = vec![("busy", "")];
    specs.extend(queued.iter().zip(&settings).map(|(n, s)| (*n, s.as_str())));
    let (_dir, config) = config(&jobs("max_concurrency = 1\nmax_queue = 2", &specs));
    let mut d = dispatcher(&config);
    d.submit(request(&config, "busy", 0), 0);
    let busy = d.admit(0);
    let mut declined = Vec::new();
    for job in queued {
        declined.extend(d.submit(request(&config, job, 1_000), 1_000));
    }
    let declined_jobs: Vec<&str> = declined
        .iter()
        .map(|skip| skip.request.job.name.as_str())
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
    d.finished(busy[0].slot);
    assert_eq!(names(&d.admit(2_000)), ["q5"]);
}
