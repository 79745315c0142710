//! A bad config never starts the daemon, and every error names its place.

use pacer_tests::Sandbox;

const BAD_JOBS: &str = r#"
[[jobs]]
name = "a"
plugin = "exec"
schedule = "61 * * * *"

[[jobs]]
name = "b"
plugin = "exec"
timezone = "Mars/Olympus"
"#;

#[test]
fn pacerd_refuses_to_start_and_names_file_line_column() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", BAD_JOBS);
    let mut daemon = sandbox.spawn_daemon();
    assert_eq!(daemon.wait(), Some(1));
    let log = daemon.log();
    assert!(
        log.contains("pacer.toml:10:12: invalid schedule `61 * * * *`: minute field `61`: `61` is out of range; values are 0-59"),
        "{log}"
    );
    assert!(
        log.contains("pacer.toml:15:12: unknown time zone `Mars/Olympus`"),
        "{log}"
    );
    assert!(!sandbox.path().join("pacer.sock").exists());
}

#[test]
fn check_lists_every_error_and_other_verbs_still_work() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", BAD_JOBS);
    let check = sandbox.pacer(["check"]);
    assert_eq!(check.code, 1, "{check}");
    assert!(
        check.stdout.contains("pacer.toml:10:12: invalid schedule"),
        "{check}"
    );
    assert!(
        check.stdout.contains("pacer.toml:15:12: unknown time zone"),
        "{check}"
    );
    let status = sandbox.pacer(["status"]);
    assert_eq!(status.stdout, "pacerd is not running\n", "{status}");
}

#[test]
fn a_syntax_error_points_at_its_place() {
    let sandbox = Sandbox::new();
    sandbox.write_config("max_concurrency = \"lots\"", "");
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    let error = check.json()[0]["error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("pacer.toml:5:19: "), "{error}");
    assert!(error.contains("expected i64"), "{error}");
}

#[test]
fn an_unknown_key_is_reported_with_every_other_error() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"a\"\nplugin = \"exec\"\ntimout = \"30s\"\nschedule = \"61 * * * *\"\n",
    );
    let expected = [
        "pacer.toml:9:1: unknown key `timout` in [[jobs]]: did you mean `timeout`?",
        "pacer.toml:10:12: invalid schedule `61 * * * *`",
    ];
    let check = sandbox.pacer(["check"]);
    assert_eq!(check.code, 1, "{check}");
    let mut daemon = sandbox.spawn_daemon();
    assert_eq!(daemon.wait(), Some(1));
    let log = daemon.log();
    for error in expected {
        assert!(check.stdout.contains(error), "{check}");
        assert!(log.contains(error), "{log}");
    }
}
