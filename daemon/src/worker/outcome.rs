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
