//! How a run's worker ended, in the contract's statuses and words an operator can act on.

use std::os::unix::process::ExitStatusExt;

use super::supervisor::{Ended, Stop};
use crate::model::Status;
use crate::units::format_duration;

/// The status and error of a run whose worker ended as `ended` describes.
pub fn classify(ended: &Ended, memory_limit: Option<u64>) -> (Status, Option<String>) {
    let reports = &ended.reports;
    match &ended.stop {
        Some(Stop::Cancelled(reason)) => return (Status::Cancelled, Some(reason.clone())),
        Some(Stop::TimedOut(after)) => {
            return (
                Status::TimedOut,
                Some(format!("timed out after {}", format_duration(*after))),
            );
        }
        None => {}
    }
    if let Some(reason) = &reports.refused {
        return (Status::Failed, Some(reason.clone()));
    }
    match reports.returned {
        Some(0) => (Status::Succeeded, None),
        Some(code) => (
            Status::Failed,
            Some(
                reports
                    .message
                    .clone()
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| format!("the plugin's run returned {code}")),
            ),
        ),
        None => (Status::Crashed, Some(crash_reason(ended, memory_limit))),
    }
}

/// How loudly the daemon's log reports a run that ended as `ended` with `status`: a run that
/// could not start (the worker refused the task: no such user, a plugin that does not load) at
/// error, one that failed, timed out or crashed at warning, the rest at info. So
/// `journalctl -p warning` lists every run that needs a look, and `-p err` those that never ran.
pub fn severity(ended: &Ended, status: Status) -> tracing::Level {
    match status {
        Status::Failed if ended.reports.refused.is_some() => tracing::Level::ERROR,
        Status::Abandoned => tracing::Level::ERROR,
        Status::Failed | Status::TimedOut | Status::Crashed => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    }
}

fn crash_reason(ended: &Ended, memory_limit: Option<u64>) -> String {
    let mut reason = match (ended.exit.signal(), ended.exit.code()) {
        (Some(signal), _) => format!(
            "the run's process was killed by signal {signal} ({})",
            signal_name(signal)
        ),
        (None, Some(code)) => {
            format!("the run's process exited with code {code} before the plugin's run returned")
        }
        (None, None) => "the run's process ended before the plugin's run returned".to_owned(),
    };
    let out_of_memory_signal = matches!(
        ended.exit.signal(),
        Some(libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS)
    );
    if let (true, Some(limit)) = (out_of_memory_signal, memory_limit) {
        reason.push_str(&format!(
            "; memory_limit is {}M, and a process that exceeds it fails to allocate",
            limit >> 20
        ));
    }
    if let Some(message) = ended.reports.message.as_ref().filter(|m| !m.is_empty()) {
        reason.push_str(&format!("; its last message: {message}"));
    }
    reason
}

/// `SIGSEGV` for 11, and so on.
pub fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}

#[cfg(test)]
mod tests {
    use std::process::ExitStatus;

    use super::*;
    use crate::worker::output::Tail;
    use crate::worker::supervisor::Reports;

    fn ended(reports: Reports, stop: Option<Stop>, wait_status: i32) -> Ended {
        Ended {
            exit: ExitStatus::from_raw(wait_status),
            reports,
            stop,
            output: Tail::new(0),
        }
    }

    fn level_of(ended: &Ended) -> tracing::Level {
        let (status, _) = classify(ended, None);
        severity(ended, status)
    }

    #[test]
    fn failures_are_warnings_and_runs_that_never_started_errors() {
        let returned = |code| Reports {
            returned: Some(code),
            ..Reports::default()
        };
        assert_eq!(level_of(&ended(returned(0), None, 0)), tracing::Level::INFO);
        assert_eq!(level_of(&ended(returned(1), None, 0)), tracing::Level::WARN);
        let timed_out = Some(Stop::TimedOut(std::time::Duration::from_secs(1)));
        assert_eq!(
            level_of(&ended(Reports::default(), timed_out, 9)),
            tracing::Level::WARN
        );
        // Killed by SIGSEGV before run returned.
        assert_eq!(
            level_of(&ended(Reports::default(), None, 11)),
            tracing::Level::WARN
        );
        let refused = Reports {
            refused: Some("no user `ghost` on this system".to_owned()),
            ..Reports::default()
        };
        assert_eq!(level_of(&ended(refused, None, 0)), tracing::Level::ERROR);
        let cancelled = Some(Stop::Cancelled("pacer cancel".to_owned()));
        assert_eq!(
            level_of(&ended(Reports::default(), cancelled, 15)),
            tracing::Level::INFO
        );
    }
}
