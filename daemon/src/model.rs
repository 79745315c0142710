//! The vocabulary of a run record, shared by the daemon, the store and the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What became of a run. The strings are the contract's and are stored verbatim in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted and waiting for admission (a slot, a token, its job's previous run, its
    /// retry's instant, its turn in a catch-up); its record survives a crash and keeps its
    /// place.
    Queued,
    /// Its process was spawned and has not been reaped yet.
    Running,
    /// The plugin's `run` returned success.
    Succeeded,
    /// The plugin's `run` returned failure (or panicked).
    Failed,
    /// The job's `timeout` elapsed and the run was killed.
    TimedOut,
    /// The run's process died by a signal or exited before `run` returned.
    Crashed,
    /// A policy declined the fire; `error` says which and why.
    Skipped,
    /// Stopped on request (cancel, replace, shutdown).
    Cancelled,
    /// The daemon died while it ran; found at the next start.
    Abandoned,
}

impl Status {
    /// Every status, in the order the contract lists them.
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Crashed,
        Status::Skipped,
        Status::Cancelled,
        Status::Abandoned,
    ];

    /// The contract's name for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Crashed => "crashed",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
            Status::Abandoned => "abandoned",
        }
    }

    /// Whether the run is over: neither waiting nor going.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// Whether this status is a failure that `on_failure` reacts to.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut | Status::Crashed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a run's process was spawned and reaped, Unix ms, as its record holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSpan {
    /// Its `started_at`.
    pub started_at: i64,
    /// Its `finished_at`.
    pub finished_at: i64,
}

impl RunSpan {
    /// Its `duration_ms`.
    pub fn duration_ms(self) -> i64 {
        self.finished_at - self.started_at
    }
}

/// An unknown status or trigger name; the message lists the valid ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{value}`: expected one of {expected}")]
pub struct UnknownName {
    kind: &'static str,
    value: String,
    expected: String,
}

impl FromStr for Status {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "status",
                value: s.to_owned(),
                expected: Status::ALL.map(Status::as_str).join(", "),
            })
    }
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The job's schedule came due.
    Schedule,
    /// `pacer run`.
    Manual,
    /// A later attempt after a failure.
    Retry,
    /// A fire missed while the daemon was down.
    CatchUp,
    /// Another job's `on_success` or `on_failure`.
    Chained,
}

impl Trigger {
    /// Every trigger, in the order the contract lists them.
    pub const ALL: [Trigger; 5] = [
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Retry,
        Trigger::CatchUp,
        Trigger::Chained,
    ];

    /// The contract's name for this trigger.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
            Trigger::CatchUp => "catch_up",
            Trigger::Chained => "chained",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "trigger",
                value: s.to_owned(),
                expected: Trigger::ALL.map(Trigger::as_str).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse::<Trigger>().unwrap(), trigger);
        }
    }

    #[test]
    fn unknown_status_lists_the_valid_ones() {
        let err = "done".parse::<Status>().unwrap_err().to_string();
        assert!(err.contains("unknown status `done`"), "{err}");
        assert!(err.contains("timed_out"), "{err}");
    }
}
