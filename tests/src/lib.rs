//! Helpers for the end-to-end tests: build the real binaries and plugins once, start `pacerd`
//! on a config in a temporary directory, drive `pacer`, and wait for conditions with deadlines.
//!
//! Every helper that fails says what it ran and shows the daemon's log, so a failure on a loaded
//! CI machine can be read without rerunning it.
#![allow(
    clippy::unwrap_used,
    reason = "test support: a panic here is the test's failure report"
)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod history;
pub mod postgres;
pub mod proxy;

/// How long any condition may take before a test fails; generous for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The plugins shipped with Pacer, by name.
pub const BUNDLED_PLUGINS: [&str; 5] = ["exec", "files", "http", "mail", "report"];

/// The binaries and plugin libraries under test.
#[derive(Debug)]
pub struct Artifacts {
    /// `pacerd`.
    pub pacerd: PathBuf,
    /// `pacer`.
    pub pacer: PathBuf,
    /// The directory holding the built plugin libraries.
    pub libraries: PathBuf,
    /// The workspace root.
    pub workspace: PathBuf,
}

/// Builds the binaries and plugins (once per test process) with the profile this test binary
/// was built with, and returns where they are.
///
/// `cargo test` builds neither other packages' binaries nor `cdylib`s, so the tests ask cargo
/// for them; when they are fresh this costs a fraction of a second.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/e2e-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps")
            .to_owned();
        let target_dir = profile_dir.parent().expect("target dir").to_owned();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace")
            .to_owned();
        let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        build
            .current_dir(&workspace)
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target_dir)
            .args(["-p", "pacer", "-p", "pacer-test-plugin"]);
        for plugin in BUNDLED_PLUGINS {
            build.args(["-p", &format!("pacer-plugin-{plugin}")]);
        }
        if profile_dir.file_name() == Some(OsStr::new("release")) {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the binaries and plugins failed: {build:?}"
        );
        Artifacts {
            pacerd: profile_dir.join("pacerd"),
            pacer: profile_dir.join("pacer"),
            libraries: profile_dir,
            workspace,
        }
    })
}

/// Compiles `source` (C) against `pacer_plugin.h` into `dir/lib<stem>.so`, as a plugin author
/// would: only the header, no Rust.
pub fn compile_c_plugin(source: &str, stem: &str, dir: &Path) -> PathBuf {
    let include = artifacts().workspace.join("plugin-api/include");
    let src = dir.join(format!("{stem}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!("lib{stem}.so"));
    let output = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .output()
        .expect("gcc runs (install gcc)");
    assert!(
        output.status.success(),
        "gcc failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(&src).unwrap();
    out
}

/// The config file a sandbox's commands name unless told otherwise.
const DEFAULT_CONFIG: &str = "pacer.toml";

/// A temporary directory holding a config, a plugin directory and the database.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A sandbox whose `plugins/` holds the exec and testkit plugins.
    pub fn new() -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::Builder::new()
                .prefix("pacer-e2e-")
                .tempdir()
                .unwrap(),
        };
        std::fs::create_dir(sandbox.plugins()).unwrap();
        for library in ["libpacer_plugin_exec.so", "libpacer_testkit.so"] {
            sandbox.install_plugin(&artifacts().libraries.join(library));
        }
        sandbox
    }

    /// The sandbox's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The plugin directory.
    pub fn plugins(&self) -> PathBuf {
        self.path().join("plugins")
    }

    /// Installs the bundled plugin `name` (`libpacer_plugin_<name>.so`) into `plugins/`.
    pub fn install_bundled(&self, name: &str) -> PathBuf {
        self.install_plugin(
            &artifacts()
                .libraries
                .join(format!("libpacer_plugin_{name}.so")),
        )
    }

    /// Copies a library into the plugin directory the safe way: a temp name, then a rename.
    pub fn install_plugin(&self, library: &Path) -> PathBuf {
        let name = library.file_name().unwrap();
        let target = self.plugins().join(name);
        let temp = self
            .plugins()
            .join(format!(".{}.tmp", name.to_string_lossy()));
        std::fs::copy(library, &temp).unwrap();
        std::fs::rename(&temp, &target).unwrap();
        target
    }

    /// Writes `pacer.toml`: a `[daemon]` table with relative paths, then `jobs`.
    pub fn write_config(&self, daemon_extra: &str, jobs: &str) -> PathBuf {
        let text = format!(
            "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n{daemon_extra}\n{jobs}"
        );
        self.write("pacer.toml", &text)
    }

    /// Writes a file in the sandbox.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `pacer --config pacer.toml ARGS` in the sandbox.
    pub fn pacer<I, S>(&self, args: I) -> CommandOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.pacer_on(DEFAULT_CONFIG, args)
    }

    /// Runs `pacer --config CONFIG ARGS` in the sandbox (several daemons, each with its own
    /// config file, can share one sandbox).
    pub fn pacer_on<I, S>(&self, config: &str, args: I) -> CommandOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&artifacts().pacer);
        command
            .current_dir(self.path())
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("PACER_CONFIG")
            .env("TZ", "UTC");
        CommandOutput::run(command)
    }

    /// Starts `pacer ARGS`, a command that runs until stopped (`history --follow`), and stops it
    /// once it has printed `count` lines, which it returns.
    pub fn pacer_lines(&self, args: &[&str], count: usize) -> Vec<String> {
        use std::io::BufRead;
        let mut child = Command::new(&artifacts().pacer)
            .current_dir(self.path())
            .args(["--config", "pacer.toml"])
            .args(args)
            .env_remove("PACER_CONFIG")
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if line.map(|line| send.send(line)).is_err() {
                    return;
                }
            }
        });
        let lines = (0..count)
            .map(|i| {
                received.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("pacer {args:?} printed {i} lines, not {count}, within {DEADLINE:?}")
                })
            })
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        lines
    }

    /// `pacer ARGS --json`, which must succeed, parsed.
    pub fn pacer_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.pacer(&all);
        assert_eq!(out.code, 0, "pacer {all:?} failed:\n{out}");
        out.json()
    }

    /// `pacer history --json ARGS`.
    pub fn history(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["history"];
        all.extend_from_slice(args);
        match self.pacer_json(&all) {
            Value::Array(runs) => runs,
            other => panic!("history is not an array: {other}"),
        }
    }

    /// Readies the sandbox for a daemon started with [`AS_THE_UNIT`]: its directories readable
    /// by all, and a `state/` directory (for the database and the socket) owned by `nobody`.
    pub fn state_for_nobody(&self) -> PathBuf {
        for dir in [self.path().to_owned(), self.plugins()] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let state = self.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(65_534), Some(65_534)).unwrap();
        state
    }

    /// Waits for a run that `pacer history ARGS` lists and returns the newest.
    pub fn wait_for_run(&self, what: &str, args: &[&str]) -> Value {
        wait_until(what, || self.history(args).into_iter().next())
    }

    /// Starts `pacerd` on `pacer.toml` and waits until it answers.
    pub fn start(&self) -> Daemon {
        let daemon = self.spawn_daemon();
        daemon.wait_ready(self);
        daemon
    }

    /// Starts `pacerd --config CONFIG` and waits until it answers.
    pub fn start_on(&self, config: &str) -> Daemon {
        let daemon = self.spawn_on(config);
        daemon.wait_ready(self);
        daemon
    }

    /// Starts `pacerd --config CONFIG` without waiting.
    pub fn spawn_on(&self, config: &str) -> Daemon {
        self.spawn(config, &[], &[])
    }

    /// Starts `pacerd` with extra environment variables and waits until it answers.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let daemon = self.spawn_daemon_with_env(env);
        daemon.wait_ready(self);
        daemon
    }

    /// Starts `pacerd` without waiting (for tests of start-up failures).
    pub fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_with_env(&[])
    }

    /// Starts `pacerd` through `wrapper` (a program and its arguments, such as `setpriv` with
    /// the options that start it as another user) and waits until it answers.
    pub fn start_wrapped(&self, wrapper: &[&str]) -> Daemon {
        let daemon = self.spawn(DEFAULT_CONFIG, wrapper, &[]);
        daemon.wait_ready(self);
        daemon
    }

    fn spawn_daemon_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.spawn(DEFAULT_CONFIG, &[], env)
    }

    fn spawn(&self, config: &str, wrapper: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = self.path().join(format!("pacerd-{}.log", unique()));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&artifacts().pacerd);
                command
            }
            None => Command::new(&artifacts().pacerd),
        };
        let child = command
            .current_dir(self.path())
            .args(["--config", config])
            .env_remove("PACER_CONFIG")
            .env("PACER_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("pacerd starts");
        Daemon {
            child: Some(child),
            log,
            config: config.to_owned(),
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A wrapper for [`Sandbox::start_wrapped`] that starts pacerd as the packaged unit does: as a
/// user of its own (here `nobody`) holding only the capabilities to run jobs as other users.
pub const AS_THE_UNIT: [&str; 6] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--inh-caps=+setuid,+setgid,+kill",
    "--ambient-caps=+setuid,+setgid,+kill",
];

/// A running `pacerd`; dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    config: String,
}

impl Daemon {
    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&self, sandbox: &Sandbox) {
        wait_for(
            &format!("pacerd to answer; its log:\n{}", self.log()),
            || sandbox.pacer_on(&self.config, ["status"]).code == 0,
        );
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.wait()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success(), "kill -{name} failed");
        }
    }

    /// Waits (with the deadline) for the daemon to exit; returns its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!(
                    "pacerd did not exit within {DEADLINE:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pacerd log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl CommandOutput {
    /// Runs `command` to completion.
    pub fn run(mut command: Command) -> CommandOutput {
        let description = format!("{command:?}");
        let Output {
            status,
            stdout,
            stderr,
        } = command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{description}: {e}"));
        CommandOutput {
            command: description,
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for CommandOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        let _ = writeln!(text, "$ {}\nexit code {}", self.command, self.code);
        let _ = writeln!(text, "--- stdout ---\n{}", self.stdout);
        let _ = write!(text, "--- stderr ---\n{}", self.stderr);
        f.write_str(&text)
    }
}

/// The pids of live processes that belong to run `id`: every process a run starts carries
/// `PACER_RUN_ID=<id>` in its environment.
pub fn processes_of_run(id: i64) -> Vec<u32> {
    let marker = format!("PACER_RUN_ID={id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let alive = std::fs::read_to_string(entry.path().join("stat"))
                .is_ok_and(|stat| !stat.contains(") Z "));
            (alive
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == marker.as_bytes()))
            .then_some(pid)
        })
        .collect()
}

/// Whether process `pid` is alive (a zombie counts as gone).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// Whether the ELF file at `path` names `libgcc_s.so.1` (a library it needs is named in its
/// dynamic string table; nothing else in these files spells that name).
pub fn names_libgcc_s(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bytes.windows(13).any(|window| window == b"libgcc_s.so.1")
}

/// Whether a test that needs `tool` (a command on `PATH`, or `cargo-NAME` for a cargo
/// subcommand) may go on. When the tool is missing the test skips, saying so on the terminal;
/// under `CI=true` nothing may skip, so a missing tool fails the test. `tests/run` installs
/// every tool the tests ask for here.
///
/// ```no_run
/// if !pacer_tests::require_tool("strace") {
///     return;
/// }
/// ```
#[must_use = "the test must return when this is false"]
pub fn require_tool(tool: &str) -> bool {
    require(
        tool_available(tool),
        &format!("`{tool}` (tests/run installs it when run as root)"),
    )
}

/// Like [`require_tool`], for a test that must run as root; `why` says what needs it.
#[must_use = "the test must return when this is false"]
pub fn require_root(why: &str) -> bool {
    require(running_as_root(), &format!("root ({why})"))
}

/// The one rule for tests with needs: go on if `available`, else skip with the reason printed,
/// or fail under `CI=true`.
fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs {what}; under CI=true no test may skip"
    );
    // Straight to the terminal: the test harness keeps what `eprintln!` prints of a passing
    // test to itself.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("skipped {test}: needs {what}\n").as_bytes(),
    );
    false
}

/// Whether `tool` is an executable on `PATH` (for `cargo-NAME`, also in cargo's own `bin`).
fn tool_available(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if tool.starts_with("cargo-") {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
        dirs.extend(cargo_home.map(|home| home.join("bin")));
    }
    dirs.iter().any(|dir| {
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Whether the tests run as root (needed to act as another user).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .and_then(|line| line.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Whether a test that needs root may go on: as root, yes; otherwise it prints that it skips
/// `what`, except under `CI=true`, where a skipped test would hide a regression, so it fails.
pub fn root_or_skip(what: &str) -> bool {
    if running_as_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root, and CI runs as root"
    );
    eprintln!("skipped: {what} needs root (CI runs as root)");
    false
}

/// Polls `condition` until it holds; fails the test after [`DEADLINE`] naming `what`.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "gave up after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `produce` until it returns `Some`, with the same deadline.
pub fn wait_until<T>(what: &str, mut produce: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = produce() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "gave up after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of a JSON object as a string (panics with the object if missing).
pub fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {value}"))
}

/// Whether a run (a history or `show` object) is over: neither waiting nor going.
pub fn is_over(run: &Value) -> bool {
    run["status"] != "queued" && run["status"] != "running"
}

/// Whether `text` is an RFC 3339 UTC instant with milliseconds, as the contract prints them.
pub fn is_contract_instant(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 24
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && bytes[23] == b'Z'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23) || b.is_ascii_digit())
}
