//! The CLI as a user meets it without a daemon, and with bad arguments.

use pacer_tests::{CommandOutput, Sandbox, artifacts, require_root, require_tool};

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

    let listed = sandbox.pacer(["jobs"]);
    assert_eq!(listed.code, 0, "{listed}");
    assert!(
        listed.stderr.starts_with(
            "pacerd is not running: read the jobs from pacer.toml and their states from /"
        ),
        "the fallback says where the jobs come from: {listed}"
    );
    assert!(listed.stdout.starts_with("NAME "), "{listed}");
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
fn check_lists_fires_across_long_gaps_and_to_the_end_of_supported_time() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"casey\"\nschedule = \"0 2 * * *\"\ntimezone = \"Antarctica/Casey\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    // Casey skipped 02:00-05:00 (three hours) on 2009-10-18: the job fires as the gap ends.
    let casey = sandbox.pacer_json(&["check", "--next", "2", "--from", "2009-10-17T00:00:00Z"]);
    assert_eq!(
        casey[0]["next"],
        serde_json::json!(["2009-10-17T18:00:00.000Z", "2009-10-18T15:00:00.000Z"])
    );
    let late = sandbox.pacer_json(&["check", "--next", "1", "--from", "4999-12-31T23:58:00Z"]);
    assert_eq!(
        late[0]["next"],
        serde_json::json!(["5000-01-01T18:00:00.000Z"])
    );

    // An instant past the last one represented is still an instant; nothing fires after it,
    // and the table says why instead of `ok`.
    let end = sandbox.pacer(["check", "--from", "9999-12-31T23:58:00Z"]);
    assert_eq!(end.code, 0, "{end}");
    let row = end
        .stdout
        .lines()
        .find(|line| line.starts_with("casey"))
        .unwrap_or_else(|| panic!("{end}"));
    assert!(
        row.ends_with("no further fire before supported time ends at 9999-12-30T22:00:00.999Z"),
        "{end}"
    );
    let end = sandbox.pacer_json(&["check", "--from", "9999-12-31T23:58:00Z"]);
    assert_eq!(end[0]["next"], serde_json::json!([]));
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
    if !require_root("to act as another user") || !require_tool("setpriv") {
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

#[test]
fn check_on_an_empty_schedule_says_there_are_no_jobs() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", "");
    let check = sandbox.pacer(["check"]);
    assert_eq!(check.code, 0, "{check}");
    assert_eq!(
        check.stdout,
        "no jobs in pacer.toml (nor in its jobs.d/): add [[jobs]] tables to schedule something\n"
    );
    assert_eq!(sandbox.pacer_json(&["check"]), serde_json::json!([]));
}

/// Tables lay out cells of any width (a name far beyond the maximum, in a database written
/// before names had one), never end a line in spaces, and keep `--follow`'s columns in line.
#[test]
fn tables_fit_any_name_and_end_without_spaces() {
    let sandbox = Sandbox::new();
    let job = |name: &str| {
        format!(
            "\n[[jobs]]\nname = \"{name}\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = {{ command = \"true\" }}\n"
        )
    };
    let longest = "a-job-name-as-long-as-names-may-be-".repeat(4)[..128].to_owned();
    sandbox.write_config("", &format!("{}{}", job("x"), job(&longest)));
    let mut daemon = sandbox.start();
    sandbox.wait_for_run("a run of each", &["--job", "x", "--status", "succeeded"]);
    sandbox.wait_for_run(
        "a run of each",
        &["--job", &longest, "--status", "succeeded"],
    );
    for args in [vec!["jobs"], vec!["check"], vec!["history"], vec!["stats"]] {
        let out = sandbox.pacer(&args);
        assert_eq!(out.code, 0, "{out}");
        assert!(
            out.stdout.lines().all(|line| !line.ends_with(' ')),
            "no line ends in a space:\n{out}"
        );
        assert!(out.stdout.contains(&longest), "{out}");
    }

    // --follow lays out its columns before the first row: every STATUS lines up.
    let follow = sandbox.pacer_lines(&["history", "--follow", "--limit", "4"], 6);
    let at: Vec<usize> = follow
        .iter()
        .map(|line| {
            ["STATUS", "succeeded"]
                .iter()
                .find_map(|word| line.find(&format!("  {word}")))
                .unwrap_or_else(|| panic!("no status in {line:?}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] == w[1]), "{follow:#?}");
    assert!(
        follow.iter().all(|line| !line.ends_with(' ')),
        "{follow:#?}"
    );
    daemon.stop();

    let huge = "n".repeat(65_536);
    let database = rusqlite::Connection::open(sandbox.path().join("pacer.db")).unwrap();
    database
        .execute("UPDATE runs SET job = ?1 WHERE job = 'x'", [&huge])
        .unwrap();
    for args in [vec!["history"], vec!["stats"]] {
        let out = sandbox.pacer(&args);
        assert_eq!(out.code, 0, "{out}");
        assert!(
            out.stdout.contains(&huge),
            "{args:?} lists the name in full"
        );
    }
}

#[test]
fn a_succeeded_runs_message_is_shown_everywhere_a_run_is() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "greet"
plugin = "testkit"
params = { action = "ok", message = "sent 3 mails" }
"#,
    );
    let _daemon = sandbox.start();
    let run = sandbox.pacer(["run", "greet", "--wait"]);
    assert_eq!(run.code, 0, "{run}");
    let record = sandbox.wait_for_run("the run", &["--job", "greet", "--status", "succeeded"]);
    assert_eq!(record["message"], "sent 3 mails", "{record}");
    assert_eq!(record["error"], serde_json::Value::Null);
    let id = record["id"].to_string();
    let shown = sandbox.pacer(["show", &id]);
    assert!(
        shown
            .stdout
            .lines()
            .any(|line| line == "message    sent 3 mails"),
        "{shown}"
    );
    let history = sandbox.pacer(["history"]);
    let header = history.stdout.lines().next().unwrap();
    assert!(header.ends_with("MESSAGE"), "{history}");
    assert!(
        history
            .stdout
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("sent 3 mails"),
        "{history}"
    );
}
