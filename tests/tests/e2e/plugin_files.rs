//! The `files` plugin under the real daemon: scheduled runs gzip and expire aged logs in a
//! directory named relative to the config, failures carry their reason, and `pacer check`
//! names a job's bad param.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use pacer_tests::{Sandbox, text, wait_until};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

/// Writes a file in the sandbox, last modified `age` ago.
fn aged(sandbox: &Sandbox, name: &str, content: &str, age: Duration) {
    let path = sandbox.write(name, content);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// The oldest run of `job` with `status`, once there is one.
fn first_run(sandbox: &Sandbox, job: &str, status: &str) -> Value {
    wait_until(&format!("a {status} run of {job}"), || {
        sandbox.history(&["--job", job, "--status", status]).pop()
    })
}

fn output(sandbox: &Sandbox, run: &Value) -> String {
    let detail = sandbox.pacer_json(&["show", &run["id"].to_string()]);
    text(&detail, "output").to_owned()
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn scheduled_runs_gzip_and_expire_aged_logs() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("files");
    aged(&sandbox, "logs/app.log", "today\n", Duration::ZERO);
    aged(&sandbox, "logs/app.log.1", "yesterday\n", 2 * DAY);
    aged(&sandbox, "logs/app.log.2.gz", "last month\n", 40 * DAY);
    aged(
        &sandbox,
        "logs/nested/app.log.1",
        "not recursive\n",
        2 * DAY,
    );
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "compress"
schedule = "* * * * * *"
plugin = "files"
[jobs.params]
path = "logs"
pattern = "*.log.*"
older_than = "1d"
action = "gzip"

[[jobs]]
name = "expire"
schedule = "* * * * * *"
plugin = "files"
[jobs.params]
path = "logs"
pattern = "*.gz"
older_than = "30d"
action = "delete"
"#,
    );
    let _daemon = sandbox.start();

    let compressed = first_run(&sandbox, "compress", "succeeded");
    let expired = first_run(&sandbox, "expire", "succeeded");
    assert_eq!(compressed["plugin"], "files");
    assert_eq!(compressed["error"], Value::Null, "{compressed}");

    let logs = sandbox.path().join("logs");
    assert_eq!(gunzip(&logs.join("app.log.1.gz")), "yesterday\n");
    assert!(!logs.join("app.log.1").exists());
    assert!(!logs.join("app.log.2.gz").exists());
    assert_eq!(
        std::fs::read_to_string(logs.join("app.log")).unwrap(),
        "today\n"
    );
    assert!(logs.join("nested/app.log.1").exists());

    let log = output(&sandbox, &compressed);
    assert!(
        log.contains("gzipped logs/app.log.1 (10 B, modified "),
        "{log}"
    );
    assert!(log.contains(" -> logs/app.log.1.gz ("), "{log}");
    assert!(log.contains("gzipped 1 file in logs: 10 B -> "), "{log}");
    let log = output(&sandbox, &expired);
    assert!(
        log.contains("deleted logs/app.log.2.gz (11 B, modified "),
        "{log}"
    );
    assert!(log.contains("deleted 1 file (11 B) in logs"), "{log}");
}

#[test]
fn a_dry_run_only_reports() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("files");
    aged(&sandbox, "cache/stale.bin", "x", 10 * DAY);
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "preview"
schedule = "* * * * * *"
plugin = "files"
params = { path = "cache", action = "delete", dry_run = true }
"#,
    );
    let _daemon = sandbox.start();
    let run = first_run(&sandbox, "preview", "succeeded");
    let log = output(&sandbox, &run);
    assert!(
        log.contains("would delete cache/stale.bin (1 B, modified "),
        "{log}"
    );
    assert!(
        log.contains("would delete 1 file (1 B) in cache (dry run)"),
        "{log}"
    );
    assert!(sandbox.path().join("cache/stale.bin").exists());
}

#[test]
fn failures_carry_their_reason() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("files");
    aged(&sandbox, "logs/a.log", "new\n", 10 * DAY);
    aged(&sandbox, "logs/a.log.gz", "precious\n", 10 * DAY);
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "nowhere"
schedule = "* * * * * *"
plugin = "files"
params = { path = "missing", action = "delete" }

[[jobs]]
name = "conflict"
schedule = "* * * * * *"
plugin = "files"
params = { path = "logs", action = "gzip" }
"#,
    );
    let _daemon = sandbox.start();

    let run = first_run(&sandbox, "nowhere", "failed");
    assert_eq!(
        run["error"],
        "`path` missing does not exist (a relative path is taken from the directory of the \
         job's config file)"
    );

    let run = first_run(&sandbox, "conflict", "failed");
    assert_eq!(
        run["error"],
        "1 error (see the run's output); gzipped 0 files in logs: 0 B -> 0 B"
    );
    let log = output(&sandbox, &run);
    assert!(
        log.contains("not gzipping logs/a.log (4 B, modified "),
        "{log}"
    );
    assert!(
        log.contains("): logs/a.log.gz already exists and is not overwritten"),
        "{log}"
    );
    let logs = sandbox.path().join("logs");
    assert_eq!(
        std::fs::read_to_string(logs.join("a.log.gz")).unwrap(),
        "precious\n"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("a.log")).unwrap(),
        "new\n"
    );
}

#[test]
fn check_names_the_job_and_the_bad_param() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("files");
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "typo"
schedule = "@daily"
plugin = "files"
params = { path = "logs", action = "remove" }

[[jobs]]
name = "words"
schedule = "@daily"
plugin = "files"
params = { path = "logs", action = "delete", older_than = "7 days" }

[[jobs]]
name = "fine"
schedule = "@daily"
plugin = "files"
params = { path = "logs", action = "gzip", older_than = "1d12h", recursive = true }
"#,
    );
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    let verdicts = check.json();
    let verdict = |job: &str| {
        verdicts
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["job"] == job)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict for {job}: {verdicts}"))
    };
    let error = text(&verdict("typo"), "error").to_owned();
    assert!(
        error
            .ends_with("params of `typo`: `action` must be \"delete\" or \"gzip\", not \"remove\""),
        "{error}"
    );
    let error = text(&verdict("words"), "error").to_owned();
    assert!(
        error.ends_with(
            "params of `words`: `older_than`: `7 days` is not a duration such as 30m, 12h or 7d"
        ),
        "{error}"
    );
    assert_eq!(verdict("fine")["error"], Value::Null);
}
