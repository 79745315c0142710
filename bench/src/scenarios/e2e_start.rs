//! `e2e_start`: the real daemon with 20 jobs on `* * * * * *` running `exec` with `true`: start
//! lateness from the history (`started_at - scheduled_at`), and the fraction of due fires that
//! started.

use std::time::Duration;

use super::Lateness;
use crate::daemon::{Daemon, ms};
use crate::report::Report;

const JOBS: usize = 20;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let (seconds, repetitions) = if quick { (3, 1) } else { (10, 3) };
    let mut runs = Vec::new();
    for _ in 0..repetitions {
        runs.push(one(seconds)?);
    }
    let figures: Vec<(&str, f64)> = Lateness::median_of(&mut runs)
        .into_iter()
        .filter(|(key, _)| *key != "max_ms")
        .collect();
    report.add("e2e_start", figures);
    Ok(())
}

fn one(seconds: i64) -> anyhow::Result<Lateness> {
    let mut jobs = String::new();
    for i in 0..JOBS {
        jobs += &format!(
            "\n[[jobs]]\nname = \"tick-{i}\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\nparams = {{ argv = [\"true\"] }}\n"
        );
    }
    let daemon = Daemon::start("max_concurrency = 32", &jobs)?;
    // Measure whole seconds after the daemon settled.
    let begin = (jiff::Timestamp::now().as_second() + 2) * 1_000;
    let end = begin + seconds * 1_000;
    daemon.wait_for(
        "the measured seconds to pass",
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0) + 30),
        |_| Ok(jiff::Timestamp::now().as_millisecond() > end + 2_000),
    )?;
    let runs = daemon.runs()?;
    let mut late: Vec<f64> = runs
        .iter()
        .filter(|run| run["trigger"] == "schedule")
        .filter_map(|run| Some((ms(run, "scheduled_at")?, ms(run, "started_at")?)))
        .filter(|(due, _)| (begin..end).contains(due))
        .map(|(due, started)| (started - due) as f64)
        .collect();
    Ok(Lateness::of(&mut late, (JOBS as i64 * seconds) as f64))
}
