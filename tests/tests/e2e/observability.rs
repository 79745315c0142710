//! Seeing what the daemon does: Prometheus metrics against the recorded history, chained runs,
//! `pacer why`, and `pacer history --follow`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pacer_tests::{Sandbox, artifacts, text, wait_until};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` with `extra` header lines; the response head and body.
fn get_metrics(port: u16, extra: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    (head.to_owned(), body.to_owned())
}

/// The metrics as a plain scraper (curl) gets them: the Prometheus text format.
fn scrape(port: u16) -> String {
    let (head, body) = get_metrics(port, "");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{head}"
    );
    body
}

/// The value of the sample `name{labels}` (labels as written in the exposition).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[test]
fn metrics_match_the_history() {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write_config(
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n\n[pools.slow]\nmax_concurrency = 1"),
        r#"
[[jobs]]
name = "good"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "bad"
schedule = "* * * * * *"
plugin = "exec"
pool = "slow"
params = { command = "sleep 1.5; exit 2" }
"#,
    );
    let mut daemon = sandbox.start();
    let fresh = scrape(port);
    assert!(!fresh.contains("# EOF"), "{fresh}");
    let (head, openmetrics) = get_metrics(
        port,
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    );
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    for series in [
        "pacer_in_flight{pool=\"default\"}",
        "pacer_queued{pool=\"default\"}",
        "pacer_queue_wait_seconds_count{pool=\"default\"}",
        "pacer_in_flight{pool=\"slow\"}",
        "pacer_plugins_refused",
    ] {
        assert!(
            sample(&fresh, series).is_some(),
            "{series} exists from the start:\n{fresh}"
        );
    }
    assert_eq!(
        sample(
            &fresh,
            &format!(
                "pacer_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    wait_until("runs of both jobs and a skip", || {
        let runs = sandbox.history(&["--limit", "1000"]);
        let has = |job: &str, status: &str| {
            runs.iter()
                .any(|r| r["job"] == job && r["status"] == status)
        };
        (has("good", "succeeded") && has("bad", "failed") && has("bad", "skipped")).then_some(())
    });
    for job in ["good", "bad"] {
        assert_eq!(sandbox.pacer(["pause", job]).code, 0);
    }
    wait_until("nothing in flight", || {
        (sandbox.pacer_json(&["status"])["in_flight"] == 0).then_some(())
    });
    let metrics = scrape(port);
    let runs = sandbox.history(&["--limit", "1000"]);
    let count = |job: &str, status: &str| {
        runs.iter()
            .filter(|r| r["job"] == job && r["status"] == status)
            .count() as f64
    };
    assert_eq!(
        sample(
            &metrics,
            "pacer_runs_total{job=\"good\",status=\"succeeded\"}"
        ),
        Some(count("good", "succeeded"))
    );
    assert_eq!(
        sample(&metrics, "pacer_runs_total{job=\"bad\",status=\"failed\"}"),
        Some(count("bad", "failed"))
    );
    assert_eq!(
        sample(
            &metrics,
            "pacer_skipped_total{job=\"bad\",reason=\"overlap\"}"
        ),
        Some(count("bad", "skipped"))
    );
    assert_eq!(
        sample(&metrics, "pacer_run_duration_seconds_count{job=\"good\"}"),
        Some(count("good", "succeeded"))
    );
    let started = runs.iter().filter(|r| r["started_at"].is_string()).count() as f64;
    assert_eq!(
        sample(&metrics, "pacer_schedule_lateness_seconds_count"),
        Some(started)
    );
    let newest_success = runs
        .iter()
        .find(|r| r["job"] == "good" && r["status"] == "succeeded")
        .unwrap();
    let finished = text(newest_success, "finished_at")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond() as f64
        / 1_000.0;
    let last = sample(
        &metrics,
        "pacer_last_success_timestamp_seconds{job=\"good\"}",
    )
    .unwrap();
    assert_eq!(last, finished, "the record's finished_at");
    assert!(
        metrics.contains("pacer_queue_wait_seconds_bucket{pool=\"default\",le=\"0.001\"} "),
        "{metrics}"
    );
    assert!(!metrics.contains("id=\""), "no run ids in labels");
    assert!(
        metrics.contains("# TYPE pacer_runs_total counter\n"),
        "{metrics}"
    );
    assert_eq!(
        sample(&fresh, "pacer_schedule_interval_seconds{job=\"good\"}"),
        Some(1.0),
        "from the start"
    );
    assert_eq!(
        sample(&metrics, "pacer_schedule_interval_seconds{job=\"good\"}"),
        None,
        "a paused job is not expected to succeed"
    );

    assert_eq!(daemon.stop(), Some(0));
    let _daemon = sandbox.start();
    let restarted = scrape(port);
    assert_eq!(
        sample(
            &restarted,
            "pacer_last_success_timestamp_seconds{job=\"good\"}"
        ),
        Some(last),
        "seeded from the history at start:\n{restarted}"
    );
    assert_eq!(
        sample(
            &restarted,
            "pacer_last_success_timestamp_seconds{job=\"bad\"}"
        ),
        None,
        "a job that never succeeded has no series"
    );
}

#[test]
fn a_chain_of_three_jobs() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "extract"
plugin = "exec"
on_success = ["transform"]
params = { command = "echo extracted" }

[[jobs]]
name = "transform"
plugin = "exec"
on_success = ["load"]
params = { command = "echo transform after {upstream.job} run {upstream.id}" }

[[jobs]]
name = "load"
plugin = "testkit"
params = { action = "echo" }
"#,
    );
    let _daemon = sandbox.start();
    assert_eq!(sandbox.pacer(["run", "extract", "--wait"]).code, 0);
    let load = sandbox.wait_for_run(
        "the third job of the chain",
        &["--job", "load", "--status", "succeeded"],
    );
    assert_eq!(load["trigger"], "chained");
    let transform = &sandbox.history(&["--job", "transform"])[0];
    assert_eq!(transform["trigger"], "chained");
    let shown = sandbox.pacer_json(&["show", &load["id"].to_string()]);
    assert_eq!(shown["params"]["upstream"]["job"], "transform");
    assert_eq!(shown["params"]["upstream"]["status"], "succeeded");
    assert_eq!(shown["params"]["upstream"]["id"], transform["id"]);
    let extract = &sandbox.history(&["--job", "extract"])[0];
    let transform_out = sandbox.pacer_json(&["show", &transform["id"].to_string()]);
    assert!(
        text(&transform_out, "output")
            .contains(&format!("transform after extract run {}", extract["id"])),
        "{transform_out}"
    );
}

#[test]
fn a_chain_that_loops_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"a\"\nplugin = \"exec\"\non_failure = [\"b\"]\n\n[[jobs]]\nname = \"b\"\nplugin = \"exec\"\non_success = [\"a\"]\n",
    );
    let check = sandbox.pacer(["check"]);
    assert_eq!(check.code, 1, "{check}");
    assert!(
        check.stdout.contains(
            "pacer.toml:9:15: on_failure of `a` names `b`, which leads back to `a`: chains must not form a cycle"
        ),
        "{check}"
    );
}

#[test]
fn why_explains_skipped_queued_and_paused_fires() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "max_concurrency = 1",
        r#"
[[jobs]]
name = "hog"
schedule = "* * * * * *"
plugin = "testkit"
priority = 10
params = { action = "sleep", ms = 2500 }

[[jobs]]
name = "starved"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "napping"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }
"#,
    );
    let _daemon = sandbox.start();
    assert_eq!(sandbox.pacer(["pause", "napping"]).code, 0);
    let why = |job: &str| sandbox.pacer_json(&["why", job]);
    let hog = wait_until("a skipped fire of the hog", || {
        let why = why("hog");
        why["fires"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["outcome"] == "skipped")
            .then_some(why)
    });
    let skipped = hog["fires"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["outcome"] == "skipped")
        .unwrap();
    assert!(skipped["run_id"].is_i64());
    assert!(
        text(skipped, "reason").ends_with("of `hog` is still running (overlap = \"skip\")"),
        "{skipped}"
    );
    assert!(hog["next_fire"].is_string());
    let starved = wait_until("a queued fire", || {
        let why = why("starved");
        why["fires"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["outcome"] == "queued")
            .cloned()
    });
    assert!(
        starved["run_id"].is_i64(),
        "a waiting fire is a record: {starved}"
    );
    assert!(
        text(&starved, "reason").starts_with(
            "waiting for a slot (pool `default`; 1 runs in flight of max_concurrency = 1)"
        ),
        "{starved}"
    );
    let napping = wait_until("a paused fire", || {
        let why = why("napping");
        why["fires"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["outcome"] == "paused")
            .cloned()
    });
    assert_eq!(
        napping["reason"],
        "the job was paused (pacer resume napping)"
    );
    let human = sandbox.pacer(["why", "napping"]);
    assert!(human.stdout.starts_with("napping: next fire "), "{human}");
    assert!(human.stdout.contains("(paused)"), "{human}");
    let unknown = sandbox.pacer(["why", "nope"]);
    assert_eq!(unknown.code, 1);
}

#[test]
fn history_follow_prints_runs_as_they_finish() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"tick\"\nschedule = \"* * * * * *\"\nplugin = \"testkit\"\nparams = { action = \"sleep\", ms = 300 }\n",
    );
    let _daemon = sandbox.start();
    sandbox.wait_for_run("a first run", &["--status", "succeeded"]);
    let mut follow = Command::new(&artifacts().pacer)
        .current_dir(sandbox.path())
        .args([
            "--config",
            "pacer.toml",
            "history",
            "--follow",
            "--json",
            "--limit",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("pacer history --follow printed a line");
        let run: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(run["status"], "succeeded", "only finished runs: {run}");
        assert!(run["finished_at"].is_string());
        ids.push(run["id"].as_i64().unwrap());
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in the order they finished: {ids:?}"
    );
}

#[test]
fn the_alert_rules_use_metrics_the_daemon_serves() {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write_config(
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
        "[[jobs]]\nname = \"ok\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let _daemon = sandbox.start();
    // A family without series is left out of the exposition, so let one run end first.
    sandbox.wait_for_run("a succeeded run", &["--status", "succeeded"]);
    let metrics = scrape(port);
    let rules = std::fs::read_to_string(
        artifacts()
            .workspace
            .join("packaging/prometheus/pacer-alerts.yml"),
    )
    .unwrap();
    let mut referenced = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("pacer_") {
            let family = name.trim_end_matches("_bucket");
            assert!(
                metrics.contains(&format!("# TYPE pacer_{family} ")),
                "the rules use pacer_{name}, which /metrics does not serve:\n{metrics}"
            );
            referenced += 1;
        }
    }
    assert!(referenced >= 4);
}

#[test]
fn a_chained_run_obeys_its_jobs_overlap_policy() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "shutdown_grace = \"1s\"",
        r#"
[[jobs]]
name = "upstream"
plugin = "exec"
on_success = ["slow"]
params = { command = "true" }

[[jobs]]
name = "slow"
plugin = "exec"
params = { command = "sleep 60" }
"#,
    );
    let _daemon = sandbox.start();
    assert_eq!(sandbox.pacer(["run", "upstream", "--wait"]).code, 0);
    let running = sandbox.wait_for_run(
        "the first chained run",
        &["--job", "slow", "--status", "running"],
    );
    assert_eq!(sandbox.pacer(["run", "upstream", "--wait"]).code, 0);
    let skipped = sandbox.wait_for_run(
        "the second chained fire declined",
        &["--job", "slow", "--status", "skipped"],
    );
    assert_eq!(skipped["trigger"], "chained");
    assert_eq!(
        skipped["error"],
        format!(
            "run {} of `slow` is still running (overlap = \"skip\")",
            running["id"]
        )
    );
}

#[test]
fn on_failure_fires_once_after_the_last_retry() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "flaky"
plugin = "exec"
retries = 2
retry_backoff = "200ms"
on_failure = ["notice"]
params = { command = "exit 1" }

[[jobs]]
name = "notice"
plugin = "exec"
params = { command = "echo {upstream.job} attempt failed: {upstream.error}" }
"#,
    );
    let _daemon = sandbox.start();
    assert_eq!(sandbox.pacer(["run", "flaky"]).code, 0);
    let notice = sandbox.wait_for_run("the failure notice", &["--job", "notice"]);
    let attempts = sandbox.history(&["--job", "flaky"]);
    assert_eq!(
        attempts.len(),
        3,
        "the first attempt and two retries: {attempts:?}"
    );
    let last = &attempts[0];
    assert_eq!(last["attempt"], 3);
    let shown = sandbox.pacer_json(&["show", &notice["id"].to_string()]);
    assert_eq!(
        shown["params"]["upstream"]["id"], last["id"],
        "the notice is about the last attempt, not an earlier one"
    );
    assert!(text(&notice, "scheduled_at") >= text(last, "finished_at"));
    sandbox.wait_for_run(
        "the notice to end",
        &["--job", "notice", "--status", "succeeded"],
    );
    assert_eq!(sandbox.history(&["--job", "notice"]).len(), 1);
}

#[test]
fn why_explains_a_fire_whose_plugin_is_missing() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"orphan\"\nschedule = \"* * * * * *\"\nplugin = \"ghost\"\n",
    );
    let _daemon = sandbox.start();
    let fire = wait_until("a fire skipped for its missing plugin", || {
        sandbox.pacer_json(&["why", "orphan"])["fires"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
    });
    assert_eq!(fire["outcome"], "skipped");
    assert!(fire["run_id"].is_i64(), "{fire}");
    assert!(
        text(&fire, "reason").starts_with("plugin `ghost` is not installed"),
        "{fire}"
    );
    let human = sandbox.pacer(["why", "orphan"]);
    assert!(
        human.stdout.contains("plugin `ghost` is not installed"),
        "{human}"
    );
}
