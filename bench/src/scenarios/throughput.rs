//! `throughput`: the real daemon draining a burst of no-op runs with the cap at twice the cores:
//! runs per second, and the daemon's own CPU time (its threads, not its children) per run.

use std::time::Duration;

use crate::daemon::{Daemon, ms};
use crate::report::{Report, median};

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let (runs, repetitions) = if quick { (500, 1) } else { (5_000, 3) };
    let cap = 2 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let (mut rates, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..repetitions {
        let (rate, cpu_us) = one(runs, cap)?;
        rates.push(rate);
        cpu.push(cpu_us);
    }
    report.add(
        "throughput",
        vec![
            ("runs_per_s", median(&mut rates)),
            ("daemon_cpu_us_per_run", median(&mut cpu)),
        ],
    );
    Ok(())
}

fn one(runs: usize, cap: usize) -> anyhow::Result<(f64, f64)> {
    let (_, schedule) = super::once_soon()?;
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
    let seconds = (last - first).max(1) as f64 / 1_000.0;
    Ok((runs as f64 / seconds, cpu / runs as f64))
}
