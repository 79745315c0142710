//! `burst`: N runs due in the same second, 50 ms each, under a cap of 16, beside the same burst
//! with no cap: the load stays flat at the cap, nothing is lost, and the makespan stays close to
//! the ideal `N x 50 ms / 16`.

use std::time::Duration;

use serde_json::Value;

use crate::daemon::{Daemon, ms};
use crate::report::{Report, median};

const RUN_MS: u64 = 50;
const CAP: u32 = 16;

/// What one burst showed.
struct Burst {
    peak: f64,
    recorded: f64,
    makespan_ms: f64,
}

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let jobs = if quick { 200 } else { 1_000 };
    let repetitions = if quick { 1 } else { 3 };
    let ideal_ms = (jobs as f64) * RUN_MS as f64 / f64::from(CAP);
    let (mut peak, mut recorded, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repetitions {
        let burst = one(jobs, CAP)?;
        peak.push(burst.peak);
        recorded.push(burst.recorded);
        ratio.push(burst.makespan_ms / ideal_ms);
    }
    report.add(
        "burst",
        vec![
            ("peak", median(&mut peak)),
            ("recorded", median(&mut recorded)),
            ("makespan_ratio", median(&mut ratio)),
        ],
    );
    let uncapped = one(jobs, jobs)?;
    report.add(
        "burst_uncapped",
        vec![
            ("peak", uncapped.peak),
            ("recorded", uncapped.recorded),
            ("makespan_ms", uncapped.makespan_ms),
        ],
    );
    Ok(())
}

fn one(jobs: u32, cap: u32) -> anyhow::Result<Burst> {
    // One fire per job, a few seconds from now, so the daemon has started and settled.
    let (due, schedule) = super::once_soon()?;
    let mut config = String::new();
    for i in 0..jobs {
        config += &format!(
            "\n[[jobs]]\nname = \"burst-{i}\"\nschedule = \"{schedule}\"\nplugin = \"testkit\"\nparams = {{ action = \"sleep\", ms = {RUN_MS} }}\n"
        );
    }
    let daemon = Daemon::start(&format!("max_concurrency = {cap}"), &config)?;
    daemon.wait_for(
        "every run of the burst to end",
        Duration::from_secs(300),
        |d| Ok(d.finished()? >= jobs as usize),
    )?;
    let runs: Vec<Value> = daemon.runs()?;
    let intervals: Vec<(i64, i64)> = runs
        .iter()
        .filter_map(|r| Some((ms(r, "started_at")?, ms(r, "finished_at")?)))
        .collect();
    let last_end = intervals.iter().map(|(_, end)| *end).max().unwrap_or(0);
    Ok(Burst {
        peak: peak(&intervals) as f64,
        recorded: runs.len() as f64,
        makespan_ms: (last_end - due.as_millisecond()) as f64,
    })
}

/// The most intervals open at once; an interval ending when another starts frees its slot first.
fn peak(intervals: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    events.sort_unstable();
    let (mut open, mut most) = (0_i32, 0_i32);
    for (_, delta) in events {
        open += delta;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}
