//! Packaging: the `.deb`, the systemd unit, `install.sh`, and the generated completions and
//! man pages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pacer_tests::{AS_THE_UNIT, CommandOutput, Sandbox, artifacts, running_as_root};

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

/// The `.deb` of the binaries and plugins under test, built once per test process (into
/// `target/debian/`) for every test that needs it.
pub(crate) fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let target = artifacts().libraries.parent().unwrap();
        let deb = target.join("debian/pacer-e2e.deb");
        let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        build
            .current_dir(&artifacts().workspace)
            .env("CARGO_TARGET_DIR", target)
            .args([
                "deb",
                "-p",
                "pacer",
                "--no-build",
                "--fast",
                // A debug build's symbols take minutes to compress on a loaded machine.
                "--strip",
                "--output",
            ])
            .arg(&deb);
        // The tests pack the binaries the suite already built; a release package is built the
        // same way after `cargo build --release --workspace`.
        if !artifacts().libraries.ends_with("release") {
            build.args(["--profile", "dev"]);
        }
        let built = CommandOutput::run(build);
        assert_eq!(
            built.code, 0,
            "cargo deb failed (install it with `cargo install cargo-deb --version 3.8.0 --locked`, as .ci/run does):\n{built}"
        );
        deb
    })
}

#[test]
fn the_deb_holds_a_complete_service() {
    let dir = tempfile::tempdir().unwrap();
    let package = deb();

    let mut list = Command::new("dpkg-deb");
    list.arg("--contents").arg(package);
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
    extract.arg("--control").arg(package).arg(&control);
    run(extract);
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/pacer/pacer.toml\n"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    for needle in [
        "systemd-sysusers",
        "deb-systemd-helper enable pacer.service",
        "mkdir -p /etc/pacer/jobs.d",
    ] {
        assert!(
            postinst.contains(needle),
            "postinst lacks `{needle}`:\n{postinst}"
        );
    }
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    for needle in [
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

#[test]
fn the_unit_verifies_without_a_word() {
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
    if !running_as_root() || Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: needs root and strace (CI installs it)");
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
