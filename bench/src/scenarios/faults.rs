//! `faults`: the daemon's memory across a thousand runs that panic, abort, segfault, exit or
//! fail: it must stay flat, since a fault costs one run record and nothing else.

use std::time::Duration;

use crate::daemon::Daemon;
use crate::report::Report;

const ACTIONS: [&str; 5] = [
    r#"{ action = "panic", message = "boom" }"#,
    r#"{ action = "abort" }"#,
    r#"{ action = "segfault" }"#,
    r#"{ action = "exit", code = 3 }"#,
    r#"{ action = "fail", message = "no" }"#,
];

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let total = if quick { 200 } else { 1_000 };
    let mut config = String::new();
    for i in 0..40 {
        config += &format!(
            "\n[[jobs]]\nname = \"fault-{i}\"\nschedule = \"* * * * * *\"\nplugin = \"testkit\"\nparams = {}\n",
            ACTIONS[i % ACTIONS.len()]
        );
    }
    let daemon = Daemon::start("max_concurrency = 16", &config)?;
    daemon.wait_for("100 faulty runs", Duration::from_secs(120), |d| {
        Ok(d.finished()? >= 100)
    })?;
    let early = daemon.rss_mib()?;
    daemon.wait_for("all faulty runs", Duration::from_secs(300), |d| {
        Ok(d.finished()? >= total)
    })?;
    let late = daemon.rss_mib()?;
    report.add(
        "faults",
        vec![
            ("runs", total as f64),
            ("rss_after_100_mb", early),
            ("rss_at_end_mb", late),
            ("growth_mb", late - early),
        ],
    );
    Ok(())
}
