//! A schedule line fires a run in a worker process, the run lands in SQLite, and the CLI reads
//! it back in the contract's fields.

use pacer_tests::{Sandbox, is_contract_instant, text, wait_until};
use serde_json::Value;

const ECHO_EVERY_SECOND: &str = r#"
[[jobs]]
name = "echo"
schedule = "* * * * * *"
plugin = "exec"
[jobs.params]
command = "echo hello from $PACER_JOB run $PACER_RUN_ID attempt $PACER_ATTEMPT trigger $PACER_TRIGGER at $PACER_SCHEDULED_AT; pwd; echo notify=${NOTIFY_SOCKET:-unset}"
"#;

fn finished(runs: &[Value], job: &str, status: &str) -> Vec<Value> {
    runs.iter()
        .filter(|r| r["job"] == job && r["status"] == status)
        .cloned()
        .collect()
}

#[test]
fn a_scheduled_run_is_recorded_and_read_back() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", ECHO_EVERY_SECOND);
    let _daemon = sandbox.start();
    let runs = wait_until("two succeeded runs", || {
        let done = finished(&sandbox.history(&[]), "echo", "succeeded");
        (done.len() >= 2).then_some(done)
    });
    let run = &runs[0];
    assert_eq!(run["plugin"], "exec");
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["error"], Value::Null);
    for key in ["scheduled_at", "started_at", "finished_at"] {
        assert!(is_contract_instant(text(run, key)), "{key} in {run}");
    }
    assert!(
        text(run, "scheduled_at").ends_with(".000Z"),
        "no jitter: on the second"
    );
    assert!(text(run, "started_at") >= text(run, "scheduled_at"));
    let started: jiff::Timestamp = text(run, "started_at").parse().unwrap();
    let finished_at: jiff::Timestamp = text(run, "finished_at").parse().unwrap();
    assert_eq!(
        run["duration_ms"].as_i64().unwrap(),
        finished_at.as_millisecond() - started.as_millisecond()
    );
    assert!(run["queue_ms"].as_i64().unwrap() >= 0);
    assert!(
        runs[0]["id"].as_i64() > runs[1]["id"].as_i64(),
        "newest first"
    );

    let id = run["id"].as_i64().unwrap().to_string();
    let detail = sandbox.pacer_json(&["show", &id]);
    let output = text(&detail, "output");
    assert!(
        output.contains(&format!(
            "hello from echo run {id} attempt 1 trigger schedule at {}",
            text(run, "scheduled_at")
        )),
        "{output}"
    );
    let cwd = sandbox.path().canonicalize().unwrap();
    assert!(
        output.contains(&format!("\n{}\n", cwd.display())),
        "a run starts in its config's directory: {output}"
    );
    assert!(output.contains("notify=unset"), "{output}");
    assert!(text(&detail["params"], "command").starts_with("echo hello from $PACER_JOB"));
}

#[test]
fn a_drop_in_job_runs_in_the_drop_in_directory() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", "");
    sandbox.write(
        "jobs.d/here.toml",
        "[[jobs]]\nname = \"here\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"pwd\" }\n",
    );
    let _daemon = sandbox.start();
    let run = wait_until("a run of the drop-in job", || {
        finished(&sandbox.history(&[]), "here", "succeeded")
            .into_iter()
            .next()
    });
    let id = run["id"].as_i64().unwrap().to_string();
    let detail = sandbox.pacer_json(&["show", &id]);
    let drop_ins = sandbox.path().canonicalize().unwrap().join("jobs.d");
    assert_eq!(
        text(&detail, "output").lines().last(),
        Some(drop_ins.display().to_string().as_str()),
        "the directory of the file that defines the job"
    );
}

#[test]
fn failures_and_crashes_carry_their_reason() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "exit3"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "echo failing; exit 3" }

[[jobs]]
name = "panics"
schedule = "* * * * * *"
plugin = "testkit"
params = { action = "panic", message = "kaboom" }

[[jobs]]
name = "segfaults"
schedule = "* * * * * *"
plugin = "testkit"
params = { action = "segfault" }

[[jobs]]
name = "aborts"
schedule = "* * * * * *"
plugin = "testkit"
params = { action = "abort" }

[[jobs]]
name = "sleeps"
schedule = "* * * * * *"
plugin = "testkit"
timeout = "1s"
params = { action = "hang" }
"#,
    );
    let _daemon = sandbox.start();
    let expect = [
        ("exit3", "failed", "command exited with code 3"),
        ("panics", "failed", "panicked: kaboom"),
        (
            "segfaults",
            "crashed",
            "the run's process was killed by signal 11 (SIGSEGV)",
        ),
        (
            "aborts",
            "crashed",
            "the run's process was killed by signal 6 (SIGABRT)",
        ),
        ("sleeps", "timed_out", "timed out after 1s"),
    ];
    for (job, status, error) in expect {
        let run = wait_until(&format!("a {status} run of {job}"), || {
            finished(&sandbox.history(&["--job", job]), job, status)
                .into_iter()
                .next()
        });
        assert_eq!(run["error"], error, "{run}");
    }
}

#[test]
fn a_missing_plugin_records_skipped_fires_and_check_fails() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"later\"\nschedule = \"* * * * * *\"\nplugin = \"not-yet\"\n",
    );
    let _daemon = sandbox.start();
    let run = sandbox.wait_for_run("a skipped fire", &[]);
    assert_eq!(run["status"], "skipped");
    assert_eq!(run["started_at"], Value::Null);
    assert_eq!(run["finished_at"], Value::Null);
    let error = text(&run, "error");
    assert!(
        error.starts_with("plugin `not-yet` is not installed: no library in plugin_dirs ("),
        "{error}"
    );
    let jobs = sandbox.pacer_json(&["jobs"]);
    assert_eq!(jobs[0]["last_status"], "skipped");
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    assert!(
        text(&check.json()[0], "error")
            .starts_with("pacer.toml:9:10: plugin `not-yet` is not installed"),
        "{check}"
    );
}

#[test]
fn output_is_capped_to_its_tail() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "output_limit = \"4K\"",
        r#"
[[jobs]]
name = "flood"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "seq 1 20000; echo the-last-line" }
"#,
    );
    let _daemon = sandbox.start();
    let run = wait_until("a finished flood", || {
        finished(&sandbox.history(&[]), "flood", "succeeded")
            .into_iter()
            .next()
    });
    let detail = sandbox.pacer_json(&["show", &run["id"].to_string()]);
    let output = text(&detail, "output");
    assert_eq!(output.len(), 4096);
    assert!(output.ends_with("20000\nthe-last-line\n"), "{output}");
    assert!(detail["output_dropped"].as_u64().unwrap() > 100_000);
}

#[test]
fn history_filters_and_pages() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "ok"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "bad"
schedule = "* * * * * *"
plugin = "exec"
params = { argv = ["false"] }
"#,
    );
    let daemon = sandbox.start();
    wait_until("three runs of each", || {
        let runs = sandbox.history(&["--limit", "1000"]);
        let done = |job, status| finished(&runs, job, status).len() >= 3;
        (done("ok", "succeeded") && done("bad", "failed")).then_some(())
    });
    drop(daemon);
    let all = sandbox.history(&["--limit", "1000"]);
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first by id: {ids:?}"
    );

    let bad = sandbox.history(&["--job", "bad"]);
    assert!(!bad.is_empty() && bad.iter().all(|r| r["job"] == "bad"));
    let failed = sandbox.history(&["--status", "failed"]);
    assert!(
        failed
            .iter()
            .all(|r| r["status"] == "failed" && r["error"] == "command exited with code 1")
    );
    assert_eq!(
        failed.len(),
        bad.iter().filter(|r| r["status"] == "failed").count()
    );

    let page = sandbox.history(&["--limit", "2"]);
    assert_eq!(page.len(), 2);
    let next = sandbox.history(&["--limit", "2", "--before", &page[1]["id"].to_string()]);
    assert_eq!(next[0]["id"], all[2]["id"]);

    let newest = text(&all[0], "scheduled_at").to_owned();
    let since = sandbox.history(&["--since", &newest, "--limit", "1000"]);
    assert!(
        since
            .iter()
            .all(|r| text(r, "scheduled_at") >= newest.as_str())
    );
    let until = sandbox.history(&["--until", &newest, "--limit", "1000"]);
    assert_eq!(since.len() + until.len(), all.len());
    assert_eq!(
        sandbox.history(&["--since", "1h", "--limit", "1000"]).len(),
        all.len()
    );

    let stats = sandbox.pacer_json(&["stats", "--job", "bad"]);
    assert_eq!(stats[0]["job"], "bad");
    assert_eq!(stats[0]["succeeded"], 0);
    assert_eq!(stats[0]["success_rate"], 0.0);
    for key in [
        "runs",
        "failed",
        "p50_ms",
        "p95_ms",
        "max_ms",
        "mean_queue_ms",
        "p50_late_ms",
        "p95_late_ms",
        "max_late_ms",
    ] {
        assert!(stats[0][key].is_number(), "{key} in {}", stats[0]);
    }
}
