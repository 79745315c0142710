//! The scenarios, each a module that returns its figures.

mod burst;
mod faults;

use crate::report::Report;

/// Runs every scenario (or those named in `only`).
pub fn run_all(quick: bool, only: &[String]) -> anyhow::Result<Report> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut report = Report::default();
    if wanted("burst") {
        burst::run(quick, &mut report)?;
    }
    if wanted("faults") {
        faults::run(quick, &mut report)?;
    }
    Ok(report)
}
