//! Packaging: the `.deb`, the systemd unit, `install.sh`, and the generated completions and
//! man pages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pacer_tests::{AS_THE_UNIT, CommandOutput, Sandbox, artifacts, require_root, require_tool};

fn packaging(path: &str) -> PathBuf {
    artifacts().workspace.join("packaging").join(path)
}

fn run(mut command: Command) -> CommandOutput {
    let out = CommandOutput::run({
        command.stdin(std::process::Stdio::null());
        command
    });
    assert_eq!(out.code, 0, "{out}");
    out
}

/// The `.deb` packages, built once per test process from the binaries the suite built.
#[derive(Debug)]
pub(crate) struct Debs {
    /// `pacer`: the service.
    pub(crate) pacer: PathBuf,
    /// `pacer-dev`: the C header and the SDK crate.
    pub(crate) dev: PathBuf,
}

/// Builds both packages (once), as `cargo deb` does for a release, but from the binaries this
/// suite built (with the dev profile unless the suite runs with `--release`); `None` when the
/// calling test skips for a missing tool.
pub(crate) fn debs() -> Option<&'static Debs> {
    if !require_tool("cargo-deb") || !require_tool("dpkg-deb") || !require_tool("strip") {
        return None;
    }
    static DEBS: OnceLock<Debs> = OnceLock::new();
    Some(DEBS.get_or_init(|| {
        let target = artifacts().libraries.parent().unwrap();
        let out = target.join("e2e-debs");
        std::fs::create_dir_all(&out).unwrap();
        let build = |package: &str, deb: &Path, profile: bool| {
            let mut build =
                Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            build
                .current_dir(&artifacts().workspace)
                .env("CARGO_TARGET_DIR", target)
                .args(["deb", "-p", package, "--no-build", "--fast", "--output"])
                .arg(deb);
            if profile && !artifacts().libraries.ends_with("release") {
                build.args(["--profile", "dev"]);
            }
            let built = CommandOutput::run(build);
            assert_eq!(built.code, 0, "cargo deb failed:\n{built}");
        };
        let debs = Debs {
            pacer: out.join("pacer.deb"),
            dev: out.join("pacer-dev.deb"),
        };
        build("pacer", &debs.pacer, true);
        build("pacer-plugin-api", &debs.dev, false);
        debs
    }))
}

#[test]
fn the_deb_holds_a_complete_service() {
    let Some(debs) = debs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let deb = &debs.pacer;
    let mut list = Command::new("dpkg-deb");
    list.arg("--contents").arg(deb);
    let listing = run(list).stdout;
    let mode_of = |path: &str| -> String {
        listing
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    for binary in ["usr/bin/pacerd", "usr/bin/pacer"] {
        assert_eq!(mode_of(binary), "-rwxr-xr-x", "{binary}");
    }
    for plugin in ["exec", "files", "http", "mail", "report"] {
        assert_eq!(
            mode_of(&format!(
                "usr/lib/pacer/plugins/libpacer_plugin_{plugin}.so"
            )),
            "-rw-r--r--"
        );
    }
    for file in [
        "usr/lib/systemd/system/pacer.service",
        "usr/lib/sysusers.d/pacer.conf",
        "etc/pacer/pacer.toml",
        "usr/share/bash-completion/completions/pacer",
        "usr/share/zsh/vendor-completions/_pacer",
        "usr/share/fish/vendor_completions.d/pacer.fish",
        "usr/share/man/man1/pacer.1.gz",
        "usr/share/man/man1/pacer-history.1.gz",
        "usr/share/man/man8/pacerd.8.gz",
        "usr/share/doc/pacer/README.md",
        "usr/share/doc/pacer/configuration.md",
        "usr/share/doc/pacer/operations.md",
    ] {
        assert_eq!(mode_of(file), "-rw-r--r--", "{file}");
    }

    let control = dir.path().join("control");
    let mut extract = Command::new("dpkg-deb");
    extract.arg("--control").arg(deb).arg(&control);
    run(extract);
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/pacer/pacer.toml\n"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        !listing.contains(" ./usr/local/"),
        "Debian packages ship nothing under /usr/local:\n{listing}"
    );
    for needle in [
        "systemd-sysusers",
        "deb-systemd-helper enable pacer.service",
        "mkdir -p /etc/pacer/jobs.d",
        PLUGIN_DIR_CREATED,
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks `{needle}`:\n{postinst}"
        );
    }
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    for needle in [
        PLUGIN_DIR_REMOVED,
        "rm -rf /var/lib/pacer",
        "rmdir --ignore-fail-on-non-empty /etc/pacer/jobs.d /etc/pacer",
    ] {
        assert!(
            postrm.contains(needle),
            "postrm lacks `{needle}`:\n{postrm}"
        );
    }
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Package: pacer\n"), "{fields}");
    assert!(
        fields.contains("Depends: ") && fields.contains("systemd"),
        "{fields}"
    );
}

/// How the package's postinst creates the directory for the administrator's own plugins, and
/// how its postrm removes it.
const PLUGIN_DIR_CREATED: &str = "install -d -o root -g root -m 0755 /usr/local/lib/pacer/plugins";
const PLUGIN_DIR_REMOVED: &str =
    "rmdir --ignore-fail-on-non-empty /usr/local/lib/pacer/plugins /usr/local/lib/pacer";

#[test]
fn the_packages_pass_lintian() {
    let Some(debs) = debs() else {
        return;
    };
    if !require_tool("lintian") {
        return;
    }
    let mut lintian = Command::new("lintian");
    lintian
        .args(["--fail-on", "error,warning"])
        .arg(&debs.pacer)
        .arg(&debs.dev);
    let out = CommandOutput::run(lintian);
    let tags: Vec<&str> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|line| line.starts_with("E: ") || line.starts_with("W: "))
        .collect();
    assert!(tags.is_empty(), "lintian reports {tags:#?}\n{out}");
    assert_eq!(out.code, 0, "{out}");
}

/// The package's postinst creates `/usr/local/lib/pacer/plugins` (run here with the path moved
/// into a temporary directory), and a root daemon accepts plugins installed there.
#[test]
fn the_packaged_plugin_directory_is_one_the_daemon_accepts() {
    if !require_root("the permission rules apply to a daemon running as root") {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path().join("root");
    let moved = |line: &str| line.replace("/usr/local/", &format!("{}/usr/local/", root.display()));
    for script in ["debian/postinst", "debian/postrm"] {
        let text = std::fs::read_to_string(packaging(script)).unwrap();
        assert!(
            text.contains(PLUGIN_DIR_CREATED) || text.contains(PLUGIN_DIR_REMOVED),
            "{script}"
        );
    }
    let mut create = Command::new("sh");
    create.args(["-c", &moved(PLUGIN_DIR_CREATED)]);
    run(create);
    let plugins = root.join("usr/local/lib/pacer/plugins");
    sandbox.write(
        "pacer.toml",
        &format!(
            "[daemon]\nplugin_dirs = [\"{}\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n",
            plugins.display()
        ),
    );
    let library = artifacts().libraries.join("libpacer_plugin_exec.so");
    std::fs::copy(&library, plugins.join(".libpacer_plugin_exec.so.tmp")).unwrap();
    std::fs::rename(
        plugins.join(".libpacer_plugin_exec.so.tmp"),
        plugins.join("libpacer_plugin_exec.so"),
    )
    .unwrap();
    std::fs::set_permissions(
        plugins.join("libpacer_plugin_exec.so"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let _daemon = sandbox.start();
    let found = sandbox.pacer_json(&["plugins"]);
    assert_eq!(found[0]["name"], "exec", "{found}");
    assert_eq!(found[0]["state"], "ok", "{found}");

    std::fs::remove_file(plugins.join("libpacer_plugin_exec.so")).unwrap();
    let mut remove = Command::new("sh");
    remove.args(["-c", &moved(PLUGIN_DIR_REMOVED)]);
    run(remove);
    assert!(!root.join("usr/local/lib/pacer").exists());
}

#[test]
fn the_unit_verifies_without_a_word() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(packaging("systemd/pacer.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/pacerd "));
    // verify checks that the Exec lines' binaries exist, so this copy names the ones just built;
    // the man page it names exists only once the package is installed.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pacer.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/pacerd", artifacts().pacerd.to_str().unwrap())
            .replace(
                "/usr/bin/pacer ",
                &format!("{} ", artifacts().pacer.display()),
            ),
    )
    .unwrap();
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no"]).arg(&copy);
    let out = CommandOutput::run(verify);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        format!("{}{}", out.stdout, out.stderr),
        "",
        "verify must be silent:\n{out}"
    );
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_2_or_less() {
    if !require_tool("systemd-analyze") {
        return;
    }
    let mut analyze = Command::new("systemd-analyze");
    analyze
        .args(["security", "--offline=true"])
        .arg(packaging("systemd/pacer.service"));
    let out = CommandOutput::run(analyze);
    let exposure: f64 = out
        .stdout
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for pacer.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"))
        .parse()
        .unwrap();
    assert!(exposure <= 2.0, "exposure {exposure}:\n{out}");
    let unit = std::fs::read_to_string(packaging("systemd/pacer.service")).unwrap();
    for needed in [
        "Type=notify",
        // A reload that waits for the outcome and fails on an invalid config.
        "ExecReload=/usr/bin/pacer --config /etc/pacer/pacer.toml reload\n",
        "WatchdogSec=",
        "OOMPolicy=continue",
        "KillMode=mixed",
        "StateDirectory=pacer",
        "RuntimeDirectory=pacer",
        "ConfigurationDirectory=pacer",
        // Run-as-user jobs need these to survive the hardening.
        "AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL",
        "SystemCallFilter=@setuid",
    ] {
        assert!(unit.contains(needed), "the unit lacks `{needed}`");
    }
}

#[test]
fn install_sh_stages_a_complete_install() {
    let dir = tempfile::tempdir().unwrap();
    let stage = |dir: &Path| {
        let mut install = Command::new("sh");
        install
            .arg(packaging("install.sh"))
            .args(["--prefix", "/usr", "--no-build", "--destdir"])
            .arg(dir)
            .env("PACER_BUILD_DIR", &artifacts().libraries);
        run(install)
    };
    stage(dir.path());
    let root = dir.path();
    let mode = |path: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(root.join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/bin/pacerd"), 0o755);
    assert_eq!(mode("usr/bin/pacer"), 0o755);
    for plugin in ["exec", "files", "http", "mail", "report"] {
        assert_eq!(
            mode(&format!(
                "usr/lib/pacer/plugins/libpacer_plugin_{plugin}.so"
            )),
            0o644
        );
    }
    for file in [
        "etc/systemd/system/pacer.service",
        "etc/sysusers.d/pacer.conf",
        "etc/pacer/pacer.toml",
        "usr/share/man/man8/pacerd.8",
        "usr/share/man/man1/pacer-run.1",
        "usr/share/bash-completion/completions/pacer",
    ] {
        assert_eq!(mode(file), 0o644, "{file}");
    }
    assert!(root.join("etc/pacer/jobs.d").is_dir());
    // The default config points at the documentation, which is installed where it says.
    let config = std::fs::read_to_string(root.join("etc/pacer/pacer.toml")).unwrap();
    assert!(
        config.contains("/usr/share/doc/pacer/configuration.md"),
        "{config}"
    );
    for doc in [
        "usr/share/doc/pacer/README.md",
        "usr/share/doc/pacer/configuration.md",
        "usr/share/doc/pacer/operations.md",
        "usr/share/doc/pacer/examples/production.toml",
    ] {
        assert_eq!(mode(doc), 0o644, "{doc}");
    }
    std::fs::write(
        root.join("etc/pacer/pacer.toml"),
        "# edited by the operator\n",
    )
    .unwrap();
    let again = stage(root);
    assert!(again.stdout.contains("kept the existing"), "{again}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/pacer/pacer.toml")).unwrap(),
        "# edited by the operator\n",
        "an existing config is never replaced"
    );
    let mut to_local = Command::new("sh");
    to_local
        .arg(packaging("install.sh"))
        .args(["--no-build", "--destdir"])
        .arg(root.join("local"))
        .env("PACER_BUILD_DIR", &artifacts().libraries);
    run(to_local);
    let unit =
        std::fs::read_to_string(root.join("local/etc/systemd/system/pacer.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/pacerd "), "{unit}");
    assert!(
        unit.contains("ExecReload=/usr/local/bin/pacer --config /etc/pacer/pacer.toml reload\n"),
        "{unit}"
    );
    let config = std::fs::read_to_string(root.join("local/etc/pacer/pacer.toml")).unwrap();
    assert!(
        config.contains("/usr/local/share/doc/pacer/configuration.md")
            && root
                .join("local/usr/local/share/doc/pacer/configuration.md")
                .is_file(),
        "{config}"
    );
}

#[test]
fn completions_and_man_pages_are_current() {
    for (args, file) in [
        (vec!["completions", "bash"], "completions/pacer.bash"),
        (vec!["completions", "zsh"], "completions/_pacer"),
        (vec!["completions", "fish"], "completions/pacer.fish"),
    ] {
        let mut generate = Command::new(&artifacts().pacer);
        generate.args(&args);
        let fresh = run(generate).stdout;
        let committed = std::fs::read_to_string(packaging(file)).unwrap();
        assert!(
            fresh == committed,
            "packaging/{file} is out of date: run packaging/generate.sh"
        );
    }
    let fresh = tempfile::tempdir().unwrap();
    let mut generate = Command::new(&artifacts().pacer);
    generate.arg("manual").arg(fresh.path());
    run(generate);
    let pages = |dir: &Path| -> Vec<(String, String)> {
        let mut pages: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        pages.sort();
        pages
    };
    let committed = pages(&packaging("man"));
    assert_eq!(
        committed
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        pages(fresh.path())
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        "packaging/man holds other pages than pacer manual writes: run packaging/generate.sh"
    );
    assert!(
        committed == pages(fresh.path()),
        "packaging/man is out of date: run packaging/generate.sh"
    );
    let index = &committed
        .iter()
        .find(|(name, _)| name == "pacer.1")
        .unwrap()
        .1;
    for (name, _) in &committed {
        if let Some(verb) = name
            .strip_prefix("pacer-")
            .and_then(|n| n.strip_suffix(".1"))
        {
            assert!(
                index.contains(&format!("pacer\\-{verb}(1)")),
                "pacer(1) names {name}"
            );
        }
    }
}

/// The system calls the unit's `SystemCallFilter=` lines allow, applied in order as systemd
/// does: the first allow-list line starts the list, `~` lines take calls out, later lines put
/// them back.
fn allowed_by_unit(unit: &str) -> BTreeSet<String> {
    fn expand(item: &str, into: &mut Vec<String>) {
        if !item.starts_with('@') {
            into.push(item.to_owned());
            return;
        }
        let mut listing = Command::new("systemd-analyze");
        listing.args(["syscall-filter", item]);
        let out = run(listing);
        for line in out.stdout.lines().skip(1) {
            let name = line.trim();
            if !name.is_empty() && !name.starts_with('#') {
                expand(name, into);
            }
        }
    }
    let mut allowed = BTreeSet::new();
    for filter in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, items) = match filter.strip_prefix('~') {
            Some(items) => (true, items),
            None => (false, filter),
        };
        for item in items.split_whitespace() {
            let mut names = Vec::new();
            expand(item, &mut names);
            for name in names {
                if deny {
                    allowed.remove(&name);
                } else {
                    allowed.insert(name);
                }
            }
        }
    }
    allowed
}

#[test]
fn the_units_system_call_filter_allows_what_runs_need() {
    if !require_root("to start the daemon as the unit's user")
        || !require_tool("strace")
        || !require_tool("setpriv")
        || !require_tool("systemd-analyze")
    {
        return;
    }
    let unit = std::fs::read_to_string(packaging("systemd/pacer.service")).unwrap();
    let allowed = allowed_by_unit(&unit);
    assert!(
        allowed.contains("read") && !allowed.contains("mount"),
        "{allowed:?}"
    );

    // pacerd as the unit starts it: a user of its own holding only its capabilities, with a
    // job of its own and one switched to another user, every process traced.
    let sandbox = Sandbox::new();
    let state = sandbox.state_for_nobody();
    let job = |name: &str, user: &str| {
        format!(
            "\n[[jobs]]\nname = \"{name}\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\n{user}\nparams = {{ command = \"echo ran\" }}\n"
        )
    };
    sandbox.write(
        "pacer.toml",
        &format!(
            "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"state/pacer.db\"\nsocket = \"state/pacer.sock\"\n{}{}",
            job("as-itself", ""),
            job("as-daemon", "user = \"daemon\""),
        ),
    );
    let trace = state.join("trace");
    let mut traced_as_the_unit = AS_THE_UNIT.to_vec();
    traced_as_the_unit.extend(["strace", "-f", "-qq", "-o", trace.to_str().unwrap()]);
    let mut daemon = sandbox.start_wrapped(&traced_as_the_unit);
    for name in ["as-itself", "as-daemon"] {
        sandbox.wait_for_run(
            &format!("a run of {name}"),
            &["--job", name, "--status", "succeeded"],
        );
    }
    // Stop pacerd itself (a signal to strace would only detach it).
    let pid = sandbox.pacer_json(&["status"])["pid"].as_i64().unwrap();
    let mut stop = Command::new("kill");
    stop.args(["-TERM", &pid.to_string()]);
    run(stop);
    daemon.wait();

    let traced: BTreeSet<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let call = line.split_once(' ')?.1.trim_start();
            let call = call.strip_prefix("<... ").unwrap_or(call);
            let name: String = call
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    assert!(
        traced.contains("setuid") && traced.contains("capset"),
        "the trace covers switching users and dropping capabilities: {traced:?}"
    );
    let denied: Vec<&String> = traced.difference(&allowed).collect();
    assert!(
        denied.is_empty(),
        "pacerd, its workers or their commands made system calls the unit's filter denies: {denied:?}"
    );
}
