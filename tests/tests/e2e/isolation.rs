//! Any plugin fault costs one run record, never the daemon or another job's fires, and no
//! process of a run outlives it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pacer_tests::{
    AS_THE_UNIT, Sandbox, artifacts, compile_c_plugin, is_alive, is_over, names_libgcc_s,
    processes_of_run, require_root, require_tool, text, wait_for, wait_until,
};
use serde_json::Value;

const HEARTBEAT: &str = r#"
[[jobs]]
name = "heartbeat"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }
"#;

/// What systemd sets in a service's environment (systemd.exec(5), "Environment variables in
/// spawned processes"), with made-up later members of its families (`*_FUTURE`).
const SYSTEMD_VARIABLES: [&str; 37] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "WATCHDOG_FUTURE",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "LISTEN_FUTURE",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "MAINPID",
    "MANAGERPID",
    "LOG_NAMESPACE",
    "SERVICE_RESULT",
    "EXIT_CODE",
    "EXIT_STATUS",
    "MONITOR_SERVICE_RESULT",
    "MONITOR_EXIT_CODE",
    "MONITOR_EXIT_STATUS",
    "MONITOR_INVOCATION_ID",
    "MONITOR_UNIT",
    "PIDFILE",
    "TRIGGER_UNIT",
    "TRIGGER_PATH",
    "TRIGGER_TIMER_REALTIME_USEC",
    "TRIGGER_TIMER_MONOTONIC_USEC",
    "MEMORY_PRESSURE_WATCH",
    "MEMORY_PRESSURE_WRITE",
    "FDSTORE",
    "REMOTE_ADDR",
];

/// A job firing every second.
fn job(name: &str, plugin: &str, settings: &str, params: &str) -> String {
    format!(
        "\n[[jobs]]\nname = \"{name}\"\nschedule = \"* * * * * *\"\nplugin = \"{plugin}\"\n{settings}\nparams = {params}\n"
    )
}

/// The first run of `job` that ended (not running, not skipped).
fn first_ended(sandbox: &Sandbox, name: &str) -> Value {
    wait_until(&format!("a finished run of {name}"), || {
        sandbox
            .history(&["--job", name, "--limit", "100"])
            .into_iter()
            .rev()
            .find(|run| is_over(run) && run["status"] != "skipped")
    })
}

fn output_of(sandbox: &Sandbox, run: &Value) -> String {
    text(
        &sandbox.pacer_json(&["show", &run["id"].to_string()]),
        "output",
    )
    .to_owned()
}

/// Every second from the heartbeat's first fire to its last has exactly one succeeded run.
fn assert_heartbeat_kept_firing(sandbox: &Sandbox) {
    let runs = sandbox.history(&["--job", "heartbeat", "--limit", "1000"]);
    let seconds: BTreeSet<i64> = runs
        .iter()
        .map(|run| {
            assert_eq!(run["status"], "succeeded", "{run}");
            text(run, "scheduled_at")
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second()
        })
        .collect();
    assert_eq!(seconds.len(), runs.len(), "no fire is repeated");
    let (first, last) = (seconds.first().unwrap(), seconds.last().unwrap());
    assert_eq!(
        u64::try_from(last - first + 1).unwrap(),
        seconds.len() as u64,
        "the heartbeat fired every second while plugins failed: {seconds:?}"
    );
    assert!(seconds.len() >= 3, "{seconds:?}");
}

/// Checks each faulty job's first ended run: its status and error, and that nothing it started
/// is still alive.
fn assert_faults(sandbox: &Sandbox, expected: &[(&str, &str, &str)]) {
    for (name, status, error) in expected {
        let run = first_ended(sandbox, name);
        assert_eq!(run["status"], *status, "{name}: {run}");
        let actual = text(&run, "error");
        assert!(
            actual.starts_with(error),
            "{name}: `{actual}` should start with `{error}`"
        );
        let id = run["id"].as_i64().unwrap();
        wait_for(
            &format!("no process of run {id} ({name}) to be left"),
            || processes_of_run(id).is_empty(),
        );
    }
}

/// Each faulty job's end is in the daemon's log at warning, where `journalctl -p warning` finds
/// it; a succeeded run is not.
fn assert_logged_as_warnings(log: &str, faulty: &[&str], fine: &str) {
    let finished = |job: &str| {
        let needle = format!("run finished job={job} ");
        log.lines()
            .filter(|line| line.contains(&needle))
            .map(|line| line.split_whitespace().nth(1).unwrap_or("").to_owned())
            .collect::<BTreeSet<String>>()
    };
    for job in faulty {
        assert_eq!(
            finished(job),
            BTreeSet::from(["WARN".to_owned()]),
            "{job}: {log}"
        );
    }
    assert_eq!(finished(fine), BTreeSet::from(["INFO".to_owned()]), "{log}");
}

/// The grandchild a hanging run started is killed with it.
fn assert_grandchild_killed(sandbox: &Sandbox, name: &str) {
    let run = first_ended(sandbox, name);
    let output = output_of(sandbox, &run);
    let pid: u32 = output
        .lines()
        .find_map(|line| line.strip_prefix("grandchild "))
        .unwrap_or_else(|| panic!("no grandchild pid in {output}"))
        .trim()
        .parse()
        .unwrap();
    wait_for(&format!("grandchild {pid} of {name} to be killed"), || {
        !is_alive(pid)
    });
}

#[test]
fn rust_plugin_faults_cost_one_record_each() {
    let sandbox = Sandbox::new();
    let mut jobs = HEARTBEAT.to_owned();
    jobs += &job(
        "panics",
        "testkit",
        "",
        r#"{ action = "panic", message = "boom" }"#,
    );
    jobs += &job("aborts", "testkit", "", r#"{ action = "abort" }"#);
    jobs += &job("segfaults", "testkit", "", r#"{ action = "segfault" }"#);
    jobs += &job("exits", "testkit", "", r#"{ action = "exit", code = 7 }"#);
    jobs += &job(
        "hangs",
        "testkit",
        "timeout = \"1s\"",
        r#"{ action = "hang", spawn_grandchild = true }"#,
    );
    jobs += &job(
        "floods",
        "testkit",
        "",
        r#"{ action = "flood", bytes = 5000000 }"#,
    );
    jobs += &job(
        "leaks",
        "testkit",
        "memory_limit = \"256M\"",
        r#"{ action = "leak" }"#,
    );
    sandbox.write_config("", &jobs);
    let started = Instant::now();
    let daemon = sandbox.start();
    assert_faults(
        &sandbox,
        &[
            ("panics", "failed", "panicked: boom"),
            (
                "aborts",
                "crashed",
                "the run's process was killed by signal 6 (SIGABRT)",
            ),
            (
                "segfaults",
                "crashed",
                "the run's process was killed by signal 11 (SIGSEGV)",
            ),
            (
                "exits",
                "crashed",
                "the run's process exited with code 7 before the plugin's run returned",
            ),
            ("hangs", "timed_out", "timed out after 1s"),
            ("leaks", "failed", "out of memory after "),
        ],
    );
    assert_grandchild_killed(&sandbox, "hangs");
    let flood = first_ended(&sandbox, "floods");
    assert_eq!(flood["status"], "succeeded");
    let detail = sandbox.pacer_json(&["show", &flood["id"].to_string()]);
    assert_eq!(
        text(&detail, "output").len(),
        1 << 20,
        "the default output_limit is 1M"
    );
    assert_eq!(
        detail["output_dropped"].as_u64().unwrap(),
        5_000_000 - (1 << 20)
    );
    wait_for("a few seconds of faults", || {
        started.elapsed() > Duration::from_secs(4)
    });
    assert_eq!(sandbox.pacer(["status"]).code, 0, "the daemon is unharmed");
    assert_logged_as_warnings(
        &daemon.log(),
        &["panics", "aborts", "segfaults", "exits", "hangs", "leaks"],
        "heartbeat",
    );
    drop(daemon);
    assert_heartbeat_kept_firing(&sandbox);
}

/// Each run starts a process that loads its plugin: neither `pacerd` nor a plugin built with
/// the SDK loads `libgcc_s.so.1`, whose constructor's `cpuid`s each trap to the hypervisor on
/// a virtual machine. Their unwinder is linked in instead, and a panic still unwinds to a
/// `failed` record (`rust_plugin_faults_cost_one_record_each`).
#[test]
fn workers_start_without_libgcc_s() {
    let built = artifacts();
    let mut checked = vec![built.pacerd.clone(), built.pacer.clone()];
    for entry in std::fs::read_dir(&built.libraries).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "so") {
            checked.push(path);
        }
    }
    assert!(
        checked.len() > 3,
        "no plugins built in {}",
        built.libraries.display()
    );
    for path in checked {
        assert!(
            !names_libgcc_s(&path),
            "{} needs libgcc_s.so.1 (plugin-api/build.rs links the unwinder in)",
            path.display()
        );
    }
}

#[test]
fn c_plugin_faults_cost_one_record_each() {
    if !require_tool("gcc") {
        return;
    }
    let sandbox = Sandbox::new();
    let library = compile_c_plugin(include_str!("../../c/faults.c"), "faults", sandbox.path());
    sandbox.install_plugin(&library);
    let mut jobs = HEARTBEAT.to_owned();
    for (name, action, settings) in [
        ("c-fails", "fail", ""),
        ("c-aborts", "abort", ""),
        ("c-segfaults", "segfault", ""),
        ("c-exits", "exit", ""),
        ("c-hangs", "hang", "timeout = \"1s\""),
        ("c-floods", "flood", ""),
        ("c-leaks", "leak", "memory_limit = \"256M\""),
        ("c-leaks-blind", "leak-blind", "memory_limit = \"256M\""),
        ("c-raises", "raise-segv", ""),
    ] {
        jobs += &job(
            name,
            "c-faults",
            settings,
            &format!("{{ action = \"{action}\" }}"),
        );
    }
    sandbox.write_config("output_limit = \"64K\"", &jobs);
    let started = Instant::now();
    let daemon = sandbox.start();
    assert_faults(
        &sandbox,
        &[
            ("c-fails", "failed", "the C plugin failed on request"),
            (
                "c-aborts",
                "crashed",
                "the run's process was killed by signal 6 (SIGABRT)",
            ),
            (
                "c-segfaults",
                "crashed",
                "the run's process was killed by signal 11 (SIGSEGV)",
            ),
            (
                "c-exits",
                "crashed",
                "the run's process exited with code 7 before the plugin's run returned",
            ),
            ("c-hangs", "timed_out", "timed out after 1s"),
            ("c-leaks", "failed", "out of memory after "),
            (
                "c-leaks-blind",
                "crashed",
                "the run's process was killed by signal 11 (SIGSEGV); memory_limit is 256M",
            ),
            (
                "c-raises",
                "crashed",
                "the run's process was killed by signal 11 (SIGSEGV)",
            ),
        ],
    );
    assert_grandchild_killed(&sandbox, "c-hangs");
    let flood = first_ended(&sandbox, "c-floods");
    assert_eq!(flood["status"], "succeeded");
    let output = output_of(&sandbox, &flood);
    assert_eq!(output.len(), 64 << 10);
    assert!(output.ends_with("flood line 199999 of the C plugin\nthe last C line\n"));
    wait_for("a few seconds of faults", || {
        started.elapsed() > Duration::from_secs(4)
    });
    assert_eq!(sandbox.pacer(["status"]).code, 0, "the daemon is unharmed");
    drop(daemon);
    assert_heartbeat_kept_firing(&sandbox);
}

#[test]
fn a_run_starts_in_a_clean_process() {
    let sandbox = Sandbox::new();
    let mut jobs = String::new();
    jobs += &job("ids", "testkit", "", r#"{ action = "ids" }"#);
    jobs += &job("fds", "testkit", "", r#"{ action = "fds" }"#);
    jobs += &job("stdin", "testkit", "", r#"{ action = "stdin" }"#);
    jobs += &job(
        "child-fds",
        "exec",
        "",
        r#"{ command = "ls /proc/self/fd | sort -n | tr '\n' ' '" }"#,
    );
    let names: Vec<String> = SYSTEMD_VARIABLES
        .iter()
        .chain(&["PACER_JOB", "PACER_TRIGGER", "KEPT"])
        .map(|name| format!("{name:?}"))
        .collect();
    jobs += &job(
        "env",
        "testkit",
        "",
        &format!(r#"{{ action = "env", names = [{}] }}"#, names.join(", ")),
    );
    sandbox.write_config("", &jobs);
    // Values the daemon itself ignores: no notify socket, and pids that are not its own.
    let mut env: Vec<(&str, &str)> = SYSTEMD_VARIABLES
        .iter()
        .map(|name| match *name {
            "NOTIFY_SOCKET" => (*name, "/nonexistent/notify"),
            _ => (*name, "1"),
        })
        .collect();
    env.push(("KEPT", "yes"));
    let _daemon = sandbox.start_with_env(&env);
    let output = |name: &str| {
        let run = first_ended(&sandbox, name);
        assert_eq!(run["status"], "succeeded", "{run}");
        output_of(&sandbox, &run)
    };

    let ids = output("ids");
    let field = |key: &str| {
        ids.lines()
            .find_map(|line| line.strip_prefix(&format!("{key} ")))
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        field("pgid"),
        field("pid"),
        "each run leads its own process group"
    );

    let fds = output("fds");
    let targets: Vec<&str> = fds
        .lines()
        .filter(|line| line.starts_with("fd "))
        .map(|line| line.split(" -> ").nth(1).unwrap())
        .collect();
    assert_eq!(targets[0], "/dev/null", "stdin is /dev/null: {fds}");
    assert!(
        targets[1].starts_with("pipe:") && targets[1] == targets[2],
        "{fds}"
    );
    for target in &targets[3..] {
        assert!(
            target.starts_with("socket:") || target.starts_with("/proc/"),
            "nothing of the daemon's is inherited (its channel to the daemon and the listing \
             itself excepted): {fds}"
        );
    }
    assert!(
        !fds.contains("pacer.db") && !fds.contains("pacer.sock"),
        "{fds}"
    );
    assert_eq!(
        fds.lines().filter(|l| l.contains("socket:")).count(),
        1,
        "{fds}"
    );

    assert!(output("stdin").contains("stdin 0 bytes"));
    assert_eq!(
        output("child-fds").lines().last().unwrap().trim_end(),
        "0 1 2 3",
        "a plugin's children inherit only stdin, stdout and stderr"
    );
    let env = output("env");
    for name in SYSTEMD_VARIABLES {
        assert!(env.contains(&format!("{name}=<unset>")), "{name}: {env}");
    }
    assert!(env.contains("PACER_JOB=env\n"), "{env}");
    assert!(env.contains("PACER_TRIGGER=schedule\n"), "{env}");
    assert!(env.contains("KEPT=yes\n"), "{env}");
}

#[test]
fn user_switches_groups_and_user_before_the_plugin_loads() {
    if !require_root("to switch users") {
        return;
    }
    let sandbox = Sandbox::new();
    for dir in [sandbox.path().to_owned(), sandbox.plugins()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut jobs = String::new();
    jobs += &job(
        "as-nobody",
        "testkit",
        "user = \"nobody\"",
        r#"{ action = "ids" }"#,
    );
    jobs += &job(
        "shell-as-nobody",
        "exec",
        "user = \"nobody\"",
        r#"{ command = "id -u; id -g; echo home=$HOME user=$USER" }"#,
    );
    sandbox.write_config("", &jobs);
    let _daemon = sandbox.start();
    let run = first_ended(&sandbox, "as-nobody");
    assert_eq!(run["status"], "succeeded", "{run}");
    let ids = output_of(&sandbox, &run);
    assert!(ids.contains("uid 65534\n"), "{ids}");
    assert!(ids.contains("gid 65534\n"), "{ids}");
    assert!(
        ids.contains("groups 65534\n"),
        "supplementary groups are nobody's: {ids}"
    );
    let shell = first_ended(&sandbox, "shell-as-nobody");
    let output = output_of(&sandbox, &shell);
    assert!(output.contains("65534\n65534\n"), "{output}");
    assert!(output.contains("home=/nonexistent user=nobody"), "{output}");
}

#[test]
fn retries_are_scheduled_attempts_with_backoff() {
    let sandbox = Sandbox::new();
    // Fires 15 s apart, so the attempts of one fire (1 s, then 2 s apart) end before the next.
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "flaky"
schedule = "*/15 * * * * *"
plugin = "exec"
retries = 2
retry_backoff = "1s"
retry_backoff_max = "1m"
params = { command = "echo attempt $PACER_ATTEMPT of a $PACER_TRIGGER run; exit 1" }
"#,
    );
    let _daemon = sandbox.start();
    let mut runs = wait_until("three attempts of the first fire", || {
        let mut runs = sandbox.history(&["--job", "flaky"]);
        runs.reverse();
        let ended = runs.iter().take_while(|r| r["status"] == "failed").count();
        (ended >= 3).then_some(runs)
    });
    runs.truncate(3);
    let attempts: Vec<(i64, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["trigger"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [(1, "schedule"), (2, "retry"), (3, "retry")]);
    for run in &runs {
        assert_eq!(run["error"], "command exited with code 1");
    }
    let ms = |run: &Value, key: &str| {
        text(run, key)
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond()
    };
    let first_delay = ms(&runs[1], "scheduled_at") - ms(&runs[0], "finished_at");
    let second_delay = ms(&runs[2], "scheduled_at") - ms(&runs[1], "finished_at");
    assert!((1_000..1_200).contains(&first_delay), "{first_delay}");
    assert!(
        (2_000..2_200).contains(&second_delay),
        "the delay doubles: {second_delay}"
    );
    assert!(ms(&runs[1], "started_at") >= ms(&runs[1], "scheduled_at"));
    let output = output_of(&sandbox, &runs[2]);
    assert!(output.contains("attempt 3 of a retry run"), "{output}");
    let last_end = ms(&runs[2], "finished_at");
    wait_for("five seconds past the last attempt", || {
        jiff::Timestamp::now().as_millisecond() > last_end + 5_000
    });
    let later = sandbox.history(&["--job", "flaky"]);
    assert!(
        later.iter().all(|r| r["attempt"].as_i64().unwrap() <= 3),
        "retries stop after the last attempt: {later:?}"
    );
}

/// The packaged service runs pacerd as an unprivileged user holding only `CAP_SETUID`,
/// `CAP_SETGID` and `CAP_KILL`: runs still switch users, and no plugin keeps a capability.
#[test]
fn a_daemon_with_only_the_capabilities_to_switch_users() {
    if !require_root("to start the daemon as another user") || !require_tool("setpriv") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.state_for_nobody();
    let mut jobs = String::new();
    jobs += &job(
        "as-daemon",
        "testkit",
        "user = \"daemon\"",
        r#"{ action = "ids" }"#,
    );
    jobs += &job("as-itself", "testkit", "", r#"{ action = "ids" }"#);
    jobs += &job(
        "its-shell",
        "exec",
        "",
        r#"{ command = "grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status" }"#,
    );
    sandbox.write(
        "pacer.toml",
        &format!(
            "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"state/pacer.db\"\nsocket = \"state/pacer.sock\"\n{jobs}"
        ),
    );
    let _daemon = sandbox.start_wrapped(&AS_THE_UNIT);
    let ids = |name: &str| {
        let run = first_ended(&sandbox, name);
        assert_eq!(run["status"], "succeeded", "{run}");
        output_of(&sandbox, &run)
    };
    let switched = ids("as-daemon");
    assert!(switched.contains("uid 1\n"), "{switched}");
    assert!(switched.contains("gid 1\n"), "{switched}");
    let itself = ids("as-itself");
    assert!(itself.contains("uid 65534\n"), "{itself}");
    for output in [&switched, &itself] {
        for set in ["capeff", "capprm", "capamb"] {
            assert!(
                output.contains(&format!("{set} 0000000000000000\n")),
                "plugin code holds no capability: {output}"
            );
        }
    }
    let shell = ids("its-shell");
    assert_eq!(
        shell
            .lines()
            .filter(|l| l.ends_with("\t0000000000000000"))
            .count(),
        3,
        "nor does what it starts: {shell}"
    );
    let plugins = sandbox.pacer_json(&["plugins"]);
    assert!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "ok"),
        "root-owned plugins pass the permission rules: {plugins}"
    );
}

/// [`AS_THE_UNIT`] with the drop-in of "Jobs as root" (docs/operations.md): root's power over
/// files granted too, and a bounding set of these six alone, as systemd sets it. Unlike the
/// unit, nothing sets "no new privileges" here, so the test also shows that the worker does.
const AS_THE_UNIT_WITH_ROOT_JOBS: [&str; 7] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=+setuid,+setgid,+kill,+dac_override,+chown,+fowner",
    "--ambient-caps=+setuid,+setgid,+kill,+dac_override,+chown,+fowner",
    "--bounding-set=-all,+setuid,+setgid,+kill,+dac_override,+chown,+fowner",
];

/// The capability lines of `/proc/self/status` as the testkit's `ids` prints them.
fn capabilities(ids: &str) -> BTreeMap<&str, &str> {
    ids.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(key, _)| key.starts_with("cap") || *key == "nonewprivs")
        .collect()
}

/// A run keeps none of the capabilities pacerd holds to manage runs (`CAP_SETUID`, `CAP_SETGID`,
/// `CAP_KILL`), whatever its user: a switch to root would otherwise raise them all to effective,
/// and every program it started would get them back from the bounding set. A run as root keeps
/// only what the drop-in grants for it, root's power over files, which it can use.
#[test]
fn no_run_keeps_the_capabilities_of_the_daemon() {
    if !require_root("starting the daemon as another user") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.state_for_nobody();
    // Readable by `daemon` alone: a run as root reads it only with CAP_DAC_OVERRIDE.
    let private = sandbox.write("private", "only daemon reads this\n");
    std::os::unix::fs::chown(&private, Some(1), Some(1)).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let status_lines = r#"{ command = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status" }"#;
    let mut jobs = String::new();
    for (name, user) in [
        ("root", "user = \"root\""),
        ("daemon", "user = \"daemon\""),
        ("itself", ""),
    ] {
        jobs += &job(
            &format!("ids-{name}"),
            "testkit",
            user,
            r#"{ action = "ids" }"#,
        );
        jobs += &job(&format!("shell-{name}"), "exec", user, status_lines);
    }
    jobs += &job(
        "root-files",
        "exec",
        "user = \"root\"",
        r#"{ command = "cat private && cp private copy && chown daemon:daemon copy && chmod 0640 copy && stat -c '%U:%G %a' copy" }"#,
    );
    sandbox.write(
        "pacer.toml",
        &format!(
            "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"state/pacer.db\"\nsocket = \"state/pacer.sock\"\n{jobs}"
        ),
    );
    let _daemon = sandbox.start_wrapped(&AS_THE_UNIT_WITH_ROOT_JOBS);
    // What the run printed, without exec's line naming the command.
    let output = |name: &str| {
        let run = first_ended(&sandbox, name);
        assert_eq!(run["status"], "succeeded", "{run}");
        output_of(&sandbox, &run)
            .lines()
            .filter(|line| !line.starts_with("[info] running "))
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    };
    // CAP_CHOWN (0), CAP_DAC_OVERRIDE (1), CAP_FOWNER (3); the bounding set adds CAP_KILL (5),
    // CAP_SETGID (6), CAP_SETUID (7).
    let (granted, none, bounding) = ("000000000000000b", "0000000000000000", "00000000000000eb");
    let root = output("ids-root");
    assert!(root.contains("uid 0\n"), "{root}");
    assert_eq!(
        capabilities(&root),
        BTreeMap::from([
            ("capeff", granted),
            ("capprm", granted),
            ("capinh", none),
            ("capamb", none),
            ("capbnd", bounding),
            ("nonewprivs", "1"),
        ]),
        "{root}"
    );
    assert_eq!(
        output("shell-root"),
        format!(
            "CapInh:\t{none}\nCapPrm:\t{granted}\nCapEff:\t{granted}\nCapBnd:\t{bounding}\nCapAmb:\t{none}\nNoNewPrivs:\t1\n"
        ),
        "what a run as root starts gains nothing from the bounding set"
    );
    for name in ["daemon", "itself"] {
        let ids = output(&format!("ids-{name}"));
        for set in ["capeff", "capprm", "capinh", "capamb"] {
            assert_eq!(capabilities(&ids)[set], none, "{name}: {ids}");
        }
        let shell = output(&format!("shell-{name}"));
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert!(
                shell.contains(&format!("{set}:\t{none}\n")),
                "{name}: {shell}"
            );
        }
    }
    assert_eq!(
        output("root-files"),
        "only daemon reads this\ndaemon:daemon 640\n",
        "a run as root reads, chowns and chmods other users' files"
    );
}

/// Without that drop-in, a run as root would be root in name only: the daemon refuses such a
/// job, and `pacer check`, run by root, says so as well, since it judges `user` by the daemon's
/// privileges rather than its own.
#[test]
fn a_daemon_that_cannot_give_root_refuses_root_jobs_and_check_agrees() {
    if !require_root("starting the daemon as another user") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.state_for_nobody();
    let daemon_table = "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"state/pacer.db\"\nsocket = \"state/pacer.sock\"\n";
    let as_daemon = job(
        "as-daemon",
        "exec",
        "user = \"daemon\"",
        r#"{ command = "true" }"#,
    );
    let as_root = job(
        "as-root",
        "exec",
        "user = \"root\"",
        r#"{ command = "true" }"#,
    );
    sandbox.write("pacer.toml", &format!("{daemon_table}{as_daemon}"));
    let _daemon = sandbox.start_wrapped(&AS_THE_UNIT);
    assert_eq!(sandbox.pacer(["check"]).code, 0);
    sandbox.write("pacer.toml", &format!("{daemon_table}{as_daemon}{as_root}"));
    let refusal = "user = \"root\" runs the job as root, which needs pacerd to run as root or to \
                   hold CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER";
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    assert!(
        check.json()[0]["error"]
            .as_str()
            .is_some_and(|error| error.contains(refusal)),
        "{check}"
    );
    let reload = sandbox.pacer(["reload"]);
    assert_eq!(reload.code, 1, "{reload}");
    assert!(reload.stderr.contains(refusal), "{reload}");
    let jobs = sandbox.pacer_json(&["jobs"]);
    assert_eq!(
        jobs.as_array().unwrap().len(),
        1,
        "the old config stays: {jobs}"
    );
}
