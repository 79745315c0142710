//! `idle`: the real daemon with 10,000 jobs, none due for a while: how often its threads wake
//! (voluntary and involuntary context switches per second), and its resident memory.

use std::time::Duration;

use crate::daemon::Daemon;
use crate::report::Report;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let seconds = if quick { 10 } else { 60 };
    let mut jobs = String::new();
    for i in 0..10_000 {
        // Once a year, on the 1st of January at 00:00: never during the measurement.
        jobs += &format!(
            "\n[[jobs]]\nname = \"idle-{i}\"\nschedule = \"{} 0 1 1 *\"\nplugin = \"exec\"\nparams = {{ command = \"true\" }}\n",
            i % 60
        );
    }
    let daemon = Daemon::start("", &jobs)?;
    std::thread::sleep(Duration::from_secs(3));
    let before = daemon.context_switches()?;
    std::thread::sleep(Duration::from_secs(seconds));
    let after = daemon.context_switches()?;
    report.add(
        "idle",
        vec![
            ("wakeups_per_s", (after - before) as f64 / seconds as f64),
            ("rss_mb", daemon.rss_mib()?),
        ],
    );
    Ok(())
}
