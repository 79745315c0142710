//! The values a schedule line allows, and the calendar walk that finds the next wall-clock time
//! they match. Time zones are not this module's concern: `search` maps wall-clock times to
//! instants.

use jiff::civil::{Date, DateTime, Time};

/// A parsed schedule line: each field as a set of bits (bit n set: value n allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    pub(super) seconds: u64,
    pub(super) minutes: u64,
    pub(super) hours: u64,
    pub(super) days: Days,
    /// Bits 1 to 12.
    pub(super) months: u64,
    pub(super) weekdays: Weekdays,
    pub(super) day_rule: DayRule,
    /// The time of day of a fixed-time line (see `fields::fixed_time`), which follows its own
    /// rule across clock changes.
    pub(super) fixed_time: Option<Time>,
}

/// What the day-of-month field allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Days {
    /// Bits 1 to 31.
    pub(super) each: u64,
    /// `L`: the last day of the month.
    pub(super) last: bool,
    /// `15W`: the weekday nearest the 15th, within its month (bits 1 to 31).
    pub(super) nearest_weekday: u64,
}

/// What the day-of-week field allows, Sunday as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Weekdays {
    /// Bits 0 to 6.
    pub(super) each: u64,
    /// `5L`: the last such weekday of the month.
    pub(super) last: u8,
    /// `MON#2`: `nth[1]` holds the weekdays whose second occurrence in the month matches.
    pub(super) nth: [u8; 5],
}

/// How the two day fields combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DayRule {
    /// A day must match both (one of them is unrestricted).
    Both,
    /// A day matching either fires (both are restricted).
    Either,
}

impl Pattern {
    /// Whether a day of this date's month and weekday fires.
    pub(super) fn matches_date(&self, date: Date) -> bool {
        if !has(self.months, date.month()) {
            return false;
        }
        let day = date.day();
        let length = date.days_in_month();
        let weekday = date.weekday().to_sunday_zero_offset();
        let by_month_day = self.days.matches(day, length, weekday);
        let by_weekday = self.weekdays.matches(day, length, weekday);
        match self.day_rule {
            DayRule::Both => by_month_day && by_weekday,
            DayRule::Either => by_month_day || by_weekday,
        }
    }

    /// The first matching date from `from` through `last`.
    ///
    /// Weekdays and month lengths repeat every 400 years, so a line that matches at all
    /// matches within any 400 years: the walk ends within that span.
    pub(super) fn next_date(&self, from: Date, last: Date) -> Option<Date> {
        let mut date = from;
        while date <= last {
            if has(self.months, date.month()) {
                let mut day = date;
                loop {
                    if day > last {
                        return None;
                    }
                    if self.matches_date(day) {
                        return Some(day);
                    }
                    if day.day() == day.days_in_month() {
                        break;
                    }
                    day = day.tomorrow().ok()?;
                }
            }
            date = self.next_month(date)?;
        }
        None
    }

    /// The first day of the next month after `date`'s that the month field allows.
    fn next_month(&self, date: Date) -> Option<Date> {
        let month = u32::try_from(date.month()).ok()?;
        match first_bit(self.months, month + 1) {
            Some(later) => Date::new(date.year(), i8::try_from(later).ok()?, 1).ok(),
            None => {
                let first = i8::try_from(first_bit(self.months, 0)?).ok()?;
                Date::new(date.year().checked_add(1)?, first, 1).ok()
            }
        }
    }

    /// The first matching time of day at or after `from` (whole seconds).
    pub(super) fn next_time(&self, from: Time) -> Option<Time> {
        let (hour0, minute0, second0) = (
            u32::try_from(from.hour()).ok()?,
            u32::try_from(from.minute()).ok()?,
            u32::try_from(from.second()).ok()?,
        );
        let mut hour = first_bit(self.hours, hour0);
        while let Some(h) = hour {
            let mut minute = first_bit(self.minutes, if h == hour0 { minute0 } else { 0 });
            while let Some(m) = minute {
                let from_second = if h == hour0 && m == minute0 {
                    second0
                } else {
                    0
                };
                if let Some(s) = first_bit(self.seconds, from_second) {
                    let [h, m, s] = [h, m, s].map(|v| i8::try_from(v).unwrap_or(i8::MAX));
                    return Time::new(h, m, s, 0).ok();
                }
                minute = first_bit(self.minutes, m + 1);
            }
            hour = first_bit(self.hours, h + 1);
        }
        None
    }

    /// The first matching wall-clock time at or after `from` and before `until` (whole
    /// seconds; no end: up to the last date there is).
    pub(super) fn next_civil(&self, from: DateTime, until: Option<DateTime>) -> Option<DateTime> {
        let last = until.map_or(Date::MAX, DateTime::date);
        let mut date = from.date();
        let mut time = from.time();
        loop {
            let day = self.next_date(date, last)?;
            if day != date {
                time = Time::midnight();
            }
            if let Some(at) = self.next_time(time) {
                let at = day.to_datetime(at);
                return until.is_none_or(|until| at < until).then_some(at);
            }
            date = day.tomorrow().ok()?;
            time = Time::midnight();
        }
    }
}

impl Days {
    fn matches(&self, day: i8, length: i8, weekday: i8) -> bool {
        has(self.each, day) || (self.last && day == length) || self.nearest(day, length, weekday)
    }

    /// Whether a `W` day resolves to `day`: a Saturday moves to the Friday before, a Sunday to
    /// the Monday after, never out of the month (the 1st on a Saturday moves to Monday the 3rd,
    /// the last day on a Sunday to the Friday before). So only days within two of `day` count.
    fn nearest(&self, day: i8, length: i8, weekday: i8) -> bool {
        if self.nearest_weekday == 0 {
            return false;
        }
        (day - 2..=day + 2)
            .filter(|written| (1..=length).contains(written) && has(self.nearest_weekday, *written))
            .any(|written| {
                let target = match (weekday + written - day).rem_euclid(7) {
                    6 if written > 1 => written - 1,
                    6 => written + 2,
                    0 if written < length => written + 1,
                    0 => written - 2,
                    _ => written,
                };
                target == day
            })
    }
}

impl Weekdays {
    fn matches(&self, day: i8, length: i8, weekday: i8) -> bool {
        let bit = 1_u8 << weekday;
        let occurrence = usize::try_from((day - 1) / 7).unwrap_or(usize::MAX);
        has(self.each, weekday)
            || (self.last & bit != 0 && day + 7 > length)
            || self.nth.get(occurrence).is_some_and(|nth| nth & bit != 0)
    }
}

fn has(set: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|value| value < 64 && set & (1 << value) != 0)
}

/// The lowest value in `set` at or above `from`.
fn first_bit(set: u64, from: u32) -> Option<u32> {
    let above = set.checked_shr(from)?.checked_shl(from)?;
    (above != 0).then(|| above.trailing_zeros())
}
