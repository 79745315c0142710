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

/// The lines the README's tour shows after `$ COMMAND`, up to the next blank line.
fn tour(readme: &str, command: &str) -> Vec<String> {
    readme
        .lines()
        .skip_while(|line| *line != format!("$ {command}"))
        .skip(1)
        .take_while(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The column titles of a table's header line.
fn titles(header: &str) -> Vec<&str> {
    header
        .split("  ")
        .map(str::trim)
        .filter(|title| !title.is_empty())
        .collect()
}

/// The README's tour of the CLI shows what the commands really print: the same columns, rows
/// aligned under them without trailing spaces, the same paging hint and status line.
#[test]
fn the_readme_tour_matches_real_output() {
    let readme =
        std::fs::read_to_string(pacer_tests::artifacts().workspace.join("README.md")).unwrap();
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"heartbeat\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = { command = \"true\" }\n",
    );
    let _daemon = sandbox.start();
    pacer_tests::wait_until("four runs", || {
        (sandbox.history(&["--status", "succeeded"]).len() >= 4).then_some(())
    });

    for command in ["jobs", "history --limit 3"] {
        let shown = tour(&readme, &format!("pacer {command}"));
        let real = sandbox.pacer(command.split(' '));
        assert_eq!(real.code, 0, "{real}");
        let real: Vec<&str> = real.stdout.lines().collect();
        assert_eq!(titles(&shown[0]), titles(real[0]), "pacer {command}");
        for line in shown
            .iter()
            .skip(1)
            .take_while(|line| !line.starts_with('('))
        {
            assert!(!line.ends_with(' '), "{line:?}");
            for title in titles(&shown[0]).iter().skip(1) {
                let at = shown[0].find(&format!("  {title}")).unwrap() + 2;
                if at >= line.len() {
                    continue; // empty cells at the end of the row
                }
                assert!(
                    line[..at].ends_with("  ") && !line[at..].starts_with(' '),
                    "README: `{line}` is not aligned under {title}"
                );
            }
        }
    }

    let shown = tour(&readme, "pacer history --limit 3");
    let real = sandbox.pacer(["history", "--limit", "3"]).stdout;
    let real: Vec<&str> = real.lines().collect();
    for (table, what) in [
        (
            &shown.iter().map(String::as_str).collect::<Vec<_>>(),
            "README",
        ),
        (&real, "real"),
    ] {
        assert_eq!(table.len(), 5, "{what}: {table:#?}");
        let oldest = table[3].split(' ').next().unwrap();
        assert_eq!(
            table[4],
            format!("(more: pacer history --limit 3 --before {oldest})"),
            "{what}"
        );
    }

    let shown = tour(&readme, "pacer status");
    let real = sandbox.pacer(["status"]).stdout;
    for line in [shown[0].as_str(), real.lines().next().unwrap()] {
        let uptime = line
            .strip_prefix("pacerd is running (pid ")
            .and_then(|rest| rest.split_once(", up "))
            .and_then(|(pid, rest)| pid.parse::<u32>().ok().and(rest.strip_suffix(')')))
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            uptime.split(' ').all(|part| {
                part.len() > 1
                    && part[..part.len() - 1].parse::<u32>().is_ok()
                    && part.ends_with(['d', 'h', 'm', 's'])
            }),
            "{line:?}"
        );
    }
}
