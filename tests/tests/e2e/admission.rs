//! Admission through recorded runs: caps, pools, rates, priority, overlap, queue bound, jitter and
//! pressure, each checked on what the history says happened.

use std::time::{Duration, Instant};

use pacer_tests::{Sandbox, text, wait_for, wait_until};
use serde_json::Value;

fn ms(run: &Value, key: &str) -> i64 {
    text(run, key)
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

/// The most runs in flight at once, from their start and finish times.
fn peak(runs: &[&Value]) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for run in runs {
        events.push((ms(run, "started_at"), 1));
        events.push((ms(run, "finished_at"), -1));
    }
    // A finish and a start at the same millisecond: the finish released its slot first.
    events.sort_by_key(|(at, delta)| (*at, *delta));
    let mut current = 0;
    let mut most = 0;
    for (_, delta) in events {
        current += delta;
        most = most.max(current);
    }
    usize::try_from(most).unwrap()
}

fn ended(runs: &[Value]) -> Vec<&Value> {
    runs.iter()
        .filter(|r| r["started_at"].is_string() && r["finished_at"].is_string())
        .collect()
}

fn sleeper(name: &str, schedule: &str, ms: u64, settings: &str) -> String {
    format!(
        "\n[[jobs]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nplugin = \"testkit\"\n{settings}\nparams = {{ action = \"sleep\", ms = {ms} }}\n"
    )
}

#[test]
fn caps_hold_globally_and_per_pool() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    for i in 0..8 {
        jobs += &sleeper(&format!("wide-{i}"), "* * * * * *", 400, "");
    }
    for i in 0..4 {
        jobs += &sleeper(
            &format!("narrow-{i}"),
            "* * * * * *",
            200,
            "pool = \"narrow\"",
        );
    }
    sandbox.write_config(
        "max_concurrency = 3\n\n[pools.narrow]\nmax_concurrency = 1\n",
        &jobs,
    );
    let _daemon = sandbox.start();
    let runs = wait_until("40 ended runs", || {
        let runs = sandbox.history(&["--limit", "1000"]);
        (ended(&runs).len() >= 40).then_some(runs)
    });
    let all = ended(&runs);
    assert_eq!(
        peak(&all),
        3,
        "the global cap is reached and never exceeded"
    );
    let narrow: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|r| text(r, "job").starts_with("narrow"))
        .collect();
    assert_eq!(peak(&narrow), 1, "the pool's cap holds");
    assert!(
        all.iter().any(|r| r["queue_ms"].as_i64().unwrap() > 100),
        "runs waited for slots"
    );
    let status = sandbox.pacer_json(&["status"]);
    assert!(status["pools"]["narrow"]["in_flight"].as_u64().unwrap() <= 1);
    assert!(status["pools"]["default"]["queued"].is_u64());
    assert!(status["in_flight"].as_u64().unwrap() <= 3);
}

/// What a start rate promises, seen from the history: a bucket holds at most `max(1, rate)`
/// tokens when a fire is due, so with 2 starts per second the k-th start (from 0) of the runs of
/// one fire comes no earlier than `(k - 1) * 500` ms after the fire's instant. A rate can only
/// delay a start, and `started_at` is taken after the spawn, so load moves the recorded starts
/// later, never earlier: the bound holds on a loaded machine. (The exact spacing of admissions
/// is checked at fixed instants in the dispatch unit tests.)
#[test]
fn a_start_rate_spaces_starts() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    for i in 0..6 {
        jobs += &sleeper(
            &format!("rated-{i}"),
            "*/5 * * * * *",
            10,
            "pool = \"rated\"",
        );
    }
    sandbox.write_config("\n[pools.rated]\nmax_starts_per_second = 2\n", &jobs);
    let _daemon = sandbox.start();
    let (fire, mut starts) = wait_until("the six runs of the first fire, ended", || {
        let runs = sandbox.history(&["--limit", "100"]);
        let fire = runs.iter().map(|r| ms(r, "scheduled_at")).min()?;
        let starts: Vec<i64> = ended(&runs)
            .into_iter()
            .filter(|r| ms(r, "scheduled_at") == fire)
            .map(|r| ms(r, "started_at"))
            .collect();
        (starts.len() == 6).then_some((fire, starts))
    });
    starts.sort_unstable();
    for (k, start) in (0_i64..).zip(&starts) {
        let earliest = fire + (k - 1).max(0) * 500;
        assert!(
            *start >= earliest,
            "start {k} came {} ms after the fire, before the rate allows ({} ms); starts after the fire: {:?}",
            start - fire,
            earliest - fire,
            starts.iter().map(|s| s - fire).collect::<Vec<_>>()
        );
    }
}

#[test]
fn priority_decides_among_fires_due_together() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    for (name, priority) in [("low", -5), ("high", 10), ("mid", 0), ("higher", 20)] {
        jobs += &sleeper(
            name,
            "*/10 * * * * *",
            300,
            &format!("priority = {priority}"),
        );
    }
    sandbox.write_config("max_concurrency = 1", &jobs);
    let _daemon = sandbox.start();
    let runs = wait_until("one fire of each", || {
        let runs = sandbox.history(&["--limit", "100"]);
        (ended(&runs).len() >= 4).then_some(runs)
    });
    let mut first: Vec<&Value> = ended(&runs);
    first.sort_by_key(|r| ms(r, "started_at"));
    let order: Vec<&str> = first[..4].iter().map(|r| text(r, "job")).collect();
    assert_eq!(order, ["higher", "high", "mid", "low"]);
    assert!(
        first[..4]
            .windows(2)
            .all(|w| w[0]["scheduled_at"] == w[1]["scheduled_at"])
    );
}

#[test]
fn overlap_policies_through_the_history() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    jobs += &sleeper("skips", "* * * * * *", 2_500, "");
    jobs += &sleeper("queues", "* * * * * *", 1_500, "overlap = \"queue\"");
    jobs += &sleeper("replaces", "*/2 * * * * *", 60_000, "overlap = \"replace\"");
    jobs += &sleeper("allows", "* * * * * *", 2_500, "overlap = \"allow\"");
    sandbox.write_config("max_concurrency = 20", &jobs);
    let _daemon = sandbox.start();
    let wait_history = |job: &str, what: &str, holds: &dyn Fn(&[Value]) -> bool| {
        wait_until(what, || {
            let runs = sandbox.history(&["--job", job, "--limit", "100"]);
            holds(&runs).then_some(runs)
        })
    };

    let skips = wait_history("skips", "a skipped fire of `skips`", &|runs| {
        runs.iter().any(|r| r["status"] == "skipped")
    });
    let skipped = skips.iter().find(|r| r["status"] == "skipped").unwrap();
    let reason = text(skipped, "error");
    let named: i64 = reason
        .strip_prefix("run ")
        .and_then(|rest| rest.strip_suffix(" of `skips` is still running (overlap = \"skip\")"))
        .unwrap_or_else(|| panic!("{reason}"))
        .parse()
        .unwrap();
    let named_run = skips.iter().find(|r| r["id"] == named).unwrap();
    assert!(
        ms(named_run, "started_at") <= ms(skipped, "scheduled_at"),
        "the skip names the run that was going: {named_run}"
    );

    let queues = wait_history("queues", "three ended runs of `queues`", &|runs| {
        runs.iter().filter(|r| r["status"] == "succeeded").count() >= 3
    });
    let done = ended(&queues);
    assert_eq!(peak(&done), 1, "a queued fire waits for the previous run");
    assert!(
        done.iter().any(|r| r["queue_ms"].as_i64().unwrap() >= 400),
        "{done:?}"
    );
    let mut by_start = done.clone();
    by_start.sort_by_key(|r| ms(r, "started_at"));
    for pair in by_start.windows(2) {
        assert!(ms(pair[1], "started_at") >= ms(pair[0], "finished_at"));
    }
    let extra = queues
        .iter()
        .find(|r| r["status"] == "skipped")
        .expect("a second waiting fire is skipped");
    assert!(
        text(extra, "error").ends_with(
            "and another fire already waits for it (overlap = \"queue\" holds at most one)"
        ),
        "{extra}"
    );

    let replaces = wait_history("replaces", "a replaced run and its successor", &|runs| {
        runs.iter().any(|r| r["status"] == "cancelled")
            && runs.iter().filter(|r| r["started_at"].is_string()).count() >= 2
    });
    let cancelled = replaces
        .iter()
        .find(|r| r["status"] == "cancelled")
        .unwrap();
    let successor = replaces
        .iter()
        .rfind(|r| r["started_at"].is_string() && r["id"].as_i64() > cancelled["id"].as_i64())
        .unwrap();
    assert_eq!(
        cancelled["error"],
        format!(
            "replaced by the schedule fire due at {} (overlap = \"replace\")",
            text(successor, "scheduled_at")
        )
    );
    assert!(
        ms(successor, "started_at") >= ms(cancelled, "finished_at"),
        "the successor starts once the old run's processes are gone"
    );

    let allows = wait_history("allows", "runs of `allows` side by side", &|runs| {
        peak(&ended(runs)) >= 2
    });
    assert!(allows.iter().all(|r| r["status"] != "skipped"));
}

#[test]
fn a_full_queue_records_the_overflow() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    for i in 0..3 {
        jobs += &sleeper(
            &format!("j{i}"),
            "* * * * * *",
            1_500,
            "overlap = \"allow\"",
        );
    }
    sandbox.write_config("max_concurrency = 1\nmax_queue = 1", &jobs);
    let _daemon = sandbox.start();
    let overflow = wait_until("a fire beyond max_queue", || {
        sandbox
            .history(&["--status", "skipped", "--limit", "100"])
            .into_iter()
            .find(|r| text(r, "error").starts_with("the queue is full"))
    });
    assert_eq!(
        overflow["error"],
        "the queue is full: 1 fires wait for a slot (max_queue = 1)"
    );
}

#[test]
fn jitter_is_a_stable_per_job_offset() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"spread\"\nschedule = \"*/5 * * * * *\"\njitter = \"4s\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let check = |from: &str| {
        sandbox.pacer_json(&["check", "--next", "3", "--from", from])[0]["next"].clone()
    };
    let first = check("2027-01-01T00:00:00Z");
    assert_eq!(
        first,
        check("2027-01-01T00:00:00Z"),
        "the same on every call"
    );
    let fires: Vec<i64> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t.as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        })
        .collect();
    let offset = fires[0] - 1_798_761_600_000;
    assert!((0..4_000).contains(&offset), "{offset}");
    assert_eq!(fires[1] - fires[0], 5_000);
    assert_eq!(fires[2] - fires[1], 5_000);
    let shown = match (offset / 1_000, offset % 1_000) {
        (0, 0) => "+0s".to_owned(),
        (0, ms) => format!("+{ms}ms"),
        (s, 0) => format!("+{s}s"),
        (s, ms) => format!("+{s}s{ms}ms"),
    };
    let table = sandbox.pacer(["check", "--from", "2027-01-01T00:00:00Z"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("spread") && l.contains(&shown)),
        "`pacer check` shows the offset {shown}:\n{}",
        table.stdout
    );

    let _daemon = sandbox.start();
    let run = sandbox.wait_for_run("a run", &["--status", "succeeded"]);
    assert_eq!(
        ms(&run, "scheduled_at").rem_euclid(5_000),
        offset,
        "the daemon fires at the offset `pacer check` shows"
    );
    let jobs = sandbox.pacer_json(&["jobs"]);
    let next = text(&jobs[0], "next_fire")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    assert_eq!(next.rem_euclid(5_000), offset);
    assert_eq!(jobs[0]["jitter_offset_ms"], offset);
    let table = sandbox.pacer(["jobs"]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("spread") && l.contains(&shown)),
        "`pacer jobs` shows the offset {shown}:\n{}",
        table.stdout
    );
}

#[test]
fn new_starts_wait_while_pressure_is_high() {
    let sandbox = Sandbox::new();
    let psi = sandbox.path().join("psi");
    std::fs::create_dir(&psi).unwrap();
    let write_cpu = |avg10: f64| {
        std::fs::write(
            psi.join("cpu"),
            format!("some avg10={avg10:.2} avg60=0.00 avg300=0.00 total=0\n"),
        )
        .unwrap();
    };
    write_cpu(90.0);
    sandbox.write_config(
        "max_cpu_pressure = 50\npressure_dir = \"psi\"",
        "[[jobs]]\nname = \"gated\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let _daemon = sandbox.start();
    let status = wait_until("the queue to wait on pressure", || {
        let status = sandbox.pacer_json(&["status"]);
        status["waiting_on"].is_string().then_some(status)
    });
    assert_eq!(
        status["waiting_on"],
        "cpu pressure is 90.00% (some avg10), above max_cpu_pressure = 50"
    );
    let held_since = Instant::now();
    wait_for("two seconds of high pressure", || {
        held_since.elapsed() > Duration::from_secs(2)
    });
    assert!(
        sandbox.history(&["--status", "succeeded"]).is_empty(),
        "nothing starts while pressure is above the threshold"
    );
    let skipped = sandbox.history(&["--status", "skipped"]);
    assert!(
        skipped.iter().all(|r| text(r, "error")
            == "an earlier fire of `gated` is still waiting for a slot (overlap = \"skip\")"),
        "{skipped:?}"
    );
    write_cpu(10.0);
    let run = wait_until("a run once pressure drops", || {
        sandbox
            .history(&["--status", "succeeded"])
            .into_iter()
            .last()
    });
    assert!(
        run["queue_ms"].as_i64().unwrap() >= 2_000,
        "the wait shows in queue_ms: {run}"
    );
    let status = sandbox.pacer_json(&["status"]);
    assert_eq!(status["waiting_on"], Value::Null);
}
