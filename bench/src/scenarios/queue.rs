//! `queue`: an application enqueues N runs through the socket API at once (64 clients side by
//! side), under a cap of 16: how fast the daemon accepts them (each a committed `queued` record
//! before its answer), whether every accepted run reaches a final record, and how close the
//! makespan stays to the ideal `N x 20 ms / 16`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{Daemon, ms};
use crate::report::{Report, median};

const RUN_MS: u64 = 20;
const CAP: u32 = 16;
const CLIENTS: usize = 64;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let fires = if quick { 1_000 } else { 10_000 };
    let repetitions = if quick { 1 } else { 3 };
    let ideal_ms = fires as f64 * RUN_MS as f64 / f64::from(CAP);
    let (mut rate, mut lost, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repetitions {
        let (per_s, missing, makespan_ms) = one(fires)?;
        rate.push(per_s);
        lost.push(missing);
        ratio.push(makespan_ms / ideal_ms);
    }
    report.add(
        "queue",
        vec![
            ("enqueue_per_s", median(&mut rate)),
            ("lost", median(&mut lost)),
            ("makespan_ratio", median(&mut ratio)),
        ],
    );
    Ok(())
}

/// Enqueues `fires` runs; returns the accepted per second, how many accepted runs ended
/// without a final record, and the makespan in ms.
fn one(fires: usize) -> anyhow::Result<(f64, f64, f64)> {
    let daemon = Daemon::start(
        &format!("max_concurrency = {CAP}\nmax_queue = {}", fires * 2),
        &format!(
            "\n[[jobs]]\nname = \"work\"\nplugin = \"testkit\"\noverlap = \"allow\"\nparams = {{ action = \"sleep\", ms = {RUN_MS} }}\n"
        ),
    )?;
    let socket = daemon.path().join("pacer.sock");
    let begin = Instant::now();
    let begin_ms = jiff::Timestamp::now().as_millisecond();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let socket = socket.clone();
            let share = fires / CLIENTS + usize::from(client < fires % CLIENTS);
            std::thread::spawn(move || enqueue(&socket, share))
        })
        .collect();
    let mut accepted = Vec::with_capacity(fires);
    for client in clients {
        let ids = client
            .join()
            .map_err(|_| anyhow::anyhow!("an enqueuing client panicked"))??;
        accepted.extend(ids);
    }
    let per_s = accepted.len() as f64 / begin.elapsed().as_secs_f64();
    daemon.wait_for("every enqueued run to end", Duration::from_secs(900), |d| {
        Ok(d.finished()? >= accepted.len())
    })?;
    let runs = daemon.runs()?;
    let finals: std::collections::HashSet<i64> = runs
        .iter()
        .filter(|r| r["finished_at"].is_string())
        .filter_map(|r| r["id"].as_i64())
        .collect();
    let lost = accepted.iter().filter(|id| !finals.contains(id)).count();
    let last_end = runs
        .iter()
        .filter_map(|r: &Value| ms(r, "finished_at"))
        .max()
        .unwrap_or(begin_ms);
    Ok((per_s, lost as f64, (last_end - begin_ms) as f64))
}

/// One client: `count` runs, one connection each, as an application would; the ids accepted.
fn enqueue(socket: &PathBuf, count: usize) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let mut conn = UnixStream::connect(socket)?;
        conn.write_all(b"{\"api\": 1, \"verb\": \"run\", \"job\": \"work\"}\n")?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        let answer: Value = serde_json::from_str(&line)?;
        match answer["id"].as_i64() {
            Some(id) if answer["event"] != "skipped" => ids.push(id),
            _ => anyhow::bail!("an enqueue was not accepted: {line}"),
        }
    }
    Ok(ids)
}
