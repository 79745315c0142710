//! The scenarios, each a module that adds its figures to the report.

mod burst;
mod cluster;
mod dispatch;
mod e2e_start;
mod faults;
mod history;
mod idle;
mod limits;
mod peer;
mod queue;
mod throughput;
mod web;

use crate::report::{Report, median};

/// A scenario: it adds its figures to the report; `true` asks for the quick version.
type Scenario = fn(bool, &mut Report) -> anyhow::Result<()>;

/// Every scenario, in the order they run.
const SCENARIOS: [(&str, Scenario); 13] = [
    ("limits", limits::run),
    ("dispatch", dispatch::run),
    ("peer", peer::run),
    ("e2e_start", e2e_start::run),
    ("throughput", throughput::run),
    ("idle", idle::run),
    ("history", history::run),
    ("web", web::run),
    ("burst", burst::run),
    ("queue", queue::run),
    ("faults", faults::run),
    ("cluster", cluster::run),
    ("web_cluster", web::run_cluster),
];

/// Runs every scenario (or those named in `only`).
pub fn run_all(quick: bool, only: &[String]) -> anyhow::Result<Report> {
    let names: Vec<&str> = SCENARIOS.iter().map(|(name, _)| *name).collect();
    if let Some(unknown) = only.iter().find(|o| !names.contains(&o.as_str())) {
        anyhow::bail!(
            "no scenario `{unknown}`; the scenarios are {}",
            names.join(", ")
        );
    }
    let mut report = Report::default();
    for (name, scenario) in SCENARIOS {
        if only.is_empty() || only.iter().any(|o| o == name) {
            eprintln!("pacer-bench: {name}...");
            scenario(quick, &mut report)?;
        }
    }
    Ok(report)
}

/// How late starts were: p50, p99 and max in ms, and the fraction of due fires that started.
#[derive(Debug, Clone, Copy)]
pub struct Lateness {
    p50: f64,
    p99: f64,
    max: f64,
    delivered: f64,
}

impl Lateness {
    /// From the lateness of each start (ms) and how many starts were due.
    pub fn of(samples: &mut [f64], expected: f64) -> Lateness {
        samples.sort_by(f64::total_cmp);
        let at = |pct: f64| -> f64 {
            if samples.is_empty() {
                return f64::NAN;
            }
            let rank = ((pct / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Lateness {
            p50: at(50.0),
            p99: at(99.0),
            max: samples.last().copied().unwrap_or(f64::NAN),
            delivered: if expected > 0.0 {
                samples.len() as f64 / expected
            } else {
                f64::NAN
            },
        }
    }

    /// The median of each figure over repetitions, under the report's keys.
    pub fn median_of(runs: &mut [Lateness]) -> Vec<(&'static str, f64)> {
        let pick = |f: fn(&Lateness) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        vec![
            ("p50_ms", pick(|l| l.p50)),
            ("p99_ms", pick(|l| l.p99)),
            ("max_ms", pick(|l| l.max)),
            ("delivered", pick(|l| l.delivered)),
        ]
    }
}

/// Runs `one` for 1,000 and 10,000 jobs due every second (`repetitions` times each) and reports
/// the median lateness under `{prefix}_1000` and `{prefix}_10000`: the scheduler core and the
/// peer are measured alike.
pub fn lateness_at_scale(
    quick: bool,
    prefix: &str,
    report: &mut Report,
    one: impl Fn(usize, i64) -> anyhow::Result<Lateness>,
) -> anyhow::Result<()> {
    let (seconds, repetitions) = if quick { (2, 1) } else { (10, 3) };
    for jobs in [1_000, 10_000] {
        let mut runs = Vec::new();
        for _ in 0..repetitions {
            runs.push(one(jobs, seconds)?);
        }
        report.add(&format!("{prefix}_{jobs}"), Lateness::median_of(&mut runs));
    }
    Ok(())
}

/// An instant a few seconds ahead, whole seconds, so a daemon has started and settled before
/// it, and a 6-field schedule line that fires at that instant only (once a year).
pub fn once_soon() -> anyhow::Result<(jiff::Timestamp, String)> {
    let due = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 5)?;
    let at = due.to_zoned(jiff::tz::TimeZone::UTC);
    let schedule = format!(
        "{} {} {} {} {} *",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month()
    );
    Ok((due, schedule))
}
