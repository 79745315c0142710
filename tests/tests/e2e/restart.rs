//! A restart neither repeats nor silently drops a fire, and a run that started is never lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pacer_tests::{Sandbox, require_root, text, wait_for, wait_until};

const EVERY_SECOND: &str = r#"
[[jobs]]
name = "tick"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }
"#;

fn scheduled(runs: &[serde_json::Value]) -> Vec<String> {
    runs.iter()
        .map(|r| text(r, "scheduled_at").to_owned())
        .collect()
}

#[test]
fn fires_missed_while_down_are_recorded_once_each() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", EVERY_SECOND);
    let mut daemon = sandbox.start();
    wait_until("two runs", || {
        (sandbox.history(&[]).len() >= 2).then_some(())
    });
    assert_eq!(daemon.stop(), Some(0));
    let stopped = Instant::now();
    wait_for("three seconds of downtime", || {
        stopped.elapsed() >= Duration::from_secs(3)
    });
    let _daemon = sandbox.start();
    let runs = wait_until("catch-up records and a fresh run", || {
        let runs = sandbox.history(&["--limit", "1000"]);
        let caught_up = runs.iter().any(|r| r["trigger"] == "catch_up");
        let fresh = runs.first().is_some_and(|r| r["trigger"] == "schedule");
        (caught_up && fresh).then_some(runs)
    });
    let times = scheduled(&runs);
    let unique: BTreeSet<&String> = times.iter().collect();
    assert_eq!(unique.len(), times.len(), "no fire is repeated: {times:?}");
    let seconds: Vec<i64> = unique
        .iter()
        .map(|t| t.parse::<jiff::Timestamp>().unwrap().as_second())
        .collect();
    assert!(
        seconds.windows(2).all(|w| w[1] - w[0] == 1),
        "no fire is dropped: every second has a record: {times:?}"
    );
    let missed: Vec<&serde_json::Value> =
        runs.iter().filter(|r| r["trigger"] == "catch_up").collect();
    assert!(missed.len() >= 2, "{runs:?}");
    for run in missed {
        assert_eq!(run["status"], "skipped");
        assert_eq!(
            run["error"],
            "missed while pacerd was not running (catch_up = \"skip\")"
        );
    }
}

#[test]
fn a_daemon_killed_mid_run_leaves_an_abandoned_record_and_no_process() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "stuck"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "sleep 1000 & echo grandchild $!; wait" }

[[jobs]]
name = "ticker"
schedule = "* * * * * *"
plugin = "exec"
catch_up = "once"
params = { command = "true" }
"#,
    );
    let mut daemon = sandbox.start();
    let run = sandbox.wait_for_run("a running run", &["--job", "stuck", "--status", "running"]);
    let id = run["id"].as_i64().unwrap();
    let processes_of_run = || {
        let marker = format!("PACER_RUN_ID={id}");
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
            })
            .count()
    };
    // The record says `running` before the plugin has started its command: wait for the shell
    // and its sleep, so that the kill lands while they go.
    wait_for("the run's shell and its sleep", || processes_of_run() >= 2);
    daemon.signal("KILL");
    daemon.wait();
    let killed = Instant::now();
    assert!(
        processes_of_run() > 0,
        "the run's shell and sleep outlive the killed daemon"
    );
    wait_for("three seconds of downtime", || {
        killed.elapsed() >= Duration::from_secs(3)
    });

    let restarted_at = jiff::Timestamp::now();
    let daemon = sandbox.start();
    let abandoned = sandbox.pacer_json(&["show", &id.to_string()]);
    assert_eq!(abandoned["status"], "abandoned");
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|line| line.contains(" ERROR ") && line.contains("recorded as abandoned")),
        "an abandoned run is logged as an error: {log}"
    );
    assert_eq!(
        abandoned["error"],
        "pacerd stopped while this run was going (found at the next start; it ended at \
         pacerd's last sign of life)"
    );
    let ended: jiff::Timestamp = abandoned["finished_at"].as_str().unwrap().parse().unwrap();
    assert!(
        ended < restarted_at - jiff::SignedDuration::from_millis(1_500),
        "an abandoned run ends at the killed daemon's last sign of life ({ended}), not at the \
         next start ({restarted_at})"
    );
    wait_for("the abandoned run's processes to be killed", || {
        processes_of_run() == 0
    });
    let caught_up = wait_until("the ticker's catch-up", || {
        let runs = sandbox.history(&["--job", "ticker", "--limit", "1000"]);
        runs.iter()
            .any(|r| r["trigger"] == "catch_up" && r["status"] == "succeeded")
            .then_some(runs)
    });
    let missed: Vec<&serde_json::Value> = caught_up
        .iter()
        .filter(|r| r["trigger"] == "catch_up")
        .collect();
    assert!(missed.len() >= 2, "{missed:?}");
    assert_eq!(
        missed.iter().filter(|r| r["status"] != "skipped").count(),
        1,
        "catch_up = \"once\" after a kill -9 runs one missed fire: {missed:?}"
    );
}

#[test]
fn a_second_daemon_on_the_same_database_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "long"
schedule = "* * * * * *"
plugin = "testkit"
params = { action = "sleep", ms = 60000 }
"#,
    );
    let first = sandbox.start();
    let run = sandbox.wait_for_run("a running run", &["--status", "running"]);
    let mut second = sandbox.spawn_daemon();
    assert_eq!(second.wait(), Some(1));
    let log = second.log();
    assert!(
        log.contains("another pacerd is using the database")
            && log.contains(&format!("pid {}", first.pid())),
        "{log}"
    );
    let still = sandbox.pacer_json(&["show", &run["id"].to_string()]);
    assert_eq!(
        still["status"], "running",
        "the first daemon's run is untouched"
    );
    assert_eq!(sandbox.pacer(["status"]).code, 0);
}

#[test]
fn a_reboot_job_runs_once_per_boot_not_once_per_start() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        &format!(
            "{EVERY_SECOND}\n[[jobs]]\nname = \"boot\"\nschedule = \"@reboot\"\nplugin = \"exec\"\nparams = {{ command = \"true\" }}\n"
        ),
    );
    let boot_runs = || sandbox.history(&["--job", "boot"]);
    let mut daemon = sandbox.start();
    wait_until("the @reboot run", || {
        boot_runs().into_iter().find(|r| r["status"] == "succeeded")
    });
    assert_eq!(daemon.stop(), Some(0));
    let last_before = sandbox.history(&["--limit", "1"])[0]["id"]
        .as_i64()
        .unwrap();

    let _daemon = sandbox.start();
    wait_until("two ticks after the restart", || {
        let ticks = sandbox.history(&["--job", "tick", "--status", "succeeded"]);
        let after = ticks
            .iter()
            .filter(|r| r["id"].as_i64().unwrap() > last_before)
            .count();
        (after >= 2).then_some(())
    });
    let runs = boot_runs();
    assert_eq!(
        runs.len(),
        1,
        "not again on a restart in the same boot: {runs:?}"
    );
    assert!(
        std::fs::read_to_string(sandbox.path().join("pacer-reboot"))
            .unwrap()
            .lines()
            .any(|line| line == "boot"),
        "the marker in the runtime directory names the job"
    );
}

/// The worker processes of `parent` running as `uid`.
fn workers_of(parent: u32, uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|value| value.parse::<u32>().ok())
            };
            (field("PPid:") == Some(parent) && field("Uid:") == Some(uid)).then_some(pid)
        })
        .collect()
}

#[test]
fn a_run_switched_to_another_user_dies_with_the_daemon() {
    if !require_root("to switch users") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"as-daemon\"\nschedule = \"* * * * * *\"\nplugin = \"testkit\"\nuser = \"daemon\"\nparams = { action = \"sleep\", ms = 600000 }\n",
    );
    let mut daemon = sandbox.start();
    sandbox.wait_for_run("a running run", &["--status", "running"]);
    let daemon_uid = uid_of("daemon");
    let worker = wait_until("its worker, as user daemon", || {
        workers_of(daemon.pid(), daemon_uid).into_iter().next()
    });
    daemon.signal("KILL");
    daemon.wait();
    // The kernel clears the parent-death signal when a process changes its user; the worker
    // sets it again, or it would outlive the daemon.
    wait_for("the worker to die with the daemon", || {
        std::fs::read_to_string(format!("/proc/{worker}/status"))
            .map_or(true, |status| status.contains("State:\tZ"))
    });
}

/// The uid of `name`, from the password database.
fn uid_of(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name)).then(|| fields.nth(1).unwrap().parse().unwrap())
        })
        .unwrap()
}
