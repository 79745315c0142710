//! `dispatch_N`: the daemon's engine alone (its timeline, catch-up and admission; no processes
//! and no database, each record answered at once): N jobs due every second for a while; how
//! late each fire is started, its record written first, and whether every due fire is.

use std::sync::Arc;

use pacer::admission::{Limits, LocalAdmission};
use pacer::config::{Config, Environment, load};
use pacer::engine::{Effect, Engine, Input, Resume};
use pacer::model::Status;
use pacer::plugins::Registry;

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
        let mut limits = Limits::of(&config);
        limits.max_concurrency = u32::try_from(jobs * 2).unwrap_or(u32::MAX);
        limits.max_queue = u32::MAX;
        let mut engine = Engine::new(
            Arc::new(config),
            Registry::of(&[("exec", "/usr/lib/pacer/plugins/libpacer_plugin_exec.so")]),
            Box::new(LocalAdmission::new(&limits, now)),
            Resume::default(),
            std::process::id(),
            now,
        );
        drop(engine.take_effects());
        let mut late = Vec::with_capacity(jobs * usize::try_from(seconds).unwrap_or(0));
        let mut next_id = 1;
        // The daemon's loop: sleep until the next fire, hand the engine the tick, answer its
        // writes, and count each fire it starts.
        while let Some(wake) = engine.next_wake(now_ms()).filter(|at| *at < end) {
            tokio::time::sleep(pacer::time::until(jiff::Timestamp::now(), wake)).await;
            let mut effects = engine.handle(Input::Tick, now_ms());
            while !effects.is_empty() {
                let mut written = Vec::new();
                let mut ended = Vec::new();
                for effect in effects {
                    match effect {
                        Effect::Write(_, Some(ticket)) => {
                            written.push((ticket, Ok(Some(next_id))));
                            next_id += 1;
                        }
                        Effect::Start(start) => {
                            if start.scheduled_at >= begin {
                                late.push((now_us() - start.scheduled_at * 1_000) as f64 / 1_000.0);
                            }
                            ended.push(start.key);
                        }
                        _ => {}
                    }
                }
                effects = Vec::new();
                if !written.is_empty() {
                    effects.extend(engine.handle(Input::Written(written), now_ms()));
                }
                for key in ended {
                    effects.extend(engine.handle(
                        Input::Finished {
                            key,
                            status: Status::Succeeded,
                            error: None,
                            span: None,
                        },
                        now_ms(),
                    ));
                }
            }
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
