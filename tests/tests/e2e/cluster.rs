//! Two `pacerd` nodes on one real PostgreSQL, driven through the CLI as an operator would: each
//! fire runs once in the cluster, every run names its node, every verb works from either node,
//! and a node killed with -9 has its run abandoned while the other goes on with the schedule.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use pacer_tests::postgres::Postgres;
use pacer_tests::proxy::Proxy;
use pacer_tests::{Daemon, Sandbox, is_over, processes_of_run, text, wait_for, wait_until};
use serde_json::Value;

/// Both nodes' jobs: the same text, so the same digests. `tick` appends its run id and fire
/// instant to a ledger that both nodes' runs share.
const JOBS: &str = r#"
[[jobs]]
name = "tick"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "echo \"$PACER_RUN_ID $PACER_SCHEDULED_AT\" >> ledger" }

[[jobs]]
name = "slow"
plugin = "exec"
params = { command = "sleep 300" }

[[jobs]]
name = "quick"
plugin = "exec"
overlap = "allow"
params = { command = "echo done" }
"#;

/// Writes `NODE.toml`: its own database file and socket, the shared `[cluster]` settings with
/// a short lease, and the jobs.
fn write_node(sandbox: &Sandbox, node: &str) -> String {
    write_node_with(sandbox, node, "", JOBS)
}

/// As [`write_node`], with `extra` lines in `[daemon]` and other `jobs`.
fn write_node_with(sandbox: &Sandbox, node: &str, extra: &str, jobs: &str) -> String {
    let config = format!("{node}.toml");
    sandbox.write(
        &config,
        &format!(
            "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"{node}.db\"\n\
             socket = \"{node}.sock\"\n{extra}\n\n[cluster]\n\
             database_url_file = \"database-url\"\nnode_id = \"{node}\"\nlease_ttl = \"3s\"\n\
             heartbeat = \"500ms\"\n{jobs}"
        ),
    );
    config
}

/// Writes the database URL where every node's config points, readable by its owner alone.
fn write_url(sandbox: &Sandbox, url: &str) {
    let path = sandbox.write("database-url", url);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `pacer --config CONFIG ARGS --json`, which must succeed, parsed.
fn json(sandbox: &Sandbox, config: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = sandbox.pacer_on(config, &all);
    assert_eq!(out.code, 0, "{out}");
    out.json()
}

fn runs(sandbox: &Sandbox, config: &str, job: &str) -> Vec<Value> {
    match json(
        sandbox,
        config,
        &["history", "--job", job, "--limit", "1000"],
    ) {
        Value::Array(runs) => runs,
        other => panic!("history is not an array: {other}"),
    }
}

fn run(sandbox: &Sandbox, config: &str, id: i64) -> Value {
    json(sandbox, config, &["show", &id.to_string()])
}

/// The node `pacer nodes` lists as `name`.
fn node(sandbox: &Sandbox, config: &str, name: &str) -> Value {
    json(sandbox, config, &["nodes"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("pacer nodes does not list {name}"))
}

/// Starts a manual run of `slow` from `config`'s node and waits until it runs; its id and node.
fn start_slow(sandbox: &Sandbox, config: &str) -> (i64, String) {
    let out = sandbox.pacer_on(config, ["run", "slow", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let first: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    let id = first["id"].as_i64().unwrap();
    let running = wait_until(&format!("run {id} to start on some node"), || {
        let record = run(sandbox, config, id);
        (record["status"] == "running").then_some(record)
    });
    (id, text(&running, "node").to_owned())
}

#[test]
fn two_nodes_share_the_schedule_and_take_over_a_killed_nodes_work() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    write_url(&sandbox, &pg.url());
    let configs: BTreeMap<&str, String> = ["a", "b"]
        .into_iter()
        .map(|name| (name, write_node(&sandbox, name)))
        .collect();
    let mut daemons: BTreeMap<&str, Daemon> = configs
        .iter()
        .map(|(name, config)| (*name, sandbox.start_on(config)))
        .collect();

    // Both nodes alive, and each knows which node and database it is.
    for (name, config) in &configs {
        let status = sandbox.pacer_on(config, ["status"]);
        assert_eq!(status.code, 0, "{status}");
        assert!(status.stdout.contains(&format!("node {name}")), "{status}");
        assert!(status.stdout.contains("127.0.0.1"), "{status}");
        wait_for(&format!("{name} to be alive in pacer nodes"), || {
            node(&sandbox, &configs["a"], name)["state"] == "alive"
        });
    }

    // Fires are shared: ten seconds of `tick`, each second once, each run naming its node.
    wait_for("ten ticks over", || {
        runs(&sandbox, &configs["b"], "tick")
            .iter()
            .filter(|r| is_over(r))
            .count()
            >= 10
    });
    for tick in runs(&sandbox, &configs["a"], "tick") {
        // A run names its node; a fire that never started (waiting, or skipped for overlap on
        // a loaded machine) has none.
        let node = tick["node"].as_str();
        let started = !tick["started_at"].is_null();
        assert!(
            matches!(node, Some("a" | "b")) == started,
            "a run names its node: {tick}"
        );
    }

    // `run --wait` follows the run to its end wherever it ran.
    for config in configs.values() {
        let out = sandbox.pacer_on(config, ["run", "quick", "--wait", "--json"]);
        assert_eq!(out.code, 0, "{out}");
        let last: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "finished", "{out}");
        assert_eq!(last["status"], "succeeded", "{out}");
        let record = run(&sandbox, config, last["id"].as_i64().unwrap());
        assert!(
            matches!(record["node"].as_str(), Some("a" | "b")),
            "{record}"
        );
        // The plugin's log line comes over the worker's channel and the command's output over
        // its pipe, so their order in the output is the order they were read in.
        assert!(
            text(&record, "output").lines().any(|line| line == "done"),
            "{record}"
        );
    }

    // A run started from one node is cancelled from the other.
    let (id, ran_on) = start_slow(&sandbox, &configs["a"]);
    let other = if ran_on == "a" { "b" } else { "a" };
    let status = json(&sandbox, &configs[ran_on.as_str()], &["status"]);
    assert!(status["in_flight"].as_u64() >= Some(1), "{status}");
    assert_eq!(
        status["pools"]["default"]["in_flight"], status["in_flight"],
        "this node's runs by pool: {status}"
    );
    let jobs = json(&sandbox, &configs[other], &["jobs"]);
    let slow = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "slow")
        .unwrap();
    assert_eq!(
        slow["last_status"], "running",
        "the job's last run, on whichever node: {slow}"
    );
    let cancel = sandbox.pacer_on(&configs[other], ["cancel", &id.to_string()]);
    assert_eq!(cancel.code, 0, "{cancel}");
    let cancelled = wait_until(&format!("run {id} cancelled across nodes"), || {
        let record = run(&sandbox, &configs[other], id);
        is_over(&record).then_some(record)
    });
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // kill -9 of the node running a run: the run is abandoned within the lease, the node is
    // dead, and the survivor goes on with every fire.
    let (id, ran_on) = start_slow(&sandbox, &configs["b"]);
    let (victim, survivor) = if ran_on == "a" {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let killed = daemons.get_mut(victim).unwrap();
    killed.signal("KILL");
    killed.wait();
    let abandoned = wait_until(&format!("run {id} abandoned after kill -9"), || {
        let record = run(&sandbox, &configs[survivor], id);
        is_over(&record).then_some(record)
    });
    assert_eq!(abandoned["status"], "abandoned", "{abandoned}");
    assert_eq!(
        node(&sandbox, &configs[survivor], victim)["state"],
        "dead",
        "the killed node is dead"
    );
    let killed_at = text(&abandoned, "finished_at").to_owned();
    wait_for("the survivor to run three ticks after the kill", || {
        runs(&sandbox, &configs[survivor], "tick")
            .iter()
            .filter(|r| r["node"] == survivor && text(r, "scheduled_at") > killed_at.as_str())
            .filter(|r| r["status"] == "succeeded")
            .count()
            >= 3
    });

    // The killed node comes back at once as a new incarnation of the same id.
    daemons.insert(victim, sandbox.start_on(&configs[victim]));
    wait_for("the restarted node to be alive", || {
        node(&sandbox, &configs[survivor], victim)["state"] == "alive"
    });

    for daemon in daemons.values_mut() {
        assert_eq!(daemon.stop(), Some(0));
    }

    // Every second of the test is one record, whoever ran it, and no fire ran twice.
    let ticks = runs(&sandbox, &configs["a"], "tick");
    let mut by_instant: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for tick in &ticks {
        by_instant
            .entry(text(tick, "scheduled_at").to_owned())
            .or_default()
            .push(tick);
    }
    let doubled: Vec<_> = by_instant.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(doubled.is_empty(), "fires recorded twice: {doubled:?}");
    let instants: Vec<i64> = by_instant.keys().map(|at| millis(at)).collect();
    let gaps: Vec<_> = instants
        .windows(2)
        .filter(|pair| pair[1] - pair[0] != 1_000)
        .collect();
    assert!(gaps.is_empty(), "seconds without a record: {gaps:?}");
    let ledger = std::fs::read_to_string(sandbox.path().join("ledger")).unwrap();
    let mut executed: BTreeMap<&str, usize> = BTreeMap::new();
    for line in ledger.lines() {
        let (_, at) = line.split_once(' ').unwrap();
        *executed.entry(at).or_default() += 1;
    }
    let twice: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fires executed twice: {twice:?}");
    for tick in ticks.iter().filter(|r| r["status"] == "succeeded") {
        let at = text(tick, "scheduled_at");
        assert!(
            executed.contains_key(at),
            "a succeeded tick ran its command: {tick}"
        );
    }
}

#[test]
fn a_node_started_while_its_database_is_away_waits_for_it() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let proxy = Proxy::to_port(pg.port());
    proxy.cut();
    let sandbox = Sandbox::new();
    write_url(&sandbox, &pg.url_via(proxy.port(), ""));
    let config = write_node(&sandbox, "a");

    let mut daemon = sandbox.spawn_on(&config);
    wait_for("pacerd to say it waits for the database", || {
        daemon.log().contains("waiting for the cluster's database")
    });
    let status = sandbox.pacer_on(&config, ["status"]);
    assert_eq!(status.code, 1, "not ready while it waits: {status}");
    assert!(
        status
            .stderr
            .contains("pacerd is starting: it is joining the cluster"),
        "it says why it does not answer yet: {status}"
    );
    proxy.restore();
    wait_for("pacerd to be ready once the database is back", || {
        sandbox.pacer_on(&config, ["status"]).code == 0
    });
    assert_eq!(daemon.stop(), Some(0));

    // Asked to stop while it waits, it stops at once, without an error.
    proxy.cut();
    let mut daemon = sandbox.spawn_on(&config);
    wait_for("pacerd to wait again", || {
        daemon.log().contains("waiting for the cluster's database")
    });
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
    assert!(
        daemon.log().contains("pacerd did not start"),
        "{}",
        daemon.log()
    );
    assert!(
        !sandbox.path().join("a.sock").exists(),
        "a start that ends leaves no control socket behind"
    );

    // Cut while it runs (for less than a lease long enough to outlast the wait), it says in
    // `pacer status` why fires wait, and stops saying so once its heartbeats land again.
    let text = std::fs::read_to_string(sandbox.path().join(&config)).unwrap();
    sandbox.write(
        &config,
        &text.replace("lease_ttl = \"3s\"", "lease_ttl = \"60s\""),
    );
    proxy.restore();
    let mut daemon = sandbox.start_on(&config);
    let says = |status: &Value| {
        status["history_error"]
            .as_str()
            .is_some_and(|e| e.contains("the cluster's database"))
    };
    assert!(!says(&json(&sandbox, &config, &["status"])));
    proxy.cut();
    wait_for("pacer status to say the database cannot be reached", || {
        says(&json(&sandbox, &config, &["status"]))
    });
    proxy.restore();
    wait_for("pacer status to stop saying so", || {
        !says(&json(&sandbox, &config, &["status"]))
    });
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
}

#[test]
fn before_the_first_node_and_after_the_last_the_cli_says_so() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    write_url(&sandbox, &pg.url());
    let config = write_node(&sandbox, "a");

    let history = sandbox.pacer_on(&config, ["history"]);
    assert_eq!(history.code, 0, "{history}");
    assert_eq!(history.stdout, "no runs match\n");
    let show = sandbox.pacer_on(&config, ["show", "1"]);
    assert_eq!(show.code, 1, "{show}");
    assert!(
        show.stderr
            .contains("no run history yet in the cluster's database pacer@127.0.0.1:"),
        "{show}"
    );
    let nodes = sandbox.pacer_on(&config, ["nodes"]);
    assert_eq!(nodes.code, 0, "{nodes}");
    assert_eq!(nodes.stdout, "no node has joined the cluster yet\n");

    // The only node dies: nobody is left to declare it dead, and `nodes` says it is silent.
    let mut daemon = sandbox.start_on(&config);
    daemon.signal("KILL");
    daemon.wait();
    wait_for("the node to be silent for a lease", || {
        node(&sandbox, &config, "a")["state"] == "silent"
    });
}

#[test]
fn a_wrong_password_or_database_is_refused_at_once_not_waited_for() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    let config = write_node(&sandbox, "a");
    for (url, says) in [
        (
            pg.url().replace(pacer_tests::postgres::PASSWORD, "wrong"),
            "check the user and password in the URL",
        ),
        (
            pg.url().replace("/postgres", "/nosuch"),
            "create the database",
        ),
    ] {
        write_url(&sandbox, &url);
        let mut daemon = sandbox.spawn_on(&config);
        assert_eq!(daemon.wait(), Some(1), "{}", daemon.log());
        let log = daemon.log();
        assert!(
            log.contains("refused this node") && log.contains(says),
            "{log}"
        );
        assert!(!log.contains("waiting for the cluster's database"), "{log}");
        assert!(!log.contains("wrong@"), "the password is not shown: {log}");
    }
}

#[test]
fn a_frozen_nodes_runs_stop_themselves_before_its_peers_take_them_over() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    write_url(&sandbox, &pg.url());
    let configs: BTreeMap<&str, String> = ["a", "b"]
        .into_iter()
        .map(|name| (name, write_node(&sandbox, name)))
        .collect();
    let mut daemons: BTreeMap<&str, Daemon> = configs
        .iter()
        .map(|(name, config)| (*name, sandbox.start_on(config)))
        .collect();
    let (id, ran_on) = start_slow(&sandbox, &configs["a"]);
    let (victim, survivor) = if ran_on == "a" {
        ("a", "b")
    } else {
        ("b", "a")
    };
    wait_for("the run's processes", || {
        !processes_of(&sandbox, id).is_empty()
    });

    // SIGSTOP: the node can neither beat nor stop its runs; they stop themselves.
    let frozen = daemons.get_mut(victim).unwrap();
    frozen.signal("STOP");
    wait_until(&format!("run {id} abandoned by {survivor}"), || {
        let record = run(&sandbox, &configs[survivor], id);
        if !is_over(&record) {
            return None;
        }
        assert_eq!(record["status"], "abandoned", "{record}");
        let left = processes_of(&sandbox, id);
        assert!(
            left.is_empty(),
            "the run's processes {left:?} outlived the lease: {record}"
        );
        Some(())
    });

    // Woken, it learns that its peers count it dead, and stops with that reason.
    frozen.signal("CONT");
    assert_eq!(frozen.wait(), Some(1), "{}", frozen.log());
    assert!(
        frozen.log().contains("declared dead by its peers"),
        "{}",
        frozen.log()
    );
    daemons.insert(victim, sandbox.start_on(&configs[victim]));
    wait_for("the node to rejoin", || {
        node(&sandbox, &configs[survivor], victim)["state"] == "alive"
    });
}

#[test]
fn a_job_changed_on_one_node_is_drift_and_the_others_sit_it_out() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    write_url(&sandbox, &pg.url());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a = write_node_with(
        &sandbox,
        "a",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
        JOBS,
    );
    let b = write_node(&sandbox, "b");
    let _daemons = [sandbox.start_on(&a), sandbox.start_on(&b)];

    // b reloads a changed `tick`: the cluster follows the config loaded last.
    write_node_with(
        &sandbox,
        "b",
        "",
        &JOBS.replace("echo \\\"$PACER_RUN_ID", "echo changed \\\"$PACER_RUN_ID"),
    );
    let reload = sandbox.pacer_on(&b, ["reload"]);
    assert_eq!(reload.code, 0, "{reload}");
    let reloaded_at = jiff::Timestamp::now().as_millisecond();
    wait_for("pacer nodes to show a's drift", || {
        node(&sandbox, &b, "a")["drift"] == serde_json::json!(["tick"])
            && node(&sandbox, &b, "b")["drift"] == serde_json::json!([])
    });
    let table = sandbox.pacer_on(&a, ["nodes"]);
    assert!(table.stdout.contains("DRIFT"), "{table}");
    wait_for("a's jobs to say it sits `tick` out", || {
        json(&sandbox, &a, &["jobs"])
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["name"] == "tick")
            .is_some_and(|tick| {
                tick["problem"]
                    .as_str()
                    .is_some_and(|p| p.contains("this node proposes none of its fires"))
            })
    });
    wait_for("the drift in a's metrics", || {
        let metrics = scrape(port);
        metrics.contains("pacer_cluster_config_drift{node=\"a\"} 1")
            && metrics.contains("pacer_cluster_nodes{state=\"alive\"} 2")
    });

    // Only b runs `tick` now.
    wait_for("three ticks after the reload", || {
        runs(&sandbox, &a, "tick")
            .iter()
            .filter(|r| millis(text(r, "scheduled_at")) > reloaded_at + 2_000)
            .filter(|r| is_over(r))
            .count()
            >= 3
    });
    for tick in runs(&sandbox, &a, "tick") {
        if millis(text(&tick, "scheduled_at")) > reloaded_at + 2_000 && is_over(&tick) {
            assert_eq!(
                tick["node"], "b",
                "a sits out a job it has in another version: {tick}"
            );
        }
    }
}

/// `GET /metrics` of the listener on `port`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The live processes of run `id` of this sandbox (run ids of other tests' databases repeat).
fn processes_of(sandbox: &Sandbox, id: i64) -> Vec<u32> {
    processes_of_run(id)
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == sandbox.path())
        })
        .collect()
}

fn millis(instant: &str) -> i64 {
    instant
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{instant}: {e}"))
        .as_millisecond()
}
