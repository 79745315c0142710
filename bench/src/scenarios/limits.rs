//! `limits`: the machine's own floors, measured in the same run as Pacer so the figures can be
//! read against them: how late tokio's timer wakes, what spawning a process costs the parent,
//! and how fast SQLite commits in the daemon's settings (WAL, `synchronous = NORMAL`).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

use super::Lateness;
use crate::report::{Report, median};

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let repetitions = if quick { 1 } else { 3 };
    let mut timers = Vec::new();
    let (mut spawn_rates, mut spawn_cpu) = (Vec::new(), Vec::new());
    let (mut commits, mut batched) = (Vec::new(), Vec::new());
    for _ in 0..repetitions {
        timers.push(timer(if quick { 50 } else { 200 })?);
        let (rate, cpu) = spawns(if quick { 300 } else { 3_000 })?;
        spawn_rates.push(rate);
        spawn_cpu.push(cpu);
        let window = Duration::from_secs(if quick { 1 } else { 3 });
        commits.push(sqlite_rows_per_s(1, window)?);
        batched.push(sqlite_rows_per_s(100, window)?);
    }
    let mut timer_p50: Vec<f64> = timers.iter().map(|t| t.p50).collect();
    let mut timer_p99: Vec<f64> = timers.iter().map(|t| t.p99).collect();
    report.add(
        "limits",
        vec![
            ("timer_p50_ms", median(&mut timer_p50)),
            ("timer_p99_ms", median(&mut timer_p99)),
            ("spawns_per_s", median(&mut spawn_rates)),
            ("spawn_parent_cpu_us", median(&mut spawn_cpu)),
            ("sqlite_commits_per_s", median(&mut commits)),
            ("sqlite_batched_rows_per_s", median(&mut batched)),
        ],
    );
    Ok(())
}

/// How late `samples` sleeps of 10 ms wake, on a runtime like the daemon's.
fn timer(samples: usize) -> anyhow::Result<Lateness> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let late = runtime.block_on(async {
        let mut late = Vec::with_capacity(samples);
        for _ in 0..samples {
            let due = tokio::time::Instant::now() + Duration::from_millis(10);
            tokio::time::sleep_until(due).await;
            late.push(due.elapsed().as_secs_f64() * 1_000.0);
        }
        late
    });
    let mut late = late;
    Ok(Lateness::of(&mut late, samples as f64))
}

/// Spawns and reaps `count` processes of `/bin/true`, twice the cores at a time, each in its
/// own process group with a socket on stdin as the daemon's workers have: spawns per second,
/// and this thread's CPU time per spawn.
fn spawns(count: usize) -> anyhow::Result<(f64, f64)> {
    let at_once = 2 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let cpu_before = thread_cpu_us()?;
    let start = Instant::now();
    let mut running: std::collections::VecDeque<Child> = std::collections::VecDeque::new();
    for _ in 0..count {
        if running.len() == at_once
            && let Some(mut oldest) = running.pop_front()
        {
            oldest.wait()?;
        }
        let (_ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let child = Command::new("/bin/true")
            .process_group(0)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        running.push_back(child);
    }
    for mut child in running {
        child.wait()?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_us()? - cpu_before;
    Ok((count as f64 / elapsed, cpu / count as f64))
}

/// User and system CPU time of the calling thread, in microseconds.
fn thread_cpu_us() -> anyhow::Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD)?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    Ok(us(usage.user_time()) + us(usage.system_time()))
}

/// Rows per second written for `window`, `per_transaction` rows per transaction, to a table
/// shaped like the history's (three indexes).
fn sqlite_rows_per_s(per_transaction: usize, window: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut db = rusqlite::Connection::open(dir.path().join("limits.db"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL,
                            scheduled_at INTEGER NOT NULL);
         CREATE INDEX runs_by_job ON runs (job, id);
         CREATE INDEX runs_by_status ON runs (status, id);
         CREATE INDEX runs_by_schedule ON runs (scheduled_at);",
    )?;
    let start = Instant::now();
    let mut rows = 0_i64;
    while start.elapsed() < window {
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO runs (job, status, scheduled_at) VALUES (?1, 'succeeded', ?2)",
            )?;
            for _ in 0..per_transaction {
                insert.execute(rusqlite::params![format!("job-{}", rows % 1_000), rows])?;
                rows += 1;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}
