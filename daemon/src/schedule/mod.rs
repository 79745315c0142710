//! Cron expressions in a time zone: parsing, Vixie semantics, and the next fire.
//!
//! Everything here is a pure function of its inputs, so the table tests pin exact instants.
//! Parsing is `croner`'s (the `cron` crate numbers Sunday as 1, ANDs the day fields and
//! mishandles daylight-saving changes); this module adds the checks that give a config error a
//! field name and a range, and the one Vixie rule `croner` does not follow.

mod fields;
mod jitter;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

pub use jitter::jitter_offset;

/// When a job fires.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression read as wall-clock time in a zone (shared: it is large, and jobs
    /// with the same expression share one, see [`ScheduleCache`]).
    Cron(Arc<CronSchedule>),
    /// `@reboot`: once per boot of the machine, not per start of the daemon.
    Reboot,
}

/// A parsed cron expression bound to its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
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
    /// Parses a schedule line: 5 fields, 6 with seconds first, or an `@` shortcut.
    pub fn parse(text: &str, tz: &TimeZone) -> Result<Schedule, ScheduleError> {
        let error = |reason: String| ScheduleError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
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
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        fields::check(&fields).map_err(error)?;
        let (dom, dow) = (fields[fields.len() - 3], fields[fields.len() - 1]);
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(fields::vixie_ands_day_fields(dom, dow))
            .build();
        let cron = parser
            .parse(expanded)
            .map_err(|e| error(fields::describe_croner_error(&e)))?;
        let schedule = CronSchedule {
            cron,
            tz: tz.clone(),
        };
        // An expression such as `0 0 30 2 *` parses but never fires; say so now rather than
        // letting the job sit silently forever.
        if schedule.next_after(Timestamp::now()).is_none() {
            return Err(error("it never matches a real date".to_owned()));
        }
        Ok(Schedule::Cron(Arc::new(schedule)))
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
/// same zone: a parsed expression carries a table of every year croner supports (about 5 KB),
/// which a config of 10,000 jobs would otherwise hold 10,000 times.
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
        let key = (text.trim().to_owned(), zone.to_owned());
        if let Some(schedule) = self.parsed.get(&key) {
            return Ok(schedule.clone());
        }
        let schedule = Schedule::parse(text, tz)?;
        self.parsed.insert(key, schedule.clone());
        Ok(schedule)
    }
}

impl CronSchedule {
    /// The first fire strictly after `after`.
    ///
    /// Across daylight-saving changes this follows cron(8): a fixed-time job whose time falls
    /// in a gap fires at the first instant after the gap, and in a repeated hour only on the
    /// first pass; any other job fires at every real occurrence of a matching wall-clock time.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}
