//! Operating the daemon: systemd's notify protocol, reload, manual runs, pause and resume,
//! cancel, stopping, catch-up after downtime, who may change things, and retention.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pacer_tests::{
    CommandOutput, Sandbox, artifacts, is_over, require_root, require_tool, text, wait_for,
    wait_until,
};
use serde_json::Value;

fn job(name: &str, schedule: &str, plugin: &str, settings: &str, params: &str) -> String {
    format!(
        "\n[[jobs]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nplugin = \"{plugin}\"\n{settings}\nparams = {params}\n"
    )
}

/// A datagram socket standing in for one of systemd's (notify, journal), collecting what it
/// receives.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl NotifySocket {
    fn bind(sandbox: &Sandbox) -> NotifySocket {
        NotifySocket::bind_at(sandbox.path().join("notify.sock"))
    }

    fn bind_at(path: std::path::PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || {
            let mut buf = vec![0_u8; 65_536];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock().unwrap().push(buf[..n].to_vec());
            }
        });
        NotifySocket { path, messages }
    }

    fn received(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    fn wait_for(&self, what: &str, holds: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_until(what, || {
            let received = self.received();
            holds(&received).then_some(received)
        })
    }

    /// The first journal entry received that `holds`, its fields decoded.
    fn wait_for_entry(
        &self,
        what: &str,
        holds: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        wait_until(what, || {
            let messages = self.messages.lock().unwrap().clone();
            messages
                .iter()
                .map(|m| journal_fields(m))
                .find(|e| holds(e))
        })
    }
}

/// Decodes the journal's native protocol: `KEY=value\n`, or `KEY\n`, a little-endian 64-bit
/// length, the value and `\n`.
fn journal_fields(mut datagram: &[u8]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    while let Some(end) = datagram.iter().position(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(&datagram[..end]).into_owned();
        datagram = &datagram[end + 1..];
        if let Some((key, value)) = line.split_once('=') {
            fields.insert(key.to_owned(), value.to_owned());
            continue;
        }
        let (len, rest) = datagram.split_at(8);
        let len = usize::try_from(u64::from_le_bytes(len.try_into().unwrap())).unwrap();
        fields.insert(line, String::from_utf8_lossy(&rest[..len]).into_owned());
        datagram = &rest[len + 1..];
    }
    fields
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        &job("tick", "* * * * * *", "exec", "", r#"{ command = "true" }"#),
    );
    let notify = NotifySocket::bind(&sandbox);
    let mut daemon = sandbox.start_with_env(&[
        ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    let first = notify.wait_for("READY=1", |m| !m.is_empty());
    assert!(first[0].starts_with("READY=1\nSTATUS=1 job\n"), "{first:?}");
    notify.wait_for("two watchdog pings at half of WATCHDOG_USEC", |m| {
        m.iter().filter(|m| m.as_str() == "WATCHDOG=1\n").count() >= 2
    });
    let reload = sandbox.pacer(["reload"]);
    assert_eq!(reload.code, 0, "{reload}");
    let after_reload = notify.wait_for("RELOADING=1 then READY=1", |m| {
        m.iter()
            .position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="))
            .is_some_and(|at| m[at + 1..].iter().any(|m| m.starts_with("READY=1\n")))
    });
    let reloading = after_reload
        .iter()
        .find(|m| m.starts_with("RELOADING=1"))
        .unwrap();
    let usec: u64 = reloading
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("MONOTONIC_USEC=")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let last_ready = |messages: &[String]| {
        messages
            .iter()
            .rev()
            .find(|m| m.starts_with("READY=1\n"))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        last_ready(&after_reload),
        "READY=1\nSTATUS=1 job; last reload applied\n"
    );
    // A refused config leaves the old one, and the status line says so until the next reload.
    sandbox.write_config("", "[[jobs]]\nname = \"broken\"\n");
    let refused = sandbox.pacer(["reload"]);
    assert_eq!(refused.code, 1, "{refused}");
    let after_refusal = notify.wait_for("READY=1 after the refused reload", |m| {
        m.iter().filter(|m| m.starts_with("READY=1\n")).count() >= 3
    });
    assert_eq!(
        last_ready(&after_refusal),
        "READY=1\nSTATUS=1 job; last reload failed, the previous config stays in force (pacer check shows why)\n"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait(), Some(0));
    let all = notify.wait_for("STOPPING=1", |m| {
        m.iter().any(|m| m.starts_with("STOPPING=1"))
    });
    assert!(all.last().unwrap().starts_with("STOPPING=1"), "{all:?}");
}

/// Under systemd pacerd logs to journald's socket, `/run/systemd/journal/socket`. The test's
/// stand-in for journald listens in the sandbox, and pacerd runs in a mount namespace of its own
/// whose `/run` is the sandbox's `run/`: a real journald on the machine is neither used nor
/// disturbed.
#[test]
fn under_systemd_logs_go_to_the_journal_with_fields_and_not_to_stderr() {
    if !require_root("to give pacerd a /run of its own") || !require_tool("unshare") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        &job("tick", "* * * * * *", "exec", "", r#"{ command = "true" }"#),
    );
    let run = sandbox.path().join("run");
    std::fs::create_dir_all(run.join("systemd/journal")).unwrap();
    let journal = NotifySocket::bind_at(run.join("systemd/journal/socket"));
    // systemd sets JOURNAL_STREAM to the device and inode of the stream on stderr.
    let daemon = sandbox.start_wrapped(&[
        "unshare",
        "--mount",
        "--propagation=private",
        "sh",
        "-c",
        "mount --bind run /run && JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"",
    ]);
    let finished = journal.wait_for_entry("a finished run in the journal", |e| {
        e.get("MESSAGE").is_some_and(|m| m == "run finished")
    });
    assert_eq!(finished["JOB"], "tick", "{finished:?}");
    assert_eq!(finished["STATUS"], "succeeded", "{finished:?}");
    assert_eq!(finished["SYSLOG_IDENTIFIER"], "pacerd", "{finished:?}");
    assert!(finished["RUN_ID"].parse::<i64>().is_ok(), "{finished:?}");
    let stderr = daemon.log();
    assert!(
        !stderr.contains("run finished"),
        "never both the journal and stderr: {stderr}"
    );
}

#[test]
fn reload_applies_the_difference_and_keeps_a_bad_config_out() {
    let sandbox = Sandbox::new();
    let steady = job(
        "steady",
        "*/30 * * * * *",
        "exec",
        "",
        r#"{ command = "true" }"#,
    );
    let moving = job(
        "moving",
        "*/30 * * * * *",
        "exec",
        "",
        r#"{ command = "true" }"#,
    );
    let long = job(
        "long",
        "* * * * * *",
        "testkit",
        "",
        r#"{ action = "sleep", ms = 3000 }"#,
    );
    let doomed = job(
        "doomed",
        "* * * * * *",
        "exec",
        "",
        r#"{ command = "true" }"#,
    );
    sandbox.write_config("", &format!("{steady}{moving}{long}{doomed}"));
    let _daemon = sandbox.start();
    let long_run = sandbox.wait_for_run(
        "a long run going",
        &["--job", "long", "--status", "running"],
    );
    let next_fire = |name: &str| {
        let jobs = sandbox.pacer_json(&["jobs"]);
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .map(|j| j["next_fire"].clone())
    };
    let steady_next = next_fire("steady").unwrap();

    // A bad config changes nothing and says where the error is.
    sandbox.write_config(
        "",
        &format!("{steady}{moving}{long}{doomed}\n[[jobs]]\nname = \"bad\"\nplugin = \"exec\"\nschedule = \"99 * * * *\"\n"),
    );
    let bad = sandbox.pacer(["reload"]);
    assert_eq!(bad.code, 1, "{bad}");
    assert!(
        bad.stderr
            .contains("the new config is invalid; the old one stays in force"),
        "{bad}"
    );
    assert!(bad.stderr.contains("pacer.toml:"), "{bad}");
    assert!(
        bad.stderr.contains("invalid schedule `99 * * * *`"),
        "{bad}"
    );

    let moved = job(
        "moving",
        "*/7 * * * * *",
        "exec",
        "",
        r#"{ command = "true" }"#,
    );
    let fresh = job(
        "fresh",
        "* * * * * *",
        "exec",
        "",
        r#"{ command = "echo fresh" }"#,
    );
    sandbox.write_config("", &format!("{steady}{moved}{long}{fresh}"));
    let good = sandbox.pacer(["reload"]);
    assert_eq!(good.code, 0, "{good}");
    assert!(
        good.stdout
            .contains("1 job(s) added, 1 changed, 1 removed, 2 unchanged"),
        "{good}"
    );
    assert_eq!(
        next_fire("steady").unwrap(),
        steady_next,
        "an unchanged job keeps its next fire"
    );
    let moved_next: jiff::Timestamp = next_fire("moving")
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        moved_next.as_second() % 60 % 7,
        0,
        "a changed schedule counts from now"
    );
    assert!(next_fire("doomed").is_none());
    sandbox.wait_for_run(
        "a run of the new job",
        &["--job", "fresh", "--status", "succeeded"],
    );
    let reloaded_at = jiff::Timestamp::now();
    let done = wait_until("the long run to end", || {
        let run = sandbox.pacer_json(&["show", &long_run["id"].to_string()]);
        (run["status"] != "running").then_some(run)
    });
    assert_eq!(
        done["status"], "succeeded",
        "a reload leaves running runs alone"
    );
    wait_for("two more seconds", || {
        jiff::Timestamp::now().as_millisecond() > reloaded_at.as_millisecond() + 2_000
    });
    let doomed_runs = sandbox.history(&["--job", "doomed", "--limit", "1000"]);
    assert!(
        doomed_runs
            .iter()
            .all(|r| { text(r, "scheduled_at").parse::<jiff::Timestamp>().unwrap() < reloaded_at }),
        "a removed job fires no more"
    );
}

#[test]
fn sighup_and_an_edited_config_file_reload() {
    let sandbox = Sandbox::new();
    let quiet = |name: &str| {
        job(
            name,
            "*/30 * * * * *",
            "exec",
            "",
            r#"{ command = "true" }"#,
        )
    };
    let base = quiet("base");
    sandbox.write_config("", &base);
    let daemon = sandbox.start();
    let has_job = |name: &str| {
        sandbox
            .pacer_json(&["jobs"])
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == name)
            .then_some(())
    };
    // Written elsewhere and renamed into place, as editors save: the file watch still sees it.
    let text = format!(
        "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n{base}{}",
        quiet("by-rename")
    );
    sandbox.write(".pacer.toml.swp", &text);
    std::fs::rename(
        sandbox.path().join(".pacer.toml.swp"),
        sandbox.path().join("pacer.toml"),
    )
    .unwrap();
    wait_until("the edited file to be reloaded", || has_job("by-rename"));
    // `jobs.d` did not exist at the start: creating it is a change, and from then on it is
    // watched too.
    sandbox.write("jobs.d/extra.toml", &quiet("dropped-in"));
    wait_until("the new jobs.d to be read", || has_job("dropped-in"));
    sandbox.write("jobs.d/more.toml", &quiet("more"));
    wait_until("a second drop-in to be read", || has_job("more"));
    // A drop-in linked from elsewhere changes where nothing is watched: SIGHUP reloads it.
    sandbox.write("elsewhere/linked.toml", &quiet("linked-before"));
    std::os::unix::fs::symlink(
        sandbox.path().join("elsewhere/linked.toml"),
        sandbox.path().join("jobs.d/linked.toml"),
    )
    .unwrap();
    wait_until("the linked drop-in to be read", || has_job("linked-before"));
    sandbox.write("elsewhere/linked.toml", &quiet("linked-after"));
    daemon.signal("HUP");
    wait_until("SIGHUP to load the changed link target", || {
        has_job("linked-after")
    });
    assert_eq!(sandbox.pacer(["status"]).code, 0);
}

#[test]
fn manual_runs_follow_the_job_policies() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    jobs += "\n[[jobs]]\nname = \"hello\"\nplugin = \"exec\"\nparams = { command = \"echo hello $GREETING\", env = { GREETING = \"job\" } }\n";
    jobs += "\n[[jobs]]\nname = \"fails\"\nplugin = \"exec\"\nretries = 1\nretry_backoff = \"1s\"\nparams = { command = \"exit 4\" }\n";
    jobs += "\n[[jobs]]\nname = \"slow\"\nplugin = \"testkit\"\nparams = { action = \"sleep\", ms = 60000 }\n";
    jobs += "\n[[jobs]]\nname = \"in-turn\"\nplugin = \"testkit\"\noverlap = \"queue\"\nparams = { action = \"sleep\", ms = 60000 }\n";
    sandbox.write_config("shutdown_grace = \"1s\"", &jobs);
    let _daemon = sandbox.start();

    let started = sandbox.pacer(["run", "hello"]);
    assert_eq!(started.code, 0, "{started}");
    let id: i64 = started
        .stdout
        .trim()
        .strip_prefix("started run ")
        .unwrap()
        .parse()
        .unwrap();
    let run = wait_until("the manual run to end", || {
        let run = sandbox.pacer_json(&["show", &id.to_string()]);
        (run["status"] != "running").then_some(run)
    });
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["status"], "succeeded");
    assert!(text(&run, "output").contains("hello job"));

    let waited = sandbox.pacer([
        "run",
        "hello",
        "--wait",
        "--params",
        r#"{"env": {"GREETING": "params"}}"#,
    ]);
    assert_eq!(waited.code, 0, "{waited}");
    assert!(waited.stdout.ends_with(" succeeded\n"), "{waited}");
    let newest = &sandbox.history(&["--job", "hello"])[0];
    let shown = sandbox.pacer_json(&["show", &newest["id"].to_string()]);
    assert!(
        text(&shown, "output").contains("hello params"),
        "params merge over the job's"
    );
    assert_eq!(shown["params"]["command"], "echo hello $GREETING");

    let failed = sandbox.pacer(["run", "fails", "--wait"]);
    assert_eq!(failed.code, 1, "{failed}");
    let lines: Vec<&str> = failed.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "both attempts are followed: {failed}");
    assert!(lines[1].ends_with(" failed: command exited with code 4"));
    assert!(
        lines[2].starts_with("queued run ")
            && lines[2].contains(": attempt 2 waits for its back-off: it may start at "),
        "the retry is a record at once: {failed}"
    );
    assert!(lines[3].ends_with("(attempt 2)"));

    let slow = sandbox.pacer(["run", "slow"]);
    assert_eq!(slow.code, 0, "{slow}");
    let slow_id = slow
        .stdout
        .trim()
        .strip_prefix("started run ")
        .unwrap()
        .to_owned();
    let again = sandbox.pacer(["run", "slow"]);
    assert_eq!(
        again.code, 1,
        "a manual run obeys overlap = \"skip\": {again}"
    );
    let skipped_id: i64 = slow_id.parse::<i64>().unwrap() + 1;
    assert_eq!(
        again.stderr,
        format!(
            "pacer: run {skipped_id} skipped: run {slow_id} of `slow` is still running \
             (overlap = \"skip\")\n"
        ),
        "the skipped fire is a record too"
    );
    let cancel = sandbox.pacer(["cancel", &slow_id]);
    assert_eq!(cancel.code, 0, "{cancel}");
    let cancelled = wait_until("the cancelled run to end", || {
        let run = sandbox.pacer_json(&["show", &slow_id]);
        (run["status"] != "running").then_some(run)
    });
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["error"], "cancelled by pacer cancel");
    let not_running = sandbox.pacer(["cancel", &slow_id]);
    assert_eq!(not_running.code, 1);
    assert!(
        not_running
            .stderr
            .contains(&format!("run {slow_id} is neither running nor queued"))
    );

    let unknown = sandbox.pacer(["run", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .stderr
            .contains("no job `nope` in the config in force"),
        "{unknown}"
    );
    let typo = sandbox.pacer(["run", "helo"]);
    assert_eq!(typo.code, 1);
    assert!(
        typo.stderr
            .contains("no job `helo` in the config in force: did you mean `hello`?"),
        "{typo}"
    );
    let never = sandbox.pacer(["cancel", "999999"]);
    assert_eq!(never.code, 1);
    assert!(
        never.stderr.contains("no run with id 999999"),
        "an id no run ever had: {never}"
    );
    let typo = sandbox.pacer(["history", "--job", "helo"]);
    assert_eq!(typo.code, 0, "a listing that matched nothing: {typo}");
    assert_eq!(typo.stdout.trim(), "no runs match");
    assert!(
        typo.stderr
            .contains("no job `helo` in the config: did you mean `hello`?"),
        "{typo}"
    );
    let bad_params = sandbox.pacer(["run", "hello", "--params", "[1]"]);
    assert_eq!(bad_params.code, 2, "a usage error: {bad_params}");

    assert_eq!(sandbox.pacer(["run", "in-turn"]).code, 0);
    let queued = sandbox.pacer(["run", "in-turn"]);
    assert_eq!(queued.code, 0, "accepted, waiting its turn: {queued}");
    let id = queued
        .stdout
        .strip_prefix("queued run ")
        .and_then(|rest| rest.split_once(':'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("the run's id at once: {queued}"));
    assert_eq!(
        queued.stdout,
        format!("queued run {id}: waiting for the previous run of `in-turn` to end (overlap)\n"),
        "said at once, with its id, not when it starts"
    );
    let record = sandbox.pacer_json(&["show", &id]);
    assert_eq!(record["status"], "queued", "{record}");
    assert_eq!(
        record["error"], "waiting for the previous run of `in-turn` to end (overlap)",
        "the record says which limit holds it"
    );
}

#[test]
fn pause_survives_a_restart_and_resume_fires_again() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        &job("tick", "* * * * * *", "exec", "", r#"{ command = "true" }"#),
    );
    let mut daemon = sandbox.start();
    sandbox.wait_for_run("a run", &[]);
    let paused = sandbox.pacer(["pause", "tick"]);
    assert_eq!(paused.code, 0, "{paused}");
    let paused_at = jiff::Timestamp::now().as_millisecond();
    assert_eq!(sandbox.pacer_json(&["jobs"])[0]["paused"], true);
    assert_eq!(daemon.stop(), Some(0));
    let mut daemon = sandbox.start();
    assert_eq!(
        sandbox.pacer_json(&["jobs"])[0]["paused"],
        true,
        "the pause is persisted"
    );
    wait_for("three paused seconds", || {
        jiff::Timestamp::now().as_millisecond() > paused_at + 3_000
    });
    let during: Vec<Value> = sandbox
        .history(&["--limit", "1000"])
        .into_iter()
        .filter(|r| {
            text(r, "scheduled_at")
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
                > paused_at + 1_000
        })
        .collect();
    assert!(
        during.is_empty(),
        "a paused job's fires create no record: {during:?}"
    );
    let resumed = sandbox.pacer(["resume", "tick"]);
    assert_eq!(resumed.code, 0, "{resumed}");
    let resumed_at = jiff::Timestamp::now().as_millisecond();
    wait_until("a run after resume", || {
        sandbox.history(&[]).into_iter().find(|r| {
            r["trigger"] == "schedule"
                && text(r, "scheduled_at")
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .as_millisecond()
                    > resumed_at
        })
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn stopping_gives_runs_their_grace_then_cancels_them() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    jobs += "\n[[jobs]]\nname = \"short\"\nplugin = \"testkit\"\nparams = { action = \"sleep\", ms = 500 }\n";
    jobs += "\n[[jobs]]\nname = \"endless\"\nplugin = \"testkit\"\nparams = { action = \"sleep\", ms = 600000 }\n";
    sandbox.write_config("shutdown_grace = \"2s\"", &jobs);
    let mut daemon = sandbox.start();
    for name in ["short", "endless"] {
        assert_eq!(sandbox.pacer(["run", name]).code, 0);
    }
    let stop_asked = Instant::now();
    daemon.signal("TERM");
    assert_eq!(daemon.wait(), Some(0));
    let took = stop_asked.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "the grace is given: {took:?}"
    );
    let runs = sandbox.history(&[]);
    let status_of = |name: &str| runs.iter().find(|r| r["job"] == name).unwrap().clone();
    assert_eq!(status_of("short")["status"], "succeeded");
    let endless = status_of("endless");
    assert_eq!(endless["status"], "cancelled");
    assert_eq!(
        endless["error"],
        "pacerd stopped and shutdown_grace elapsed"
    );

    let mut daemon = sandbox.start();
    assert_eq!(sandbox.pacer(["run", "endless"]).code, 0);
    let stop_asked = Instant::now();
    daemon.signal("TERM");
    wait_for("the daemon to say it is stopping", || {
        let status = sandbox.pacer(["status", "--json"]);
        status.code == 0 && status.json()["stopping"] == true
    });
    let refused = sandbox.pacer(["run", "short"]);
    assert_eq!(
        refused.code, 1,
        "a stopping daemon starts nothing: {refused}"
    );
    assert!(refused.stderr.contains("pacerd is stopping"), "{refused}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait(), Some(0));
    assert!(
        stop_asked.elapsed() < Duration::from_secs(25),
        "a second signal stops at once"
    );
    let newest = &sandbox.history(&[])[0];
    assert_eq!(
        newest["error"],
        "pacerd was stopped at once (a second signal)"
    );
}

#[test]
fn catch_up_once_and_all_after_downtime() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    jobs += &job(
        "every",
        "* * * * * *",
        "exec",
        "catch_up = \"all\"",
        r#"{ command = "true" }"#,
    );
    jobs += &job(
        "latest",
        "* * * * * *",
        "exec",
        "catch_up = \"once\"",
        r#"{ command = "true" }"#,
    );
    jobs += &job(
        "skipper",
        "* * * * * *",
        "exec",
        "catch_up = \"skip\"",
        r#"{ command = "true" }"#,
    );
    // Fewer than the fires missed below: it caps `all` only.
    sandbox.write_config("max_catch_up = 2", &jobs);
    let mut daemon = sandbox.start();
    wait_until("runs of both", || {
        let runs = sandbox.history(&[]);
        (runs.iter().any(|r| r["job"] == "every") && runs.iter().any(|r| r["job"] == "latest"))
            .then_some(())
    });
    assert_eq!(daemon.stop(), Some(0));
    let stopped = Instant::now();
    wait_for("four seconds down", || {
        stopped.elapsed() > Duration::from_secs(4)
    });
    let _daemon = sandbox.start();
    let runs = wait_until("the catch-up runs", || {
        let runs = sandbox.history(&["--limit", "1000"]);
        let done = |job: &str| {
            runs.iter()
                .filter(|r| r["job"] == job && r["trigger"] == "catch_up")
                .all(is_over)
        };
        // "all" runs its fires one after another: wait for both, not a pause between them.
        let every_ran = runs
            .iter()
            .filter(|r| {
                r["job"] == "every" && r["trigger"] == "catch_up" && r["status"] == "succeeded"
            })
            .count();
        (runs.iter().filter(|r| r["trigger"] == "catch_up").count() >= 9
            && every_ran == 2
            && done("every")
            && done("latest"))
        .then_some(runs)
    });
    let caught = |job: &str| -> Vec<&Value> {
        runs.iter()
            .filter(|r| r["job"] == job && r["trigger"] == "catch_up")
            .collect()
    };
    let every = caught("every");
    assert!(every.len() >= 3, "{every:?}");
    let (ran, capped): (Vec<&Value>, Vec<&Value>) =
        every.iter().partition(|r| r["status"] == "succeeded");
    assert_eq!(ran.len(), 2, "all: max_catch_up = 2 runs: {every:?}");
    assert!(
        ran.iter().all(|r| capped
            .iter()
            .all(|c| text(c, "scheduled_at") < text(r, "scheduled_at"))),
        "the newest missed fires run: {every:?}"
    );
    for skipped in &capped {
        assert_eq!(
            skipped["error"],
            "missed while pacerd was not running; catch_up = \"all\" runs only the newest max_catch_up = 2 missed fires"
        );
    }
    let skipper = caught("skipper");
    assert!(
        skipper.len() >= 3,
        "skip: each missed fire is recorded: {skipper:?}"
    );
    for skipped in &skipper {
        assert_eq!(
            skipped["error"],
            "missed while pacerd was not running (catch_up = \"skip\")"
        );
    }
    let latest = caught("latest");
    let ran: Vec<&&Value> = latest
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .collect();
    assert_eq!(ran.len(), 1, "once: one missed fire runs: {latest:?}");
    let newest_missed = latest
        .iter()
        .map(|r| text(r, "scheduled_at").to_owned())
        .max()
        .unwrap();
    assert_eq!(
        text(ran[0], "scheduled_at"),
        newest_missed,
        "the latest one"
    );
    for skipped in latest.iter().filter(|r| r["status"] == "skipped") {
        assert_eq!(
            skipped["error"],
            "missed while pacerd was not running; catch_up = \"once\" runs only the latest missed fire"
        );
    }
}

#[test]
fn only_root_and_the_socket_group_may_change_things() {
    if !require_root("to act as another user") || !require_tool("setpriv") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        &job(
            "tick",
            "*/30 * * * * *",
            "exec",
            "",
            r#"{ command = "true" }"#,
        ),
    );
    std::fs::set_permissions(
        sandbox.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let _daemon = sandbox.start();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sandbox.path().join("pacer.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o660, "the daemon creates its socket 0660");
    // A socket anyone may open (a mistake the daemon guards against): peer credentials decide.
    std::fs::set_permissions(
        sandbox.path().join("pacer.sock"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let pacer = sandbox.path().join("pacer");
    std::fs::copy(&artifacts().pacer, &pacer).unwrap();
    let as_nobody = |groups: &str, args: &[&str]| {
        let mut command = std::process::Command::new("setpriv");
        command
            .current_dir(sandbox.path())
            .args(["--reuid=nobody", "--regid=nogroup"])
            .arg(groups)
            .arg(&pacer)
            .args(["--config", "pacer.toml"])
            .args(args);
        CommandOutput::run(command)
    };
    let status = as_nobody("--clear-groups", &["status"]);
    assert_eq!(
        status.code, 0,
        "anyone who can open the socket may read: {status}"
    );
    let pause = as_nobody("--clear-groups", &["pause", "tick"]);
    assert_eq!(pause.code, 1, "{pause}");
    assert_eq!(
        pause.stderr,
        "pacer: `pacer pause` needs root or membership in the control socket's group `root`; uid 65534 is neither\n"
    );
    assert_eq!(sandbox.pacer_json(&["jobs"])[0]["paused"], false);
    let member = as_nobody("--groups=0", &["pause", "tick"]);
    assert_eq!(
        member.code, 0,
        "a member of the socket's group may: {member}"
    );
    assert_eq!(sandbox.pacer_json(&["jobs"])[0]["paused"], true);
}

#[test]
fn verbs_that_need_the_daemon_say_it_is_not_running() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        &job(
            "tick",
            "*/30 * * * * *",
            "exec",
            "",
            r#"{ command = "true" }"#,
        ),
    );
    for args in [
        vec!["run", "tick"],
        vec!["cancel", "1"],
        vec!["pause", "tick"],
        vec!["resume", "tick"],
        vec!["reload"],
    ] {
        let out = sandbox.pacer(&args);
        assert_eq!(out.code, 1, "{out}");
        assert_eq!(out.stderr, "pacer: pacerd is not running\n", "{out}");
    }
}

#[test]
fn old_runs_are_pruned() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "history_retention = \"2s\"",
        &job("tick", "* * * * * *", "exec", "", r#"{ command = "true" }"#),
    );
    let mut daemon = sandbox.start();
    wait_until("three runs", || {
        (sandbox.history(&[]).len() >= 3).then_some(())
    });
    assert_eq!(daemon.stop(), Some(0));
    let old: Vec<i64> = sandbox
        .history(&["--limit", "1000"])
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let stopped = Instant::now();
    wait_for("the runs to age past history_retention", || {
        stopped.elapsed() > Duration::from_secs(3)
    });
    let _daemon = sandbox.start();
    wait_until("the old runs to be pruned at start", || {
        let ids: Vec<i64> = sandbox
            .history(&["--limit", "1000"])
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        ids.iter().all(|id| !old.contains(id)).then_some(())
    });
}
