//! The next fire of a pattern in a time zone, by cron(8)'s rules across clock changes.
//!
//! A fixed-time line fires once for each matching date: at its time of day, at the first pass
//! when that time repeats, and at the first instant after the gap when it is skipped. Any other
//! line fires at every instant whose wall-clock time matches. Both searches walk the zone's
//! real transitions, so a gap of any length (a whole skipped day, as in Pacific/Apia at the end
//! of 2011) and any year the zone database covers are handled alike.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};

use super::pattern::Pattern;

/// The first fire strictly after `after`, or `None` when there is none up to the last instant
/// that can be represented ([`Timestamp::MAX`], late on 9999-12-30 UTC).
pub(super) fn next_fire(pattern: &Pattern, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let start = first_whole_second_after(after)?;
    match pattern.fixed_time {
        Some(time) => next_fixed_time(pattern, time, tz, start),
        None => next_occurrence(pattern, tz, start),
    }
}

/// Fires fall on whole seconds; the first one that can come after `after`.
fn first_whole_second_after(after: Timestamp) -> Option<Timestamp> {
    let mut second = after.as_second();
    if after.subsec_nanosecond() < 0 {
        second -= 1;
    }
    Timestamp::from_second(second.checked_add(1)?).ok()
}

/// Every instant whose wall-clock time matches: within each stretch of constant offset
/// between two transitions, wall-clock time runs steadily, so the first match there is found
/// on the calendar and mapped back with that stretch's offset.
fn next_occurrence(pattern: &Pattern, tz: &TimeZone, start: Timestamp) -> Option<Timestamp> {
    let mut from = start;
    loop {
        let offset = tz.to_offset(from);
        let end = tz.following(from).next().map(|t| t.timestamp());
        let wall_from = offset.to_datetime(from);
        let wall_end = end.map(|end| offset.to_datetime(end));
        if let Some(at) = pattern.next_civil(wall_from, wall_end) {
            return offset.to_timestamp(at).ok();
        }
        from = end?;
    }
}

/// One fire per matching date, at the first instant whose wall clock reads the time of day or
/// later. Those instants never decrease as the dates advance, so the first one not before
/// `start` is the answer. The walk starts two days before `start`'s date, since a date whose
/// time was skipped (by up to a day, as in Apia) fires at the end of the gap.
fn next_fixed_time(
    pattern: &Pattern,
    time: Time,
    tz: &TimeZone,
    start: Timestamp,
) -> Option<Timestamp> {
    let wall_start = tz.to_offset(start).to_datetime(start).date();
    let mut date = wall_start
        .yesterday()
        .and_then(Date::yesterday)
        .unwrap_or(wall_start);
    loop {
        date = pattern.next_date(date, Date::MAX)?;
        let fire = first_instant_at_or_after(tz, date, time)?;
        if fire >= start {
            return Some(fire);
        }
        date = date.tomorrow().ok()?;
    }
}

/// The first instant whose wall clock reads `date` at `time` or later: the earlier of two when
/// the time repeats, the end of the gap when it is skipped.
fn first_instant_at_or_after(tz: &TimeZone, date: Date, time: Time) -> Option<Timestamp> {
    let wall = date.to_datetime(time);
    match tz.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, a time in the gap names an instant just before the
            // transition that opened it; that transition is the first instant after the gap.
            let inside = after.to_timestamp(wall).ok()?;
            tz.following(inside).next().map(|t| t.timestamp())
        }
    }
}
