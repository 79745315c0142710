//! The application API (docs/api.md): its Python example, run as written against a real
//! daemon, and the wire format it fixes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use pacer_tests::{CommandOutput, Sandbox, artifacts, text, wait_until};
use serde_json::{Value, json};

const JOBS: &str = r#"
[pools.mail]
max_concurrency = 1

[[jobs]]
name = "send-welcome"
plugin = "exec"
pool = "mail"
overlap = "allow"
params = { command = "echo welcome $TO; sleep 1" }
"#;

/// The fenced block of `docs/api.md` in `language`.
fn example(language: &str) -> String {
    let doc = std::fs::read_to_string(artifacts().workspace.join("docs/api.md")).unwrap();
    let start = doc
        .find(&format!("```{language}\n"))
        .unwrap_or_else(|| panic!("docs/api.md has a {language} example"))
        + language.len()
        + 4;
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

/// One request on the socket, as an application sends it; every answer line.
fn ask(sandbox: &Sandbox, request: &Value) -> Vec<Value> {
    let mut conn = UnixStream::connect(sandbox.path().join("pacer.sock")).unwrap();
    writeln!(conn, "{request}").unwrap();
    BufReader::new(conn)
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect()
}

#[test]
fn the_python_example_enqueues_runs_that_wait_their_turn_as_records() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", JOBS);
    let _daemon = sandbox.start();
    let socket = sandbox.path().join("pacer.sock");
    let script = example("python").replace("/run/pacer/pacer.sock", socket.to_str().unwrap());
    let run = || {
        CommandOutput::run({
            let mut python = Command::new("python3");
            python.arg("-c").arg(&script).current_dir(sandbox.path());
            python
        })
    };
    let first = run();
    assert_eq!(first.code, 0, "{first}");
    assert!(first.stdout.starts_with("started "), "{first}");
    let second = run();
    assert_eq!(second.code, 0, "{second}");
    let id: i64 = second
        .stdout
        .trim()
        .strip_prefix("queued ")
        .unwrap_or_else(|| panic!("the second waits for the pool's one slot: {second}"))
        .parse()
        .unwrap();
    let record = sandbox.pacer_json(&["show", &id.to_string()]);
    assert_eq!(
        record["status"], "queued",
        "a record before the answer: {record}"
    );
    let done = wait_until("the queued run to end", || {
        let record = sandbox.pacer_json(&["show", &id.to_string()]);
        (record["status"] == "succeeded").then_some(record)
    });
    assert!(
        text(&done, "output").ends_with("\nwelcome ada@example.com\n"),
        "the params it was given: {done}"
    );
    assert_eq!(done["trigger"], "manual");
}

#[test]
fn the_wire_format_is_versioned_and_follows_a_run_to_its_end() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", JOBS);
    let _daemon = sandbox.start();
    let answers = ask(
        &sandbox,
        &json!({"api": 1, "verb": "run", "job": "send-welcome",
                "params": {"env": {"TO": "bob"}}, "wait": true}),
    );
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["kind"], "run");
    assert_eq!(answers[0]["event"], "started");
    let id = answers[0]["id"].as_i64().unwrap();
    assert_eq!(
        answers[1],
        json!({"kind": "run", "event": "finished", "id": id, "status": "succeeded", "error": null})
    );

    let refused = ask(
        &sandbox,
        &json!({"api": 2, "verb": "run", "job": "send-welcome"}),
    );
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["kind"], "error");
    assert!(
        text(&refused[0], "message").starts_with("this pacerd speaks api 1, not 2"),
        "{refused:?}"
    );
    let unknown = ask(&sandbox, &json!({"api": 1, "verb": "run", "job": "nope"}));
    assert_eq!(unknown[0]["kind"], "error");

    let first = ask(
        &sandbox,
        &json!({"api": 1, "verb": "run", "job": "send-welcome"}),
    );
    let queued = ask(
        &sandbox,
        &json!({"verb": "run", "job": "send-welcome", "params": null}),
    );
    assert_eq!(first[0]["event"], "started", "{first:?}");
    assert_eq!(queued[0]["event"], "queued", "{queued:?}");
    let waiting = queued[0]["id"].as_i64().unwrap();
    let cancelled = ask(
        &sandbox,
        &json!({"api": 1, "verb": "cancel", "id": waiting}),
    );
    assert_eq!(
        cancelled,
        [
            json!({"kind": "done", "message": format!("run {waiting} was cancelled before it started")})
        ]
    );
    let record = sandbox.pacer_json(&["show", &waiting.to_string()]);
    assert_eq!(record["status"], "cancelled");
    assert_eq!(record["started_at"], Value::Null);
}
