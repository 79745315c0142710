//! Cron expressions in a time zone: parsing, Vixie semantics, and the next fire.
//!
//! Everything here is a pure function of its inputs, so the table tests pin exact instants.
//! The reading of a line (`fields`), the calendar walk (`pattern`) and the mapping of
//! wall-clock times to instants across clock changes (`search`) are our own: the crates tried
//! read `SUN` at the end of a range as 7, refuse `*` in a list, take any Unicode space as a
//! separator, test for a fixed-time job differently from the documented rule, give up on gaps
//! longer than two hours and stop at the year 5000 (see docs/schedules.md).

mod fields;
mod jitter;
mod pattern;
mod search;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::date;
use jiff::tz::TimeZone;

use pattern::Pattern;

pub use jitter::jitter_offset;

/// When a job fires.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression read as wall-clock time in a zone (jobs with the same expression and
    /// zone share one, see [`ScheduleCache`]).
    Cron(Arc<CronSchedule>),
    /// `@reboot`: once per boot of the machine, not per start of the daemon.
    Reboot,
}

/// A parsed cron expression bound to its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pattern: Pattern,
    tz: TimeZone,
}

/// Why a schedule line was rejected; the text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule `{text}`: {reason}")]
pub struct ScheduleError {
    text: String,
    reason: String,
}

/// The shortcuts the contract allows besides `@reboot`, with what each stands for.
const SHORTCUTS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// Parses a schedule line: 5 fields, 6 with seconds first, or an `@` shortcut. Fields are
    /// separated by spaces or tabs, as crontab(5) has them.
    pub fn parse(text: &str, tz: &TimeZone) -> Result<Schedule, ScheduleError> {
        let error = |reason: String| ScheduleError {
            text: text.to_owned(),
            reason,
        };
        fields::check_characters(text).map_err(error)?;
        let trimmed = trim(text);
        let expanded = if trimmed.starts_with('@') {
            let lower = trimmed.to_ascii_lowercase();
            if lower == "@reboot" {
                return Ok(Schedule::Reboot);
            }
            SHORTCUTS
                .iter()
                .find(|(name, _)| *name == lower)
                .map(|(_, expansion)| *expansion)
                .ok_or_else(|| {
                    error(format!(
                        "unknown shortcut; expected one of {}, @reboot",
                        SHORTCUTS.map(|(name, _)| name).join(", ")
                    ))
                })?
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded
            .split([' ', '\t'])
            .filter(|field| !field.is_empty())
            .collect();
        let pattern = fields::parse(&fields).map_err(error)?;
        // An expression such as `0 0 30 2 *` parses but never fires; say so now rather than
        // letting the job sit silently forever. Whether a date matches depends on its month,
        // the month's length and the weekday it starts on, and 2000 to 2027 hold every such
        // month: 28 years without a skipped leap day start each month on each weekday.
        if pattern
            .next_date(date(2000, 1, 1), date(2027, 12, 31))
            .is_none()
        {
            return Err(error("it never matches a real date".to_owned()));
        }
        Ok(Schedule::Cron(Arc::new(CronSchedule {
            pattern,
            tz: tz.clone(),
        })))
    }

    /// The first fire strictly after `after`, or `None` for `@reboot` and for expressions with
    /// no further match.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Cron(cron) => cron.next_after(after),
            Schedule::Reboot => None,
        }
    }
}

/// Parses schedules, sharing one parse among the jobs that write the same expression in the
/// same zone: a config of 10,000 jobs on a few expressions then checks each expression once
/// (the check that it fires at all can walk centuries of calendar) and holds it once.
#[derive(Debug, Default)]
pub struct ScheduleCache {
    parsed: HashMap<(String, String), Schedule>,
}

impl ScheduleCache {
    /// [`Schedule::parse`], or a copy of its earlier result for the same text and zone.
    pub fn parse(&mut self, text: &str, tz: &TimeZone) -> Result<Schedule, ScheduleError> {
        // A zone without a name (a fixed offset) is rare enough to parse afresh each time.
        let Some(zone) = tz.iana_name() else {
            return Schedule::parse(text, tz);
        };
        let key = (trim(text).to_owned(), zone.to_owned());
        if let Some(schedule) = self.parsed.get(&key) {
            return Ok(schedule.clone());
        }
        let schedule = Schedule::parse(text, tz)?;
        self.parsed.insert(key, schedule.clone());
        Ok(schedule)
    }
}

impl CronSchedule {
    /// The first fire strictly after `after`, or `None` when none comes before the last
    /// instant there is (late on 9999-12-30 UTC): the search never gives up earlier.
    ///
    /// Across daylight-saving changes this follows cron(8): a fixed-time job whose time falls
    /// in a gap fires at the first instant after the gap, and in a repeated hour only on the
    /// first pass; any other job fires at every real occurrence of a matching wall-clock time.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        search::next_fire(&self.pattern, &self.tz, after)
    }
}

/// `text` without the spaces and tabs around it (only those separate fields).
fn trim(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}
