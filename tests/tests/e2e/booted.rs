//! The packaged service under a real systemd: a Debian 12 root built with `debootstrap` (once,
//! into a cache that survives between runs), booted with `systemd-nspawn`, the freshly built
//! `.deb` installed, and the service checked through `systemctl`, `journalctl` and `pacer`.
//!
//! Root only. Without the tools it skips, except under `CI=true`, where it must run: CI
//! installs `debootstrap` and `systemd-container`, and reaches deb.debian.org.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacer_tests::{CommandOutput, DEADLINE, running_as_root};
use serde_json::Value;

/// Names the cached root: change it whenever [`PACKAGES`] or the way the root is built
/// changes, and the next run builds a new one.
const ROOT_VERSION: &str = "debian-bookworm-1";

/// Installed into the root beside debootstrap's minimal base: an init, what the checks run
/// (`ps`, `ip`, `ss`, `useradd`), and D-Bus, which a booted Debian expects.
const PACKAGES: &str = "systemd,systemd-sysv,dbus,procps,iproute2,passwd";

const MIRROR: &str = "http://deb.debian.org/debian";

/// A clean `PATH` for commands in the container.
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the unit's bounding set reads in `/proc/PID/status`: CAP_KILL, CAP_SETGID, CAP_SETUID.
const UNIT_BOUNDING: &str = "00000000000000e0";

/// The drop-in of "Jobs as root" in docs/operations.md, and a watchdog short enough that the
/// test need not wait the unit's 30 s for it to fire.
const ROOT_JOBS_DROP_IN: &str = "[Service]
AmbientCapabilities=CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER
SystemCallFilter=@chown
WatchdogSec=4s
";

/// Jobs that only run when started (`pacer run`), each showing one side of the sandbox.
const JOBS: &str = r#"
[[jobs]]
name = "env"
plugin = "exec"
params = { command = "env" }

[[jobs]]
name = "caps"
plugin = "exec"
params = { command = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status" }

[[jobs]]
name = "fails"
plugin = "exec"
params = { command = "exit 3" }

[[jobs]]
name = "long"
plugin = "exec"
params = { command = "sleep 600" }

[[jobs]]
name = "sandbox"
plugin = "exec"
params = { command = "cd /var/lib/pacer && echo x > made && mkdir -p made.d && stat -c 'mode %a %n' made made.d; ip addr >/dev/null 2>&1; echo ip $?; ps -eo user= | sort -u | sed 's/^/ps-user /'; ps -eo pid= | grep -qx ' *1' && echo ps sees pid 1; true" }
"#;

/// Jobs as root, valid only with [`ROOT_JOBS_DROP_IN`].
const ROOT_JOBS: &str = r#"
[[jobs]]
name = "caps-root"
plugin = "exec"
user = "root"
params = { command = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status" }

[[jobs]]
name = "rotate"
plugin = "files"
user = "root"
params = { path = "/var/log/web", pattern = "*.1", older_than = "1d", action = "gzip" }
"#;

/// systemd's variables a job must not see (docs/plugin-exec.md lists them all).
const SERVICE_VARIABLES: [&str; 9] = [
    "SYSTEMD_EXEC_PID",
    "STATE_DIRECTORY",
    "RUNTIME_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "INVOCATION_ID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

#[test]
fn the_packaged_service_under_systemd() {
    let Some(missing) = missing_prerequisite() else {
        return run_booted_test();
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the booted test, but {missing}"
    );
    eprintln!("skipped: {missing}");
}

/// What keeps this machine from running the test, if anything.
fn missing_prerequisite() -> Option<String> {
    if !running_as_root() {
        return Some("booting a container needs root".to_owned());
    }
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is missing (apt-get install {package})"));
        }
    }
    if cgroup_mounts().is_empty() {
        return Some("no cgroup v2 hierarchy is mounted under /sys/fs/cgroup".to_owned());
    }
    None
}

fn run_booted_test() {
    let started = Instant::now();
    let Some(debs) = crate::packaging::debs() else {
        return;
    };
    let root = cached_root();
    let package = &debs.pacer;
    let prepared = started.elapsed();
    let machine = Machine::boot(&root);
    let booted = started.elapsed();

    install(&machine, package);
    reload_applies_and_a_bad_config_fails(&machine);
    runs_are_confined(&machine);
    root_jobs_with_the_drop_in(&machine);
    the_socket_group_decides_who_controls(&machine);
    a_killed_daemon_leaves_an_abandoned_run(&machine);
    the_watchdog_restarts_a_stopped_daemon(&machine);
    stops_cleanly(&machine);
    eprintln!(
        "booted test: root and package ready after {prepared:?}, booted after {booted:?}, done after {:?}",
        started.elapsed()
    );
}

/// Installing the package enables and starts the service, which says READY before systemd
/// reports it started.
fn install(machine: &Machine, package: &Path) {
    std::fs::copy(package, machine.path("/var/tmp/pacer.deb")).unwrap();
    machine.ok(&["dpkg", "-i", "/var/tmp/pacer.deb"]);
    assert_eq!(machine.property("ActiveState"), "active");
    assert_eq!(
        machine.ok(&["systemctl", "is-enabled", "pacer"]).trim(),
        "enabled"
    );
    assert_eq!(machine.property("StatusText"), "0 jobs");
    let journal = machine.journal(&[]);
    let ready = journal.find("pacerd is ready");
    let started = journal.find("Started pacer.service");
    assert!(
        ready.is_some() && ready < started,
        "READY before systemd says started:\n{journal}"
    );
}

/// `systemctl reload` runs `pacer reload`: it applies a good config, and fails on a bad one,
/// which leaves the service up on the old config.
fn reload_applies_and_a_bad_config_fails(machine: &Machine) {
    machine.write("/etc/pacer/jobs.d/test.toml", JOBS);
    machine.ok(&["systemctl", "reload", "pacer"]);
    assert_eq!(
        machine.property("StatusText"),
        "5 jobs; last reload applied"
    );
    let journal = machine.journal(&[]);
    assert!(
        journal.contains("Reloading pacer.service") && journal.contains("Reloaded pacer.service"),
        "{journal}"
    );

    // Root jobs need the drop-in, which is not there yet.
    machine.write("/etc/pacer/jobs.d/root.toml", ROOT_JOBS);
    let reload = machine.run(&["systemctl", "reload", "pacer"]);
    assert_ne!(reload.code, 0, "{reload}");
    let journal = machine.journal(&[]);
    assert!(
        journal.contains("Reload failed for pacer.service"),
        "{journal}"
    );
    assert!(
        journal.contains("user = \"root\" runs the job as root, which needs pacerd"),
        "{journal}"
    );
    assert_eq!(machine.property("ActiveState"), "active");
    assert_eq!(
        machine.property("StatusText"),
        "5 jobs; last reload failed, the previous config stays in force (pacer check shows why)"
    );
    let jobs = machine.pacer_json(&["jobs"]);
    assert_eq!(jobs.as_array().unwrap().len(), 5, "the old config: {jobs}");
    let check = machine.run(&["pacer", "check", "--json"]);
    assert_eq!(check.code, 1, "pacer check, run as root, agrees: {check}");
    assert!(
        check.stdout.contains("runs the job as root"),
        "pacer check, run as root, agrees: {check}"
    );
}

/// A job runs, is in the history, keeps none of pacerd's capabilities, sees none of systemd's
/// variables, lives in the sandbox docs/operations.md describes, and a failure reaches
/// `journalctl -p warning`.
fn runs_are_confined(machine: &Machine) {
    let env = machine.run_job("env", "succeeded");
    for name in SERVICE_VARIABLES {
        assert!(
            !env.lines()
                .any(|line| line.starts_with(&format!("{name}="))),
            "{name} reached the job:\n{env}"
        );
    }
    assert!(env.contains("PACER_JOB=env\n"), "{env}");
    let history = machine.pacer_json(&["history", "--job", "env"]);
    assert_eq!(history[0]["status"], "succeeded", "{history}");

    let caps = machine.run_job("caps", "succeeded");
    assert_eq!(
        status_lines(&caps),
        status_lines_of("0000000000000000", UNIT_BOUNDING),
        "a job without user holds none of pacerd's capabilities: {caps}"
    );

    let sandbox = machine.run_job("sandbox", "succeeded");
    for expected in [
        "mode 640 made\n",
        "mode 750 made.d\n",
        "ip 1\n",
        "ps-user pacer\n",
    ] {
        assert!(sandbox.contains(expected), "`{expected}` in:\n{sandbox}");
    }
    assert!(
        !sandbox.contains("ps-user root") && !sandbox.contains("ps sees pid 1"),
        "ps sees only the job's own processes:\n{sandbox}"
    );

    let failed = machine.run(&["pacer", "run", "fails", "--wait"]);
    assert_eq!(failed.code, 1, "{failed}");
    let warnings = machine.journal(&["-p", "warning", "JOB=fails"]);
    assert!(warnings.contains("run finished"), "{warnings}");
    let quiet = machine.journal(&["-p", "warning", "JOB=env"]);
    assert!(
        !quiet.contains("run finished"),
        "a run that succeeded is no warning: {quiet}"
    );
}

/// With the drop-in, a root job holds exactly root's power over files, which keeps the owner
/// of a log it compresses.
fn root_jobs_with_the_drop_in(machine: &Machine) {
    machine.write(
        "/etc/systemd/system/pacer.service.d/root-jobs.conf",
        ROOT_JOBS_DROP_IN,
    );
    machine.ok(&[
        "sh",
        "-c",
        "mkdir -p /var/log/web && chown root:adm /var/log/web && chmod 0750 /var/log/web \
         && echo hit > /var/log/web/access.log.1 && chown www-data:adm /var/log/web/access.log.1 \
         && chmod 0640 /var/log/web/access.log.1 && touch -d '3 days ago' /var/log/web/access.log.1",
    ]);
    machine.ok(&["systemctl", "daemon-reload"]);
    machine.ok(&["systemctl", "restart", "pacer"]);
    assert_eq!(machine.property("StatusText"), "7 jobs");
    let caps = machine.run_job("caps-root", "succeeded");
    assert_eq!(
        status_lines(&caps),
        status_lines_of("000000000000000b", "00000000000000eb"),
        "a root job holds CAP_CHOWN, CAP_DAC_OVERRIDE and CAP_FOWNER alone: {caps}"
    );
    machine.run_job("rotate", "succeeded");
    assert_eq!(
        machine
            .ok(&["stat", "-c", "%U:%G %a", "/var/log/web/access.log.1.gz"])
            .trim(),
        "www-data:adm 640"
    );
}

/// A member of the group `pacer` may use the control verbs; another user may not.
fn the_socket_group_decides_who_controls(machine: &Machine) {
    machine.ok(&["useradd", "--no-create-home", "--groups", "pacer", "alice"]);
    machine.ok(&["useradd", "--no-create-home", "bob"]);
    machine.ok(&["runuser", "-u", "alice", "--", "pacer", "pause", "fails"]);
    machine.ok(&["runuser", "-u", "alice", "--", "pacer", "resume", "fails"]);
    let refused = machine.run(&["runuser", "-u", "bob", "--", "pacer", "pause", "fails"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("Permission denied"), "{refused}");
}

/// kill -9 of the main process: systemd restarts the service, which records the run that was
/// going as abandoned, at error in the journal.
fn a_killed_daemon_leaves_an_abandoned_run(machine: &Machine) {
    let started = machine.ok(&["pacer", "run", "long"]);
    let id: i64 = started
        .trim()
        .strip_prefix("started run ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {started:?}"));
    let pid = machine.property("MainPID");
    let restarts = machine.property("NRestarts");
    machine.ok(&["kill", "-KILL", &pid]);
    machine.wait_for_restart(&pid, &restarts);
    let run = machine.pacer_json(&["show", &id.to_string()]);
    assert_eq!(run["status"], "abandoned", "{run}");
    let errors = machine.journal(&["-p", "err"]);
    assert!(errors.contains("recorded as abandoned"), "{errors}");
}

/// SIGSTOP of the main process: its watchdog pings stop, and systemd kills and restarts it.
fn the_watchdog_restarts_a_stopped_daemon(machine: &Machine) {
    let pid = machine.property("MainPID");
    let restarts = machine.property("NRestarts");
    machine.ok(&["kill", "-STOP", &pid]);
    machine.wait_for_restart(&pid, &restarts);
    let journal = machine.journal(&[]);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
}

/// `systemctl stop`: pacerd says goodbye and exits 0.
fn stops_cleanly(machine: &Machine) {
    machine.ok(&["systemctl", "stop", "pacer"]);
    assert_eq!(machine.property("ActiveState"), "inactive");
    assert_eq!(machine.property("Result"), "success");
    assert_eq!(machine.property("ExecMainStatus"), "0");
    let journal = machine.journal(&[]);
    assert!(journal.contains("pacerd stopped"), "{journal}");
}

/// The capability and `NoNewPrivs` lines of a status file, in order.
fn status_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|line| line.starts_with("Cap") || line.starts_with("NoNewPrivs"))
        .collect()
}

fn status_lines_of(held: &str, bounding: &str) -> Vec<String> {
    let none = "0000000000000000";
    vec![
        format!("CapInh:\t{none}"),
        format!("CapPrm:\t{held}"),
        format!("CapEff:\t{held}"),
        format!("CapBnd:\t{bounding}"),
        format!("CapAmb:\t{none}"),
        "NoNewPrivs:\t1".to_owned(),
    ]
}

/// The Debian root, built with debootstrap unless the cache already holds it.
///
/// The cache is `$PACER_TEST_CACHE`, else `$XDG_CACHE_HOME/pacer-tests`, else
/// `~/.cache/pacer-tests`; each run boots a copy-on-write layer over it, so it stays pristine.
fn cached_root() -> PathBuf {
    let cache = std::env::var_os("PACER_TEST_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|dir| Path::new(&dir).join("pacer-tests"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/pacer-tests"))
        })
        .expect("HOME or PACER_TEST_CACHE names a cache directory");
    let root = cache.join(ROOT_VERSION);
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    std::fs::create_dir_all(&cache).unwrap();
    // Built aside and renamed into place, so an interrupted build is never taken for a root.
    let partial = cache.join(format!("{ROOT_VERSION}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    eprintln!(
        "building the Debian root in {} (once; later runs reuse it)",
        root.display()
    );
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "bookworm",
        ])
        .arg(&partial)
        .arg(MIRROR);
    let built = timed(debootstrap, Duration::from_secs(900));
    assert_eq!(built.code, 0, "debootstrap failed:\n{built}");
    if std::fs::rename(&partial, &root).is_err() {
        // Another run finished first; its root is as good.
        let _ = std::fs::remove_dir_all(&partial);
    }
    root
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` itself, or `unified` beside v1 controllers),
/// and systemd's named v1 hierarchy (`/sys/fs/cgroup/systemd`) when there is one.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut found = Vec::new();
    let mut unified = false;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(kind), Some(options)) =
            (fields.get(1), fields.get(2), fields.get(3))
        else {
            continue;
        };
        if !point.starts_with("/sys/fs/cgroup") {
            continue;
        }
        if *kind == "cgroup2" {
            unified = true;
            found.push(PathBuf::from(point));
        } else if *kind == "cgroup" && options.split(',').any(|o| o == "name=systemd") {
            found.push(PathBuf::from(point));
        }
    }
    if unified { found } else { Vec::new() }
}

/// A booted container: its root a copy-on-write layer over the cached root, in cgroups of its
/// own. Dropping it powers it off and removes the layer and the cgroups.
struct Machine {
    /// Holds the layer (`upper/`, `work/`) and nspawn's console log.
    dir: tempfile::TempDir,
    /// The container's root as the host sees it.
    root: PathBuf,
    /// Whether `root` is an overlay mount (rather than a copy).
    mounted: bool,
    cgroups: Vec<PathBuf>,
    nspawn: Child,
    /// The container's init, as the host numbers it.
    leader: u32,
}

impl Machine {
    fn boot(cached: &Path) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix("pacer-booted-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        for sub in ["root", "upper", "work"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let mut mount = Command::new("mount");
        mount.args(["-t", "overlay", "overlay", "-o"]).arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            cached.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        ));
        let mounted = timed(mount, DEADLINE).code == 0;
        if !mounted {
            eprintln!("no overlay mount here; copying the root instead");
            let mut copy = Command::new("cp");
            copy.arg("-a")
                .arg(format!("{}/.", cached.display()))
                .arg(&root);
            let copied = timed(copy, DEADLINE);
            assert_eq!(copied.code, 0, "{copied}");
        }

        // The container's cgroups, on every hierarchy systemd in it will look at; nspawn keeps
        // its own (`--keep-unit`) and has no machined to register with (`--register=no`).
        let name = format!("pacer-booted-{}", std::process::id());
        let cgroups: Vec<PathBuf> = cgroup_mounts().iter().map(|m| m.join(&name)).collect();
        let mut join = String::new();
        for cgroup in &cgroups {
            std::fs::create_dir_all(cgroup).unwrap();
            let _ = write!(join, "echo $$ > {}/cgroup.procs && ", cgroup.display());
        }
        let console = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let nspawn = Command::new("sh")
            .arg("-c")
            .arg(format!("{join}exec \"$@\""))
            .arg("sh")
            .args(["systemd-nspawn", "--boot", "--register=no", "--keep-unit"])
            .args(["--link-journal=no", "--console=pipe", "--machine"])
            .arg(&name)
            .arg("--directory")
            .arg(&root)
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("systemd-nspawn starts");
        let mut machine = Machine {
            dir,
            root,
            mounted,
            cgroups,
            nspawn,
            leader: 0,
        };
        let nspawn_pid = machine.nspawn.id();
        machine.leader = wait_until_or(&machine, "the container's init", || init_of(nspawn_pid));
        let state = wait_until_or(&machine, "the container to finish booting", || {
            let state = machine.run(&["systemctl", "is-system-running"]);
            let state = state.stdout.trim().to_owned();
            matches!(state.as_str(), "running" | "degraded").then_some(state)
        });
        if state == "degraded" {
            eprintln!(
                "the container booted degraded:\n{}",
                machine.run(&["systemctl", "--failed", "--no-pager"]).stdout
            );
        }
        machine
    }

    /// `path` in the container, as the host reaches it.
    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Writes a file in the container (its directory created).
    fn write(&self, path: &str, text: &str) {
        let path = self.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Runs a command in the container, with a clean environment and a deadline.
    fn run(&self, args: &[&str]) -> CommandOutput {
        let mut command = Command::new("nsenter");
        command
            .args([
                "-t",
                &self.leader.to_string(),
                "-a",
                "env",
                "-i",
                PATH,
                "LANG=C.UTF-8",
            ])
            .args(args);
        timed(command, DEADLINE)
    }

    /// Runs a command in the container that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{out}");
        out.stdout
    }

    fn pacer_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["pacer"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// `pacer run JOB --wait`; the run must end with `status`. Returns what the run printed,
    /// without the line in which `exec` names the command.
    fn run_job(&self, job: &str, status: &str) -> String {
        self.run(&["pacer", "run", job, "--wait"]);
        let run = &self.pacer_json(&["history", "--job", job, "--limit", "1"])[0];
        assert_eq!(run["status"], status, "{job}: {run}");
        let shown = self.pacer_json(&["show", &run["id"].to_string()]);
        shown["output"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.starts_with("[info] running "))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// A property of the unit (`systemctl show -p NAME --value pacer`).
    fn property(&self, name: &str) -> String {
        self.ok(&["systemctl", "show", "-p", name, "--value", "pacer"])
            .trim()
            .to_owned()
    }

    /// The unit's journal of this boot, filtered by `args` (`-p warning`, `JOB=x`).
    fn journal(&self, args: &[&str]) -> String {
        let mut all = vec!["journalctl", "-u", "pacer", "-b", "--no-pager", "-o", "cat"];
        all.extend_from_slice(args);
        self.run(&all).stdout
    }

    /// Waits until systemd has restarted the service: a new main process, one more restart,
    /// active again.
    fn wait_for_restart(&self, old_pid: &str, old_restarts: &str) {
        let restarts: u32 = old_restarts.parse().unwrap();
        wait_until_or(self, "systemd to restart pacer", || {
            let pid = self.property("MainPID");
            (pid != old_pid
                && pid != "0"
                && self.property("NRestarts").parse() == Ok(restarts + 1)
                && self.property("ActiveState") == "active")
                .then_some(())
        });
    }

    /// What to read when a check fails: the unit's journal, the boot's, nspawn's console.
    fn report(&self) -> String {
        let mut report = String::new();
        if self.leader != 0 {
            let _ = writeln!(report, "--- journalctl -u pacer ---\n{}", self.journal(&[]));
            let boot = self.run(&["journalctl", "-b", "--no-pager", "-n", "150"]);
            let _ = writeln!(
                report,
                "--- journalctl -b (the last 150 lines) ---\n{}",
                boot.stdout
            );
        }
        let console =
            std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default();
        let _ = write!(report, "--- systemd-nspawn ---\n{console}");
        report
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
        // SIGTERM asks nspawn to power the container off.
        let _ = Command::new("kill")
            .args(["-TERM", &self.nspawn.id().to_string()])
            .status();
        let start = Instant::now();
        while self.nspawn.try_wait().ok().flatten().is_none() {
            if start.elapsed() > DEADLINE {
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for cgroup in &self.cgroups {
            // Whatever is left (nothing, after a clean power-off) dies with the cgroup.
            let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
            remove_cgroup(cgroup);
        }
        if self.mounted {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&self.root)
                .status();
        }
    }
}

/// The container's systemd: the child of nspawn that runs it (nspawn's first child only
/// becomes it after an exec).
fn init_of(nspawn: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let parent: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (parent == nspawn && name == "systemd").then_some(pid)
        })
}

/// Removes a cgroup and the ones nspawn and systemd made inside it, deepest first.
fn remove_cgroup(cgroup: &Path) {
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let start = Instant::now();
    // A cgroup is busy for a moment after its last process exits.
    while std::fs::remove_dir(cgroup).is_err() && cgroup.exists() && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `produce` until it returns `Some`; fails after [`DEADLINE`], naming `what`, with the
/// machine's report.
fn wait_until_or<T>(machine: &Machine, what: &str, mut produce: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = produce() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "gave up after {DEADLINE:?} waiting for {what}\n{}",
            machine.report()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `command` to completion, killing it (and failing) after `limit`.
fn timed(mut command: Command, limit: Duration) -> CommandOutput {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{description}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CommandOutput {
        command: description,
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
