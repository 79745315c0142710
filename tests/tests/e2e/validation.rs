//! `pacer check` asks each plugin to validate all its jobs' params in one worker: that holds for
//! a hundred thousand jobs, and a plugin that crashes on one job's params is blamed for that
//! job only.

use std::fmt::Write as _;

use pacer_tests::{Sandbox, compile_c_plugin};

#[test]
fn a_hundred_thousand_jobs_validate() {
    const JOBS: usize = 100_000;
    let sandbox = Sandbox::new();
    let mut jobs = String::with_capacity(JOBS * 80);
    for i in 0..JOBS {
        let _ = writeln!(
            jobs,
            "[[jobs]]\nname = \"j{i}\"\nplugin = \"exec\"\nparams = {{ command = \"true\" }}"
        );
    }
    sandbox.write_config("", &jobs);
    // The table, not --json: parsing megabytes of JSON in a debug build would cost more than
    // the check itself.
    let out = sandbox.pacer(["check", "--next", "0"]);
    let problems: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| !line.ends_with("  ok"))
        .take(4)
        .collect();
    assert_eq!(out.code, 0, "{problems:?}\n{}", out.stderr);
    assert!(
        out.stdout.ends_with(&format!("\n{JOBS} job(s) OK\n")),
        "{problems:?}"
    );
}

const CRASH_ON_REQUEST_C: &str = r#"
#include <signal.h>
#include <string.h>
#include "pacer_plugin.h"

static int32_t validate(const pacer_host_api *api, pacer_host *h, const char *params, size_t len) {
    (void)api; (void)h; (void)len;
    if (strstr(params, "crash") != NULL) {
        raise(SIGSEGV);
    }
    return 0;
}

static int32_t run(const pacer_host_api *api, pacer_host *h, const char *params, size_t len) {
    (void)api; (void)h; (void)params; (void)len;
    return 0;
}

static const pacer_plugin_v1 descriptor = {
    PACER_ABI_VERSION, "crashy", "1.0.0", validate, run,
};

const pacer_plugin_v1 *pacer_plugin_entry_v1(void) { return &descriptor; }
"#;

#[test]
fn a_plugin_that_crashes_on_one_job_is_blamed_for_that_job_only() {
    let sandbox = Sandbox::new();
    let library = compile_c_plugin(CRASH_ON_REQUEST_C, "crashy", sandbox.path());
    sandbox.install_plugin(&library);
    let mut jobs = String::new();
    for (name, what) in [
        ("one", "fine"),
        ("two", "fine"),
        ("three", "crash"),
        ("four", "fine"),
    ] {
        let _ = writeln!(
            jobs,
            "[[jobs]]\nname = \"{name}\"\nplugin = \"crashy\"\nparams = {{ what = \"{what}\" }}"
        );
    }
    sandbox.write_config("", &jobs);
    let out = sandbox.pacer(["check", "--json"]);
    assert_eq!(out.code, 1, "{out}");
    let verdicts = out.json();
    let error = |i: usize| verdicts[i]["error"].as_str().map(str::to_owned);
    assert_eq!(error(0), None);
    assert_eq!(error(1), None);
    let three = error(2).unwrap();
    assert!(
        three.ends_with(
            "params of `three`: plugin `crashy` crashed (signal: 11 (SIGSEGV)) while validating these params"
        ),
        "{three}"
    );
    let four = error(3).unwrap();
    assert!(
        four.ends_with(
            "params of `four`: not validated: plugin `crashy` crashed (signal: 11 (SIGSEGV)) on the params of `three` before"
        ),
        "{four}"
    );
}
