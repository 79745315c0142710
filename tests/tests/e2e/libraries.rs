//! Plugin libraries: bad ones are refused (once, with the reason) while the daemon goes on;
//! good ones come, are replaced and go without a restart; a root daemon refuses code others
//! could change.

use std::path::{Path, PathBuf};

use pacer_tests::{
    Sandbox, compile_c_plugin, require_root, require_tool, text, wait_for, wait_until,
};
use serde_json::Value;

/// A C plugin declaring `name`, `version` and `abi`; its run prints `hello from NAME VERSION`.
fn c_plugin(name: &str, version: &str, abi: u32, run: bool) -> String {
    format!(
        r#"
#include <stdio.h>
#include "pacer_plugin.h"
static int32_t run(const pacer_host_api *api, pacer_host *h, const char *params, size_t len) {{
    (void)api; (void)h; (void)params; (void)len;
    printf("hello from {name} {version}\n");
    return 0;
}}
static const pacer_plugin_v1 descriptor = {{ {abi}, "{name}", "{version}", NULL, {run_fn} }};
const pacer_plugin_v1 *pacer_plugin_entry_v1(void) {{ (void)run; return &descriptor; }}
"#,
        run_fn = if run { "run" } else { "NULL" },
    )
}

fn build(sandbox: &Sandbox, stem: &str, source: &str) -> PathBuf {
    let dir = sandbox.path().join("build");
    std::fs::create_dir_all(&dir).unwrap();
    compile_c_plugin(source, stem, &dir)
}

fn plugin_at<'a>(plugins: &'a Value, path: &Path) -> &'a Value {
    plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"].as_str() == Some(path.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} is not listed: {plugins}", path.display()))
}

#[test]
fn bad_libraries_are_refused_once_and_the_daemon_goes_on() {
    if !require_tool("gcc") {
        return;
    }
    let sandbox = Sandbox::new();
    let plugins = sandbox.plugins();
    let good = build(&sandbox, "good", &c_plugin("good", "1.0.0", 1, true));
    let install = |stem: &str, source: &str| {
        let library = build(&sandbox, stem, source);
        let target = plugins.join(format!("lib{stem}.so"));
        std::fs::rename(&library, &target).unwrap();
        target
    };
    let no_entry = install("noentry", "int not_a_plugin(void) { return 1; }\n");
    let abi_two = install("abitwo", &c_plugin("abi-two", "1.0.0", 2, true));
    let bad_name = install("badname", &c_plugin("Bad Name", "1.0.0", 1, true));
    let dup_a = install("dup_a", &c_plugin("dup", "1.0.0", 1, true));
    let dup_b = install("dup_b", &c_plugin("dup", "2.0.0", 1, true));
    let no_run = install("norun", &c_plugin("norun", "1.0.0", 1, false));
    let text_file = plugins.join("libtext.so");
    std::fs::write(&text_file, "this is not a shared object\n").unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let half = plugins.join("libhalf.so");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let mut other_arch = bytes.clone();
    // e_machine: another architecture than this one's.
    let (other, other_name, this_name) = if cfg!(target_arch = "aarch64") {
        (62_u16, "x86_64", "aarch64")
    } else {
        (183_u16, "aarch64", std::env::consts::ARCH)
    };
    other_arch[18..20].copy_from_slice(&other.to_le_bytes());
    let arm = plugins.join("libarm.so");
    std::fs::write(&arm, other_arch).unwrap();
    let dangling = plugins.join("libgone.so");
    std::os::unix::fs::symlink("/nonexistent/libgone.so", &dangling).unwrap();
    std::fs::write(plugins.join(".libhidden.so"), "ignored: hidden").unwrap();
    std::fs::write(plugins.join("notes.txt"), "ignored: not .so").unwrap();

    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "heartbeat"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }

[[jobs]]
name = "uses-abi-two"
schedule = "* * * * * *"
plugin = "abi-two"

[[jobs]]
name = "uses-dup"
schedule = "* * * * * *"
plugin = "dup"
"#,
    );
    let daemon = sandbox.start();
    let listed = sandbox.pacer_json(&["plugins"]);
    let expect = [
        (&no_entry, "no entry symbol `pacer_plugin_entry_v1`"),
        (
            &abi_two,
            "it declares ABI version 2; this pacerd speaks version 1",
        ),
        (
            &bad_name,
            "it declares an invalid name: plugin name `Bad Name` may only hold",
        ),
        (&dup_b, "the name `dup` is already taken by "),
        (&no_run, "the descriptor's run function is NULL"),
        (
            &text_file,
            "cannot load the library: not a shared library: the file has no ELF header",
        ),
        (&half, "HALF"),
        (
            &arm,
            &format!(
                "cannot load the library: built for {other_name}; this machine is {this_name}"
            ),
        ),
        (&dangling, "cannot read "),
    ];
    for (path, reason) in expect {
        let plugin = plugin_at(&listed, path);
        assert_eq!(plugin["state"], "refused", "{plugin}");
        let error = text(plugin, "error");
        // Depending on where the cut falls, the loader reports a short file or touches a page
        // past its end (SIGBUS); either way the library is refused with the reason.
        let half_written = error.starts_with("cannot load the library: ")
            || error.starts_with("loading it killed the process with signal 7 (SIGBUS): the file is probably truncated");
        assert!(
            if reason == "HALF" {
                half_written
            } else {
                error.starts_with(reason)
            },
            "{}: `{}` should start with `{reason}`",
            path.display(),
            plugin["error"]
        );
    }
    assert!(text(plugin_at(&listed, &dup_b), "error").contains(dup_a.to_str().unwrap()));
    assert_eq!(plugin_at(&listed, &dup_a)["state"], "ok");
    assert_eq!(plugin_at(&listed, &abi_two)["abi_version"], 2);
    assert_eq!(
        listed.as_array().unwrap().len(),
        12,
        "exec, testkit and the ten above; hidden and non-.so files are ignored"
    );

    let skips = wait_until("three skipped fires of a job on a refused plugin", || {
        let runs = sandbox.history(&["--job", "uses-abi-two"]);
        (runs.len() >= 3).then_some(runs)
    });
    for run in &skips {
        // A library of another ABI version cannot be asked its name, so the job's plugin is
        // missing, and the reason points at the refused libraries.
        assert_eq!(run["status"], "skipped");
        assert_eq!(
            text(run, "error"),
            format!(
                "plugin `abi-two` is not installed: no library in plugin_dirs ({}) declares it; \
                 9 libraries there were refused (see pacer plugins)",
                sandbox.plugins().display()
            ),
        );
    }
    let dup_run = sandbox.wait_for_run(
        "a run of the first `dup`",
        &["--job", "uses-dup", "--status", "succeeded"],
    );
    let shown = sandbox.pacer_json(&["show", &dup_run["id"].to_string()]);
    assert!(
        text(&shown, "output").contains("hello from dup 1.0.0"),
        "the first library keeps the name"
    );
    let heartbeats = sandbox.history(&["--job", "heartbeat", "--status", "succeeded"]);
    assert!(heartbeats.len() >= 3, "the daemon goes on");
    let log = daemon.log();
    assert_eq!(
        log.matches(&format!("plugin library {} refused", abi_two.display()))
            .count(),
        1,
        "a refusal is logged once, not at every fire:\n{log}"
    );
}

#[test]
fn plugins_come_are_replaced_and_go_without_a_restart() {
    if !require_tool("gcc") {
        return;
    }
    let sandbox = Sandbox::new();
    let v1 = build(&sandbox, "live_v1", &c_plugin("live", "1.0.0", 1, true));
    let v2 = build(&sandbox, "live_v2", &c_plugin("live", "2.0.0", 1, true));
    let installed = sandbox.plugins().join("liblive.so");
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"live\"\nschedule = \"* * * * * *\"\nplugin = \"live\"\n",
    );
    let _daemon = sandbox.start();
    let skipped = sandbox.wait_for_run("a fire skipped for the missing plugin", &["--job", "live"]);
    assert!(text(&skipped, "error").starts_with("plugin `live` is not installed"));
    let jobs = sandbox.pacer_json(&["jobs"]);
    assert!(text(&jobs[0], "problem").starts_with("plugin `live` is not installed"));

    let output_of_newest_success = || {
        let run = sandbox
            .history(&["--job", "live", "--status", "succeeded"])
            .into_iter()
            .next()?;
        let shown = sandbox.pacer_json(&["show", &run["id"].to_string()]);
        Some(text(&shown, "output").to_owned())
    };
    // Installed the safe way: a temporary name, then a rename.
    let temp = sandbox.plugins().join(".liblive.so.tmp");
    std::fs::copy(&v1, &temp).unwrap();
    std::fs::rename(&temp, &installed).unwrap();
    wait_until("a run of version 1 without a restart", || {
        output_of_newest_success().filter(|out| out.contains("hello from live 1.0.0"))
    });
    assert_eq!(sandbox.pacer_json(&["jobs"])[0]["problem"], Value::Null);

    std::fs::copy(&v2, &temp).unwrap();
    std::fs::rename(&temp, &installed).unwrap();
    wait_until("a run of the replaced library", || {
        output_of_newest_success().filter(|out| out.contains("hello from live 2.0.0"))
    });
    let listed = sandbox.pacer_json(&["plugins"]);
    assert_eq!(plugin_at(&listed, &installed)["version"], "2.0.0");

    std::fs::remove_file(&installed).unwrap();
    let removed_at = jiff::Timestamp::now();
    wait_until("a fire skipped after the removal", || {
        sandbox.history(&["--job", "live"]).into_iter().find(|run| {
            run["status"] == "skipped"
                && text(run, "scheduled_at")
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    > removed_at
        })
    });
    let jobs = sandbox.pacer_json(&["jobs"]);
    assert!(text(&jobs[0], "problem").starts_with("plugin `live` is not installed"));
}

#[test]
fn a_root_daemon_refuses_code_others_could_change() {
    if !require_root("the permission rules apply to a daemon running as root")
        || !require_tool("gcc")
    {
        return;
    }
    let sandbox = Sandbox::new();
    let library = build(&sandbox, "strict", &c_plugin("loose", "1.0.0", 1, true));
    let loose = sandbox.plugins().join("libloose.so");
    std::fs::copy(&library, &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let foreign = sandbox.plugins().join("libforeign.so");
    std::fs::copy(
        build(&sandbox, "foreign", &c_plugin("foreign", "1.0.0", 1, true)),
        &foreign,
    )
    .unwrap();
    std::os::unix::fs::chown(&foreign, Some(65_534), None).unwrap();
    let shared = sandbox.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let in_shared = shared.join("libinshared.so");
    std::fs::copy(
        build(
            &sandbox,
            "inshared",
            &c_plugin("inshared", "1.0.0", 1, true),
        ),
        &in_shared,
    )
    .unwrap();
    sandbox.write(
        "pacer.toml",
        "[daemon]\nplugin_dirs = [\"plugins\", \"shared\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n\n[[jobs]]\nname = \"uses-loose\"\nplugin = \"loose\"\n",
    );
    let _daemon = sandbox.start();
    let listed = sandbox.pacer_json(&["plugins"]);
    let loose_error = text(plugin_at(&listed, &loose), "error").to_owned();
    assert_eq!(
        text(&sandbox.pacer_json(&["jobs"])[0], "problem"),
        format!(
            "plugin `loose` is not usable: {} was refused: {loose_error}",
            loose.display()
        ),
        "a job names the refused file and its fix"
    );
    assert_eq!(
        loose_error,
        format!(
            "the library {} is writable by group or others (mode 0666), so a user other than root could \
             change code that pacerd can run as any user; fix: chmod go-w {}",
            loose.display(),
            loose.display()
        )
    );
    assert_eq!(
        text(plugin_at(&listed, &foreign), "error"),
        format!(
            "the library {} is owned by uid 65534, not root, and pacerd can run it as any user; fix: chown root {}",
            foreign.display(),
            foreign.display()
        )
    );
    assert!(
        text(plugin_at(&listed, &in_shared), "error").starts_with(&format!(
            "its directory {} is writable by group or others (mode 0777)",
            shared.display()
        )),
        "{listed}"
    );
    for path in [&loose, &foreign, &in_shared] {
        let plugin = plugin_at(&listed, path);
        assert_eq!(plugin["state"], "refused");
        assert_eq!(
            plugin["name"],
            Value::Null,
            "a refused library is never loaded"
        );
    }
    let exec = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "exec")
        .unwrap();
    assert_eq!(
        exec["state"], "ok",
        "root-owned libraries in a root-owned directory pass"
    );

    // Permissions count as they are now: fixing or breaking them needs no restart.
    let state_of = |path: &Path| {
        plugin_at(&sandbox.pacer_json(&["plugins"]), path)["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wait_for("the fixed directory's library to be usable", || {
        state_of(&in_shared) == "ok"
    });
    let exec_library = sandbox.plugins().join("libpacer_plugin_exec.so");
    std::fs::set_permissions(
        sandbox.plugins(),
        std::os::unix::fs::PermissionsExt::from_mode(0o775),
    )
    .unwrap();
    wait_for("a library in a loosened directory to be refused", || {
        state_of(&exec_library) == "refused"
    });
}

#[test]
fn a_plugin_directory_created_later_is_watched() {
    if !require_tool("gcc") {
        return;
    }
    let sandbox = Sandbox::new();
    let library = build(&sandbox, "late", &c_plugin("late", "1.0.0", 1, true));
    sandbox.write(
        "pacer.toml",
        "[daemon]\nplugin_dirs = [\"plugins\", \"later/plugins\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n\n[[jobs]]\nname = \"late\"\nschedule = \"* * * * * *\"\nplugin = \"late\"\n",
    );
    let _daemon = sandbox.start();
    sandbox.wait_for_run("a fire skipped for the missing plugin", &["--job", "late"]);
    let dir = sandbox.path().join("later/plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let temp = dir.join(".liblate.so.tmp");
    std::fs::copy(&library, &temp).unwrap();
    std::fs::rename(&temp, dir.join("liblate.so")).unwrap();
    sandbox.wait_for_run(
        "a run from the new directory without a reload",
        &["--job", "late", "--status", "succeeded"],
    );
}
