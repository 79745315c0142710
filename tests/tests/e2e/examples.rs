//! The shipped example configs are valid, and every bundled plugin accepts their params: what
//! `pacer check` says of them is what a user who copies them sees.

use std::path::Path;

use pacer_tests::{Sandbox, running_as_root};

/// `examples/NAME` with its `[daemon]` paths pointed at a sandbox's own.
fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    let mut in_daemon = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_daemon = line.trim() == "[daemon]";
        }
        let key = line.split('=').next().unwrap_or("").trim();
        if in_daemon && ["plugin_dirs", "database", "socket"].contains(&key) {
            continue;
        }
        if key == "user" && !running_as_root() {
            // Switching users needs root; the rest of the job is still checked.
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[daemon]" {
            out.push_str(
                "plugin_dirs = [\"plugins\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n",
            );
        }
    }
    out
}

#[test]
fn every_example_config_passes_check() {
    for name in ["pacer.toml", "production.toml"] {
        let sandbox = Sandbox::new();
        for plugin in ["files", "http", "mail", "report"] {
            sandbox.install_bundled(plugin);
        }
        sandbox.write("pacer.toml", &example(name));
        let check = sandbox.pacer(["check", "--json"]);
        assert_eq!(check.code, 0, "examples/{name}: {check}");
        let verdicts = check.json();
        let verdicts = verdicts.as_array().unwrap();
        assert!(verdicts.len() >= 3, "examples/{name}: {verdicts:?}");
        for verdict in verdicts {
            assert_eq!(
                verdict["error"],
                serde_json::Value::Null,
                "examples/{name}: {verdict}"
            );
        }
    }
}

/// The quick start (`cargo build --release`, then pacerd on `examples/pacer.toml`, whose plugin
/// directory is `target/release`) offers the bundled plugins only: the build it names builds
/// the workspace's default members, and no test plugin is among them.
#[test]
fn the_quick_start_offers_only_the_bundled_plugins() {
    let workspace = &pacer_tests::artifacts().workspace;
    let readme = std::fs::read_to_string(workspace.join("README.md")).unwrap();
    assert!(
        readme.contains(
            "```sh\ncargo build --release && target/release/pacerd --config examples/pacer.toml\n```"
        ),
        "the README's quick start"
    );
    assert!(
        example("pacer.toml").contains("plugin = \"exec\"")
            && std::fs::read_to_string(workspace.join("examples/pacer.toml"))
                .unwrap()
                .contains("plugin_dirs = [\"../target/release\"]"),
        "examples/pacer.toml takes its plugins from the build"
    );
    let mut metadata = std::process::Command::new(env!("CARGO"));
    metadata
        .current_dir(workspace)
        .args(["metadata", "--format-version", "1", "--no-deps"]);
    let metadata = pacer_tests::CommandOutput::run(metadata).json();
    let built: Vec<&str> = metadata["workspace_default_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    let mut plugins: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| built.contains(&package["id"].as_str().unwrap()))
        .filter(|package| {
            package["targets"].as_array().unwrap().iter().any(|target| {
                target["crate_types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|kind| kind == "cdylib")
            })
        })
        .map(|package| package["name"].as_str().unwrap())
        .collect();
    plugins.sort_unstable();
    let bundled: Vec<String> = pacer_tests::BUNDLED_PLUGINS
        .iter()
        .map(|name| format!("pacer-plugin-{name}"))
        .collect();
    assert_eq!(plugins, bundled);
}
