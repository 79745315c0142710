//! The real daemon and CLI from the same build as this benchmark, in a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the build put `pacerd`, `pacer` and the plugins: beside this executable.
pub fn build_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating pacer-bench")?;
    let dir = exe
        .parent()
        .context("pacer-bench has no directory")?
        .to_owned();
    for needed in [
        "pacerd",
        "pacer",
        "libpacer_plugin_exec.so",
        "libpacer_testkit.so",
    ] {
        if !dir.join(needed).exists() {
            bail!(
                "{} is missing: build everything first with `cargo build --release --workspace`",
                dir.join(needed).display()
            );
        }
    }
    Ok(dir)
}

/// A daemon on a config in a temporary directory; dropping it stops it.
#[derive(Debug)]
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    build: PathBuf,
}

impl Daemon {
    /// Writes `pacer.toml` (`[daemon]` extras, then jobs), installs the exec and testkit plugins,
    /// starts `pacerd` and waits until it answers.
    pub fn start(daemon_extra: &str, jobs: &str) -> anyhow::Result<Daemon> {
        Daemon::start_on(|_| Ok(()), daemon_extra, jobs)
    }

    /// As [`Daemon::start`], after `prepare` wrote the database (its path is given).
    pub fn start_on(
        prepare: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
        daemon_extra: &str,
        jobs: &str,
    ) -> anyhow::Result<Daemon> {
        let build = build_dir()?;
        let dir = tempfile::Builder::new().prefix("pacer-bench-").tempdir()?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins)?;
        for library in ["libpacer_plugin_exec.so", "libpacer_testkit.so"] {
            std::fs::copy(build.join(library), plugins.join(library))?;
        }
        std::fs::write(
            dir.path().join("pacer.toml"),
            format!(
                "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"pacer.db\"\nsocket = \"pacer.sock\"\n{daemon_extra}\n{jobs}"
            ),
        )?;
        prepare(&dir.path().join("pacer.db"))?;
        let log = std::fs::File::create(dir.path().join("pacerd.log"))?;
        let child = Command::new(build.join("pacerd"))
            .current_dir(dir.path())
            .args(["--config", "pacer.toml"])
            .env("PACER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting pacerd")?;
        let daemon = Daemon { dir, child, build };
        daemon.wait_for("pacerd to answer", Duration::from_secs(60), |d| {
            Ok(d.pacer(&["status"]).is_ok())
        })?;
        Ok(daemon)
    }

    /// The daemon's directory (its config, database and socket).
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `pacer ARGS --json` and parses what it prints.
    pub fn pacer(&self, args: &[&str]) -> anyhow::Result<Value> {
        let output = Command::new(self.build.join("pacer"))
            .current_dir(self.dir.path())
            .args(["--config", "pacer.toml"])
            .args(args)
            .arg("--json")
            .output()?;
        if !output.status.success() {
            bail!(
                "pacer {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Every run in the history, oldest first.
    pub fn runs(&self) -> anyhow::Result<Vec<Value>> {
        let mut runs = match self.pacer(&["history", "--limit", "1000000"])? {
            Value::Array(runs) => runs,
            other => bail!("history is not a list: {other}"),
        };
        runs.reverse();
        Ok(runs)
    }

    /// How many runs have ended, read straight from the database: waiting on this costs the
    /// machine far less than listing the history every poll, which would compete with the
    /// runs being measured.
    pub fn finished(&self) -> anyhow::Result<usize> {
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join("pacer.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        db.busy_timeout(Duration::from_secs(5))?;
        let count: i64 = db.query_row(
            "SELECT count(*) FROM runs WHERE finished_at IS NOT NULL",
            [],
            |row| row.get(0),
        )?;
        Ok(usize::try_from(count)?)
    }

    /// Polls `condition` every 50 ms until it holds or `limit` passes.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&Daemon) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if condition(self)? {
                return Ok(());
            }
            if start.elapsed() > limit {
                let log =
                    std::fs::read_to_string(self.dir.path().join("pacerd.log")).unwrap_or_default();
                bail!("gave up waiting for {what} after {limit:?}; pacerd's log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time of the daemon itself (all its threads, not its children), in microseconds.
    pub fn cpu_us(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let after_name = &stat[stat.rfind(')').context("no comm in stat")? + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        // utime and stime are fields 14 and 15, in clock ticks.
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        let per_second =
            nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("no CLK_TCK")? as f64;
        Ok(ticks / per_second * 1e6)
    }

    /// Voluntary and involuntary context switches of all the daemon's threads so far.
    pub fn context_switches(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let status = std::fs::read_to_string(task?.path().join("status"))?;
            for line in status.lines() {
                if let Some(count) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    total += count.trim().parse::<u64>()?;
                }
            }
        }
        Ok(total)
    }

    /// `VmRSS` of the daemon, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .context("no VmRSS")?
            .parse()?;
        Ok(kib / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unix milliseconds of a contract instant in a run record.
pub fn ms(run: &Value, key: &str) -> Option<i64> {
    run[key]
        .as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_millisecond)
}
