//! The rule for tests that need a tool: skip with the reason printed, except under `CI=true`,
//! where a missing tool fails the test. Checked by running this test binary's own stand-in test
//! (ignored in normal runs) with and without `CI=true`.

use std::process::Command;

use pacer_tests::{CommandOutput, require_tool};

const MISSING: &str = "pacer-test-no-such-tool";

/// Stands in for any test whose tool is missing.
#[test]
#[ignore = "run by a_missing_tool_skips_but_fails_under_ci"]
fn needs_a_missing_tool() {
    if !require_tool(MISSING) {
        return;
    }
    panic!("{MISSING} was found");
}

fn run_stand_in(ci: Option<&str>) -> CommandOutput {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--ignored",
        "--exact",
        "needs::needs_a_missing_tool",
        "--test-threads=1",
    ]);
    match ci {
        Some(value) => command.env("CI", value),
        None => command.env_remove("CI"),
    };
    CommandOutput::run(command)
}

#[test]
fn a_missing_tool_skips_but_fails_under_ci() {
    let skipped = run_stand_in(None);
    assert_eq!(skipped.code, 0, "{skipped}");
    assert!(
        skipped.stderr.contains(&format!(
            "skipped needs::needs_a_missing_tool: needs `{MISSING}`"
        )),
        "the reason is printed even though the test passed:\n{skipped}"
    );
    let failed = run_stand_in(Some("true"));
    assert_ne!(failed.code, 0, "{failed}");
    assert!(
        failed.stdout.contains("under CI=true no test may skip"),
        "{failed}"
    );
}

#[test]
fn the_readme_names_what_the_test_command_installs() {
    let workspace = &pacer_tests::artifacts().workspace;
    let script = std::fs::read_to_string(workspace.join("tests/run")).unwrap();
    let readme = std::fs::read_to_string(workspace.join("README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains("```sh tests/run ```"),
        "the README's test command"
    );
    let listed: Vec<&str> = script
        .lines()
        .skip_while(|line| !line.ends_with("_PACKAGES=(") && !line.ends_with("_TOOLS=("))
        .filter_map(|line| line.trim().strip_prefix('"')?.split(':').next())
        .collect();
    assert!(listed.contains(&"strace"), "{listed:?}");
    assert!(listed.contains(&"cargo-deb 3.8.0"), "{listed:?}");
    for need in listed {
        assert!(
            readme.contains(need),
            "README.md does not say tests/run installs {need}"
        );
    }
}
