//! Plugins built outside this source tree, from what the `pacer-dev` package installs, exactly
//! as docs/plugins.md says: a Rust crate whose one `path` line finds the SDK, and a C file built
//! with the header alone. Both then run under the real daemon.

use std::path::Path;
use std::process::Command;

use pacer_tests::{CommandOutput, Sandbox, artifacts, names_libgcc_s, require_tool};

use crate::packaging::debs;

/// The first fenced block of `language` after `heading` in docs/plugins.md.
fn block(guide: &str, heading: &str, language: &str) -> String {
    let section = guide
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/plugins.md has no `{heading}`"))
        .1;
    let fence = format!("```{language}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no {language} block under `{heading}`"))
        + fence.len();
    let length = section[start..].find("```").unwrap();
    section[start..start + length].to_owned()
}

fn run(command: Command) -> CommandOutput {
    let out = CommandOutput::run(command);
    assert_eq!(out.code, 0, "{out}");
    out
}

#[test]
fn plugins_build_outside_the_checkout_from_pacer_dev() {
    let Some(debs) = debs() else {
        return;
    };
    if !require_tool("gcc") {
        return;
    }
    let guide = std::fs::read_to_string(artifacts().workspace.join("docs/plugins.md")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    // The package's files, under a root of their own rather than the machine's /usr.
    let root = outside.path().join("root");
    let mut extract = Command::new("dpkg-deb");
    extract.arg("-x").arg(&debs.dev).arg(&root);
    run(extract);
    let installed = |path: &str| format!("{}{path}", root.display());
    let crates: Vec<String> = std::fs::read_dir(root.join("usr/share/cargo/registry"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        crates,
        [format!("pacer-plugin-api-{}", env!("CARGO_PKG_VERSION"))],
        "the crate's directory is named by its version, as Debian names them"
    );
    assert!(root.join("usr/include/pacer_plugin.h").is_file());

    // Rust: the guide's Cargo.toml and src/lib.rs, the SDK found under the extracted root.
    let manifest = block(&guide, "## In Rust", "toml");
    assert!(
        manifest.contains("path = \"/usr/share/cargo/registry/pacer-plugin-api-"),
        "{manifest}"
    );
    let crate_dir = outside.path().join("ping");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        manifest.replace("\"/usr/share/", &format!("\"{}", installed("/usr/share/"))),
    )
    .unwrap();
    std::fs::write(
        crate_dir.join("src/lib.rs"),
        block(&guide, "## In Rust", "rust"),
    )
    .unwrap();
    // Builds of other runs of this test are reused: the dependencies from crates.io are the
    // slow part.
    let target = artifacts()
        .libraries
        .parent()
        .unwrap()
        .join("outside-plugins");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--quiet"]);
    run(build);
    let rust_plugin = target.join("release/libpacer_plugin_ping.so");
    assert!(
        !names_libgcc_s(&rust_plugin),
        "a plugin built with the packaged SDK links its unwinder in, as pacerd's own do"
    );

    // C: the guide's source and build line; `-I` stands in for /usr/include.
    let c_dir = outside.path().join("cleanup");
    std::fs::create_dir_all(&c_dir).unwrap();
    std::fs::write(c_dir.join("cleanup.c"), block(&guide, "## In C", "c")).unwrap();
    let line = block(&guide, "## In C", "sh");
    let line = line.trim();
    assert!(
        line.starts_with("gcc ") && !line.contains("-I"),
        "the guide builds with the installed header alone: {line}"
    );
    let mut words = line.split_whitespace();
    let mut compile = Command::new(words.next().unwrap());
    compile
        .current_dir(&c_dir)
        .args(words)
        .arg("-I")
        .arg(installed("/usr/include"));
    run(compile);
    let c_plugin = c_dir.join("libpacer_plugin_cleanup.so");

    run_both(&rust_plugin, &c_plugin);
}

/// Runs the two plugins under pacerd, each with params its `validate` accepts.
fn run_both(rust_plugin: &Path, c_plugin: &Path) {
    let sandbox = Sandbox::new();
    for library in [rust_plugin, c_plugin] {
        sandbox.install_plugin(library);
    }
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"ping\"\nschedule = \"* * * * * *\"\nplugin = \"ping\"\nparams = { url = \"https://example.com\" }\n\n[[jobs]]\nname = \"cleanup\"\nschedule = \"* * * * * *\"\nplugin = \"cleanup\"\nparams = { path = \"/tmp\" }\n",
    );
    let check = sandbox.pacer(["check"]);
    assert_eq!(check.code, 0, "{check}");
    let _daemon = sandbox.start();
    for (job, says) in [
        ("ping", "pinging"),
        ("cleanup", "params: {\"path\":\"/tmp\"}"),
    ] {
        let run = sandbox.wait_for_run(
            &format!("a succeeded run of {job}"),
            &["--job", job, "--status", "succeeded"],
        );
        let shown = sandbox.pacer_json(&["show", &run["id"].to_string()]);
        let output = shown["output"].as_str().unwrap();
        assert!(output.contains(says), "{job}'s output: {output}");
    }
}

/// pacer-dev ships the manifest `cargo package` writes for the SDK crate; packaging/generate.sh
/// refreshes the copy it is built from.
#[test]
fn the_packaged_sdk_manifest_is_current() {
    let target = artifacts().libraries.parent().unwrap();
    let mut package = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    package
        .current_dir(&artifacts().workspace)
        .env("CARGO_TARGET_DIR", target)
        .args(["package", "--quiet", "-p", "pacer-plugin-api"])
        .args(["--no-verify", "--allow-dirty", "--exclude-lockfile"]);
    run(package);
    let name = format!("pacer-plugin-api-{}", env!("CARGO_PKG_VERSION"));
    let mut manifest = Command::new("tar");
    manifest
        .arg("-xzf")
        .arg(target.join(format!("package/{name}.crate")))
        .arg("-O")
        .arg(format!("{name}/Cargo.toml"));
    let fresh = run(manifest).stdout;
    let committed =
        std::fs::read_to_string(artifacts().workspace.join("packaging/sdk/Cargo.toml")).unwrap();
    assert!(
        fresh == committed,
        "packaging/sdk/Cargo.toml is out of date: run packaging/generate.sh"
    );
    let assets =
        std::fs::read_to_string(artifacts().workspace.join("plugin-api/Cargo.toml")).unwrap();
    assert!(
        assets.contains(&format!("\"usr/share/cargo/registry/{name}/\"")),
        "plugin-api/Cargo.toml installs the crate as {name}"
    );
}
