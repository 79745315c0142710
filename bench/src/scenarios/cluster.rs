//! `cluster`: three nodes on one PostgreSQL (a server of its own, started as the tests start
//! theirs), 1,000 jobs due every second for 30 s (`--quick`: 100 for 5 s), each a testkit
//! `ok` run: dispatch lateness (`started_at - scheduled_at`), the fraction of due fires that
//! started, fires started twice, runs per second across the cluster, and the database's
//! committed transactions per fire (heartbeats included). The same jobs on one node with
//! SQLite give the `single_*` figures beside them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pacer_tests::postgres::Postgres;

use super::Lateness;
use crate::daemon::{Daemon, build_dir};
use crate::report::Report;

const NODES: [&str; 3] = ["a", "b", "c"];

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let (jobs, seconds) = if quick { (100, 5) } else { (1_000, 30) };
    let Some(pg) = Postgres::start() else {
        eprintln!("pacer-bench: cluster skipped: PostgreSQL is not installed");
        return Ok(());
    };
    let mut cluster = on_cluster(&pg, jobs, seconds)?;
    let mut single = on_one_node(jobs, seconds)?;
    let mut figures = Lateness::median_of(std::slice::from_mut(&mut cluster.lateness));
    figures.extend([
        ("started_twice", cluster.started_twice),
        ("runs_per_s", cluster.runs_per_s),
        ("transactions_per_fire", cluster.transactions_per_fire),
    ]);
    for (key, value) in Lateness::median_of(std::slice::from_mut(&mut single.lateness)) {
        figures.push((single_key(key), value));
    }
    figures.push(("single_runs_per_s", single.runs_per_s));
    report.add("cluster", figures);
    Ok(())
}

fn single_key(key: &str) -> &'static str {
    match key {
        "p50_ms" => "single_p50_ms",
        "p99_ms" => "single_p99_ms",
        "max_ms" => "single_max_ms",
        _ => "single_delivered",
    }
}

/// What one measured window gave.
struct Measured {
    lateness: Lateness,
    started_twice: f64,
    runs_per_s: f64,
    transactions_per_fire: f64,
}

fn jobs_text(jobs: usize) -> String {
    (0..jobs)
        .map(|i| {
            format!(
                "\n[[jobs]]\nname = \"tick-{i}\"\nschedule = \"* * * * * *\"\nplugin = \"testkit\"\nparams = {{ action = \"ok\" }}\n"
            )
        })
        .collect()
}

/// The measured window: whole seconds, starting once everything settled.
fn window(seconds: i64) -> (i64, i64) {
    let begin = (jiff::Timestamp::now().as_second() + 3) * 1_000;
    (begin, begin + seconds * 1_000)
}

fn wait_past(end: i64) {
    while jiff::Timestamp::now().as_millisecond() < end + 3_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lateness and throughput from `(scheduled_at, started_at)` pairs of the window.
fn measure(pairs: &[(i64, Option<i64>)], expected: usize, seconds: i64) -> (Lateness, f64) {
    let mut late: Vec<f64> = pairs
        .iter()
        .filter_map(|&(due, started)| Some((started? - due) as f64))
        .collect();
    let runs_per_s = late.len() as f64 / seconds as f64;
    (Lateness::of(&mut late, expected as f64), runs_per_s)
}

fn on_cluster(pg: &Postgres, jobs: usize, seconds: i64) -> anyhow::Result<Measured> {
    let build = build_dir()?;
    let dir = tempfile::Builder::new()
        .prefix("pacer-bench-cluster-")
        .tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins)?;
    std::fs::copy(
        build.join("libpacer_testkit.so"),
        plugins.join("libpacer_testkit.so"),
    )?;
    let url = dir.path().join("db.url");
    std::fs::write(&url, pg.url())?;
    std::fs::set_permissions(&url, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let jobs_text = jobs_text(jobs);
    let mut nodes = Nodes(Vec::new());
    for node in NODES {
        std::fs::write(
            dir.path().join(format!("{node}.toml")),
            format!(
                "[daemon]\nplugin_dirs = [\"plugins\"]\ndatabase = \"{node}.db\"\n\
                 socket = \"{node}.sock\"\nmax_concurrency = 512\n\n[cluster]\n\
                 database_url_file = \"db.url\"\nnode_id = \"{node}\"\n{jobs_text}"
            ),
        )?;
        nodes.0.push(start_node(&build, dir.path(), node)?);
    }
    for node in NODES {
        wait_ready(&build, dir.path(), node)?;
    }
    let commits = || -> anyhow::Result<f64> {
        Ok(pg
            .psql("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'")
            .trim()
            .parse()?)
    };
    let (begin, end) = window(seconds);
    while jiff::Timestamp::now().as_millisecond() < begin {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = commits()?;
    wait_past(end);
    let after = commits()?;
    let rows = pg.psql(&format!(
        "SELECT scheduled_at, coalesce(started_at::text, '') FROM runs
         WHERE trigger = 'schedule' AND scheduled_at >= {begin} AND scheduled_at < {end}"
    ));
    let pairs: Vec<(i64, Option<i64>)> = rows
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (due, started) = line.split_once('|').context("a row")?;
            Ok((due.parse()?, started.parse().ok()))
        })
        .collect::<anyhow::Result<_>>()?;
    let expected = jobs * usize::try_from(seconds)?;
    let distinct = pg.psql(&format!(
        "SELECT count(DISTINCT (job, scheduled_at)) FROM runs
         WHERE trigger = 'schedule' AND scheduled_at >= {begin} AND scheduled_at < {end}
               AND started_at IS NOT NULL"
    ));
    let (lateness, runs_per_s) = measure(&pairs, expected, seconds);
    let started = pairs.iter().filter(|(_, s)| s.is_some()).count() as f64;
    drop(nodes);
    Ok(Measured {
        lateness,
        started_twice: started - distinct.trim().parse::<f64>()?,
        runs_per_s,
        transactions_per_fire: (after - before) / (pairs.len().max(1) as f64),
    })
}

fn on_one_node(jobs: usize, seconds: i64) -> anyhow::Result<Measured> {
    let daemon = Daemon::start("max_concurrency = 512", &jobs_text(jobs))?;
    let (begin, end) = window(seconds);
    wait_past(end);
    let db = rusqlite::Connection::open_with_flags(
        daemon.path().join("pacer.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    db.busy_timeout(Duration::from_secs(5))?;
    let mut statement = db.prepare(
        "SELECT scheduled_at, started_at FROM runs
         WHERE trigger = 'schedule' AND scheduled_at >= ?1 AND scheduled_at < ?2",
    )?;
    let pairs: Vec<(i64, Option<i64>)> = statement
        .query_map([begin, end], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let (lateness, runs_per_s) = measure(&pairs, jobs * usize::try_from(seconds)?, seconds);
    Ok(Measured {
        lateness,
        started_twice: 0.0,
        runs_per_s,
        transactions_per_fire: 0.0,
    })
}

/// The nodes' processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &self.0 {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
        }
        for child in &mut self.0 {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_node(build: &Path, dir: &Path, node: &str) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{node}.log")))?;
    Command::new(build.join("pacerd"))
        .current_dir(dir)
        .args(["--config", &format!("{node}.toml")])
        .env("PACER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {node}"))
}

fn wait_ready(build: &Path, dir: &Path, node: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let status = Command::new(build.join("pacer"))
            .current_dir(dir)
            .args(["--config", &format!("{node}.toml"), "status"])
            .output()?;
        if status.status.success() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default();
            bail!("node {node} did not answer within 60 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
