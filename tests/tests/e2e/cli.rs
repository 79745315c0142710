//! The CLI as a user meets it without a daemon, and with bad arguments.

use pacer_tests::{CommandOutput, Sandbox, artifacts};

#[test]
fn without_a_daemon_each_verb_says_so_or_falls_back() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"nightly\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let status = sandbox.pacer(["status"]);
    assert_eq!(status.code, 1, "{status}");
    assert_eq!(status.stdout, "pacerd is not running\n");
    let status = sandbox.pacer(["status", "--json"]);
    assert_eq!(status.code, 1);
    assert_eq!(status.json()["running"], false);

    let history = sandbox.pacer(["history"]);
    assert_eq!(
        history.code, 0,
        "before the first start, no runs: {history}"
    );
    assert_eq!(history.stdout, "no runs match\n");
    assert_eq!(sandbox.pacer_json(&["history"]), serde_json::json!([]));
    assert_eq!(sandbox.pacer_json(&["stats"]), serde_json::json!([]));
    let show = sandbox.pacer(["show", "1"]);
    assert_eq!(show.code, 1, "{show}");
    assert_eq!(
        show.stderr.lines().count(),
        1,
        "one line, not a trace: {show}"
    );
    assert!(show.stderr.contains("no run history at "), "{show}");

    let jobs = sandbox.pacer_json(&["jobs"]);
    assert_eq!(jobs[0]["name"], "nightly");
    assert_eq!(jobs[0]["schedule"], "30 2 * * *");
    assert_eq!(jobs[0]["timezone"], "Europe/Berlin");
    assert_eq!(jobs[0]["enabled"], true);
    assert_eq!(jobs[0]["paused"], false);
    assert_eq!(jobs[0]["last_status"], serde_json::Value::Null);
    let next = jobs[0]["next_fire"].as_str().unwrap();
    assert!(next.ends_with(":30:00.000Z"), "{next}");

    let plugins = sandbox.pacer_json(&["plugins"]);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exec", "testkit"]);

    let check = sandbox.pacer([
        "check",
        "--json",
        "--next",
        "3",
        "--from",
        "2027-03-27T00:00:00Z",
    ]);
    assert_eq!(check.code, 0, "{check}");
    assert_eq!(
        check.json(),
        serde_json::json!([{
            "job": "nightly",
            "next": [
                "2027-03-27T01:30:00.000Z",
                "2027-03-28T01:00:00.000Z",
                "2027-03-29T00:30:00.000Z"
            ],
            "error": null
        }])
    );
}

#[test]
fn history_works_while_the_daemon_is_down() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let mut daemon = sandbox.start();
    sandbox.wait_for_run("a run", &["--status", "succeeded"]);
    assert_eq!(daemon.stop(), Some(0));
    let runs = sandbox.history(&[]);
    assert!(!runs.is_empty());
    assert!(
        !sandbox.path().join("pacer.db-wal").exists()
            || std::fs::metadata(sandbox.path().join("pacer.db-wal"))
                .unwrap()
                .len()
                == 0
    );
    let shown = sandbox.pacer_json(&["show", &runs[0]["id"].to_string()]);
    assert_eq!(shown["id"], runs[0]["id"]);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", "");
    for args in [
        vec!["no-such-verb"],
        vec!["history", "--limit", "many"],
        vec!["history", "--status", "exploded"],
        vec!["history", "--until", "2026-11-26"],
        vec!["stats", "--since", "xyz"],
        vec!["check", "--from", "tomorrow"],
        vec!["run", "j", "--params", "{bad"],
        vec!["run", "j", "--params", "[1]"],
        vec!["show"],
    ] {
        let out = sandbox.pacer(&args);
        assert_eq!(out.code, 2, "{out}");
    }
    let bad_since = sandbox.pacer(["history", "--since", "yesterday"]);
    assert_eq!(bad_since.code, 2, "{bad_since}");
    assert!(
        bad_since
            .stderr
            .contains("invalid value 'yesterday' for '--since <T>': `yesterday` is neither"),
        "{bad_since}"
    );
    let missing = sandbox.pacer(["show", "99"]);
    assert_eq!(missing.code, 1);
}

#[test]
fn the_worker_entry_refuses_a_human() {
    for binary in [&artifacts().pacer, &artifacts().pacerd] {
        let mut command = std::process::Command::new(binary);
        command.arg("worker");
        let out = CommandOutput::run(command);
        assert_eq!(out.code, 2, "{out}");
        assert!(out.stderr.contains("this command is internal"), "{out}");
    }
}

#[test]
fn a_user_who_cannot_write_the_database_reads_the_history() {
    if !pacer_tests::running_as_root() {
        eprintln!("skipped: acting as another user needs root (CI runs as root)");
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    // Readable by pacerd's group (root's here, as the daemon runs as root), writable only by
    // root: what a member of that group sees.
    std::fs::set_permissions(
        sandbox.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A copy, since the build directory may be private to root (a checkout under /root).
    let pacer = sandbox.path().join("pacer");
    std::fs::copy(&artifacts().pacer, &pacer).unwrap();
    let as_nobody_in = |groups: &str| {
        let mut command = std::process::Command::new("setpriv");
        command
            .current_dir(sandbox.path())
            .args(["--reuid=nobody", "--regid=nogroup", groups])
            .arg(&pacer)
            .args(["--config", "pacer.toml", "history", "--json"]);
        CommandOutput::run(command)
    };
    let as_nobody = || as_nobody_in("--groups=0");
    let mut daemon = sandbox.start();
    sandbox.wait_for_run("a run", &["--status", "succeeded"]);
    let while_running = as_nobody();
    assert_eq!(while_running.code, 0, "{while_running}");
    assert!(!while_running.json().as_array().unwrap().is_empty());
    // The history is 0640: a user outside the group reads nothing.
    let outsider = as_nobody_in("--clear-groups");
    assert_eq!(outsider.code, 1, "{outsider}");
    assert!(outsider.stderr.contains("pacer.db"), "{outsider}");
    assert_eq!(daemon.stop(), Some(0));
    assert!(!sandbox.path().join("pacer.db-shm").exists());
    let after_stop = as_nobody();
    assert_eq!(after_stop.code, 0, "{after_stop}");
    assert_eq!(
        after_stop.json(),
        serde_json::Value::Array(sandbox.history(&["--limit", "50"]))
    );
}
