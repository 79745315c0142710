//! `dispatch_N`: the scheduler core alone (the daemon's `Scheduler` and `Dispatcher`, no
//! processes): N jobs due every second for a while; how late each fire reaches admission, and
//! whether every due fire does.

use std::sync::Arc;
use std::time::Duration;

use pacer::config::{Config, Environment, load};
use pacer::dispatch::{Dispatcher, Request};
use pacer::model::Trigger;
use pacer::scheduler::{Due, Scheduler};

use super::Lateness;
use crate::report::Report;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    super::lateness_at_scale(quick, "dispatch", report, one)
}

/// A config of `jobs` jobs due every second.
pub fn every_second(jobs: usize) -> anyhow::Result<(tempfile::TempDir, Config)> {
    let dir = tempfile::tempdir()?;
    let mut text = String::new();
    for i in 0..jobs {
        text += &format!(
            "[[jobs]]\nname = \"job-{i}\"\nschedule = \"* * * * * *\"\nplugin = \"exec\"\noverlap = \"allow\"\nparams = {{ command = \"true\" }}\n"
        );
    }
    let path = dir.path().join("pacer.toml");
    std::fs::write(&path, text)?;
    let config = load(
        &path,
        Environment {
            can_switch_users: false,
            can_run_as_root: false,
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((dir, config))
}

fn one(jobs: usize, seconds: i64) -> anyhow::Result<Lateness> {
    let (_dir, config) = every_second(jobs)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let now = now_ms();
        // Start on a whole second, so every measured second has all its fires.
        let begin = (now / 1_000 + 1) * 1_000;
        let end = begin + seconds * 1_000;
        let mut scheduler = Scheduler::new(now, 100);
        for job in &config.jobs {
            scheduler.add(Arc::clone(job), None, now);
        }
        let mut dispatcher = Dispatcher::new(
            u32::try_from(jobs * 2).unwrap_or(u32::MAX),
            u32::MAX,
            &config.pools,
            config.daemon.pressure.clone(),
            now,
        );
        let mut late = Vec::with_capacity(jobs * usize::try_from(seconds).unwrap_or(0));
        // The daemon's loop: sleep until the next fire, take what is due, hand it to admission.
        while let Some(wake) = scheduler.next_wake().filter(|at| *at < end) {
            let wait = u64::try_from(wake - now_ms()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let now = now_ms();
            for due in scheduler.take_due(now) {
                let Due::Fire { job, at, .. } = due else {
                    continue;
                };
                let request = Request {
                    params: job.params.clone(),
                    job,
                    trigger: Trigger::Schedule,
                    attempt: 1,
                    scheduled_at: at,
                    advances_schedule: true,
                    notify: None,
                };
                dispatcher.submit(request, now);
                if at >= begin {
                    late.push((now_us() - at * 1_000) as f64 / 1_000.0);
                }
            }
            for admitted in dispatcher.admit(now_ms()) {
                dispatcher.finished(admitted.slot);
            }
            scheduler.reschedule();
        }
        let expected = jobs as f64 * seconds as f64;
        Ok(Lateness::of(&mut late, expected))
    })
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}
