//! `throughput`: the real daemon draining a burst of no-op runs with the cap at twice the cores:
//! runs per second from the instant the burst was due (recording every fire `queued` is part
//! of the work), how long the first run waited for that, and the daemon's own CPU time (its
//! threads, not its children) per run.

use std::time::Duration;

use crate::daemon::{Daemon, ms};
use crate::report::{Report, median};

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let (runs, repetitions) = if quick { (500, 1) } else { (5_000, 3) };
    let cap = 2 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let (mut rates, mut first, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repetitions {
        let drained = one(runs, cap)?;
        rates.push(drained.runs_per_s);
        first.push(drained.first_start_ms);
        cpu.push(drained.cpu_us_per_run);
    }
    report.add(
        "throughput",
        vec![
            ("runs_per_s", median(&mut rates)),
            ("first_start_ms", median(&mut first)),
            ("daemon_cpu_us_per_run", median(&mut cpu)),
        ],
    );
    Ok(())
}

/// One burst's figures.
struct Drained {
    runs_per_s: f64,
    first_start_ms: f64,
    cpu_us_per_run: f64,
}

fn one(runs: usize, cap: usize) -> anyhow::Result<Drained> {
    let (due, schedule) = super::once_soon()?;
    let mut jobs = String::new();
    for i in 0..runs {
        jobs += &format!(
            "\n[[jobs]]\nname = \"noop-{i}\"\nschedule = \"{schedule}\"\nplugin = \"testkit\"\nparams = {{ action = \"ok\" }}\n"
        );
    }
    let daemon = Daemon::start(&format!("max_concurrency = {cap}"), &jobs)?;
    let before = daemon.cpu_us()?;
    daemon.wait_for("the burst to drain", Duration::from_secs(600), |d| {
        Ok(d.finished()? >= runs)
    })?;
    let cpu = daemon.cpu_us()? - before;
    let records = daemon.runs()?;
    let first = records
        .iter()
        .filter_map(|r| ms(r, "started_at"))
        .min()
        .unwrap_or(0);
    let last = records
        .iter()
        .filter_map(|r| ms(r, "finished_at"))
        .max()
        .unwrap_or(0);
    // From the due instant, not the first start: every fire's `queued` record is committed
    // before any of them starts, and that is the daemon's work too.
    let due = due.as_millisecond();
    let seconds = (last - due).max(1) as f64 / 1_000.0;
    Ok(Drained {
        runs_per_s: runs as f64 / seconds,
        first_start_ms: (first - due) as f64,
        cpu_us_per_run: cpu / runs as f64,
    })
}
