//! Table tests pinned to fixed instants: what a line fires, and what it is rejected for.

mod differential;
mod vectors;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{Schedule, ScheduleCache, jitter_offset};

fn fires(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    let tz = TimeZone::get(zone).unwrap();
    let schedule = Schedule::parse(expr, &tz).unwrap();
    let mut at: Timestamp = from.parse().unwrap();
    (0..n)
        .map(|_| {
            at = schedule.next_after(at).unwrap();
            at.to_string()
        })
        .collect()
}

#[test]
fn fires_match_vixie_cron() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "* * * * *",
            "UTC",
            "2027-01-01T00:00:30Z",
            &["2027-01-01T00:01:00Z", "2027-01-01T00:02:00Z"],
        ),
        (
            "*/20 * * * * *",
            "UTC",
            "2027-01-01T00:00:00Z",
            &[
                "2027-01-01T00:00:20Z",
                "2027-01-01T00:00:40Z",
                "2027-01-01T00:01:00Z",
            ],
        ),
        (
            "@hourly",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2027-01-01T01:00:00Z", "2027-01-01T02:00:00Z"],
        ),
        (
            "@daily",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2027-01-02T00:00:00Z", "2027-01-03T00:00:00Z"],
        ),
        (
            "@weekly",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2027-01-03T00:00:00Z", "2027-01-10T00:00:00Z"],
        ),
        (
            "@monthly",
            "UTC",
            "2027-01-15T00:00:00Z",
            &["2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"],
        ),
        (
            "@yearly",
            "UTC",
            "2027-01-15T00:00:00Z",
            &["2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"],
        ),
        (
            "@annually",
            "UTC",
            "2027-01-15T00:00:00Z",
            &["2028-01-01T00:00:00Z"],
        ),
        // Names for months and days, in any case.
        (
            "0 9 * jan,JUL Mon-Fri",
            "UTC",
            "2027-01-01T00:00:00Z",
            &[
                "2027-01-01T09:00:00Z",
                "2027-01-04T09:00:00Z",
                "2027-01-05T09:00:00Z",
                "2027-01-06T09:00:00Z",
            ],
        ),
        // Sunday is 0 and 7; 1-5 is Monday to Friday.
        (
            "0 0 * * 0",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2027-01-03T00:00:00Z", "2027-01-10T00:00:00Z"],
        ),
        (
            "0 0 * * 7",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2027-01-03T00:00:00Z", "2027-01-10T00:00:00Z"],
        ),
        (
            "0 0 * * 1-5",
            "UTC",
            "2027-01-01T12:00:00Z",
            &["2027-01-04T00:00:00Z", "2027-01-05T00:00:00Z"],
        ),
        // Both day fields restricted: a day matching either fires.
        (
            "30 2 15 * MON",
            "UTC",
            "2027-01-01T00:00:00Z",
            &[
                "2027-01-04T02:30:00Z",
                "2027-01-11T02:30:00Z",
                "2027-01-15T02:30:00Z",
                "2027-01-18T02:30:00Z",
            ],
        ),
        // A day field starting with `*` counts as unrestricted: the 1st or 21st that is a Monday.
        (
            "0 0 */20 * MON",
            "UTC",
            "2027-01-01T00:00:00Z",
            &[
                "2027-02-01T00:00:00Z",
                "2027-03-01T00:00:00Z",
                "2027-06-21T00:00:00Z",
            ],
        ),
        // `*/7` in day-of-week is 0 and 7, Sunday: the 13th that is a Sunday.
        (
            "0 0 13 * */7",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2027-06-13T00:00:00Z", "2028-02-13T00:00:00Z"],
        ),
        // Leap day only.
        (
            "0 12 29 2 *",
            "UTC",
            "2027-01-01T00:00:00Z",
            &["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"],
        ),
        // Wall-clock time in the job's zone.
        (
            "0 9 * * *",
            "Asia/Tokyo",
            "2027-01-01T00:00:00Z",
            &["2027-01-02T00:00:00Z", "2027-01-03T00:00:00Z"],
        ),
    ];
    for (expr, zone, from, expected) in cases {
        assert_eq!(
            fires(expr, zone, from, expected.len()),
            *expected,
            "{expr} in {zone} after {from}"
        );
    }
}

#[test]
fn daylight_saving_follows_the_contract() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // Berlin springs forward on 2027-03-28 at 02:00 CET to 03:00 CEST: a fixed-time job
        // whose time is skipped fires at the first instant after the gap.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2027-03-27T12:00:00Z",
            &["2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"],
        ),
        // Other jobs fire only at real occurrences: none in the missing hour.
        (
            "*/30 2 * * *",
            "Europe/Berlin",
            "2027-03-27T23:00:00Z",
            &["2027-03-29T00:00:00Z", "2027-03-29T00:30:00Z"],
        ),
        (
            "0 * * * *",
            "Europe/Berlin",
            "2027-03-27T23:30:00Z",
            &[
                "2027-03-28T00:00:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-28T02:00:00Z",
            ],
        ),
        // Berlin falls back on 2027-10-31 at 03:00 CEST to 02:00 CET: a fixed-time job fires on
        // the first pass only.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2027-10-30T12:00:00Z",
            &["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
        ),
        // Other jobs fire on both passes.
        (
            "*/15 2 * * *",
            "Europe/Berlin",
            "2027-10-30T23:00:00Z",
            &[
                "2027-10-31T00:00:00Z",
                "2027-10-31T00:15:00Z",
                "2027-10-31T00:30:00Z",
                "2027-10-31T00:45:00Z",
                "2027-10-31T01:00:00Z",
                "2027-10-31T01:15:00Z",
                "2027-10-31T01:30:00Z",
                "2027-10-31T01:45:00Z",
                "2027-11-01T01:00:00Z",
            ],
        ),
        (
            "0 * * * *",
            "Europe/Berlin",
            "2027-10-30T23:30:00Z",
            &[
                "2027-10-31T00:00:00Z",
                "2027-10-31T01:00:00Z",
                "2027-10-31T02:00:00Z",
            ],
        ),
        // A fixed-time job with seconds is fixed-time too.
        (
            "15 30 2 * * *",
            "Europe/Berlin",
            "2027-10-30T12:00:00Z",
            &["2027-10-31T00:30:15Z", "2027-11-01T01:30:15Z"],
        ),
        // A job started inside the repeated hour's second pass does not go back to the first.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2027-10-31T01:10:00Z",
            &["2027-11-01T01:30:00Z"],
        ),
        // New York springs forward on 2027-03-14 at 02:00 EST to 03:00 EDT.
        (
            "0 2 * * *",
            "America/New_York",
            "2027-03-13T12:00:00Z",
            &["2027-03-14T07:00:00Z", "2027-03-15T06:00:00Z"],
        ),
        (
            "30 2 * * *",
            "America/New_York",
            "2027-03-13T12:00:00Z",
            &["2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z"],
        ),
        (
            "*/20 2 * * *",
            "America/New_York",
            "2027-03-14T05:00:00Z",
            &["2027-03-15T06:00:00Z"],
        ),
        // New York falls back on 2027-11-07 at 02:00 EDT to 01:00 EST.
        (
            "30 1 * * *",
            "America/New_York",
            "2027-11-06T12:00:00Z",
            &["2027-11-07T05:30:00Z", "2027-11-08T06:30:00Z"],
        ),
        (
            "*/30 1 * * *",
            "America/New_York",
            "2027-11-07T04:50:00Z",
            &[
                "2027-11-07T05:00:00Z",
                "2027-11-07T05:30:00Z",
                "2027-11-07T06:00:00Z",
                "2027-11-07T06:30:00Z",
                "2027-11-08T06:00:00Z",
            ],
        ),
    ];
    for (expr, zone, from, expected) in cases {
        assert_eq!(
            fires(expr, zone, from, expected.len()),
            *expected,
            "{expr} in {zone} after {from}"
        );
    }
}

#[test]
fn next_is_strictly_after() {
    let schedule = Schedule::parse("0 * * * *", &TimeZone::UTC).unwrap();
    let on_fire: Timestamp = "2027-01-01T01:00:00Z".parse().unwrap();
    assert_eq!(
        schedule.next_after(on_fire).unwrap().to_string(),
        "2027-01-01T02:00:00Z"
    );
    let just_before: Timestamp = "2027-01-01T00:59:59.999Z".parse().unwrap();
    assert_eq!(
        schedule.next_after(just_before).unwrap().to_string(),
        "2027-01-01T01:00:00Z"
    );
}

#[test]
fn reboot_has_no_next_fire() {
    let schedule = Schedule::parse("@reboot", &TimeZone::UTC).unwrap();
    assert!(matches!(schedule, Schedule::Reboot));
    assert!(schedule.next_after(Timestamp::now()).is_none());
}

#[test]
fn bad_lines_say_what_was_expected() {
    let cases = [
        ("* * * *", "found 4 field(s); expected 5"),
        ("0 0 1 1 * 2027 *", "found 7 field(s)"),
        (
            "61 * * * *",
            "minute field `61`: `61` is out of range; values are 0-59",
        ),
        (
            "0 24 * * *",
            "hour field `24`: `24` is out of range; values are 0-23",
        ),
        (
            "0 0 0 * *",
            "day-of-month field `0`: `0` is out of range; values are 1-31",
        ),
        (
            "0 0 * 13 *",
            "month field `13`: `13` is out of range; values are 1-12 or JAN-DEC",
        ),
        (
            "0 0 * * 8",
            "day-of-week field `8`: `8` is out of range; values are 0-7 or SUN-SAT",
        ),
        (
            "0 0 * * FUNDAY",
            "day-of-week field `FUNDAY`: `FUNDAY` is not a number or a name",
        ),
        (
            "*/0 * * * *",
            "minute field `*/0`: the step after `/` must be a positive number",
        ),
        (
            "1-2-3 * * * *",
            "minute field `1-2-3`: expected a number, a range like 1-5",
        ),
        ("60 * * * * *", "second field `60`"),
        ("@fortnightly", "unknown shortcut; expected one of @yearly"),
        ("0 0 30 2 *", "it never matches a real date"),
        ("0 0 31 4,6,9,11 *", "it never matches a real date"),
        ("", "found 0 field(s)"),
        (
            "5/15 * * * *",
            "minute field `5/15`: a step follows `*` or a range, as in `*/15` or `5-59/15`",
        ),
        (
            "0 0 5-1 * *",
            "day-of-month field `5-1`: the range `5-1` ends before it starts",
        ),
        (
            "1,,2 * * * *",
            "minute field `1,,2`: an empty item; separate values with single commas",
        ),
        (
            "-5 * * * *",
            "minute field `-5`: a range needs a value on each side of `-`",
        ),
        (
            "0 0 * * MON#6",
            "day-of-week field `MON#6`: `MON#6` needs an occurrence from 1 to 5 after `#`",
        ),
        (
            "0 0 LW * *",
            "day-of-month field `LW`: `L` is not a number or a name",
        ),
        (
            "0 0 W * *",
            "day-of-month field `W`: `W` is not a number or a name",
        ),
        (
            "0 0 * * #2",
            "day-of-week field `#2`: `#2` is not a number or a name",
        ),
        (
            "0 0 * * L",
            "day-of-week field `L`: `L` is not a number or a name",
        ),
        (
            "L * * * *",
            "minute field `L`: `L` is not a number or a name",
        ),
        (
            "0 0 * JAN-FOO *",
            "month field `JAN-FOO`: `FOO` is not a number or a name",
        ),
    ];
    for (line, expected) in cases {
        let err = Schedule::parse(line, &TimeZone::UTC)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("invalid schedule `{line}`: ")),
            "{line}: {err}"
        );
        assert!(err.contains(expected), "{line}: {err}");
        // Only a wrong count of fields is answered with the expected count.
        assert_eq!(
            err.contains("expected 5"),
            expected.starts_with("found"),
            "{line}: {err}"
        );
    }
}

#[test]
fn calendar_extensions_fire_as_documented() {
    let cases: &[(&str, &str, &[&str])] = &[
        // The last day of the month.
        (
            "0 0 L * *",
            "2027-01-01T00:00:00Z",
            &[
                "2027-01-31T00:00:00Z",
                "2027-02-28T00:00:00Z",
                "2027-03-31T00:00:00Z",
            ],
        ),
        // The weekday nearest the 15th: a Saturday moves to the Friday before.
        (
            "0 0 15W * *",
            "2027-01-01T00:00:00Z",
            &["2027-01-15T00:00:00Z", "2027-02-15T00:00:00Z"],
        ),
        (
            "0 0 15W * *",
            "2027-05-01T00:00:00Z",
            &["2027-05-14T00:00:00Z"],
        ),
        // ...but never out of its month: the 1st on a Saturday moves to Monday the 3rd, the
        // 31st on a Sunday to Friday the 29th.
        (
            "0 0 1W * *",
            "2027-04-15T00:00:00Z",
            &["2027-05-03T00:00:00Z", "2027-06-01T00:00:00Z"],
        ),
        (
            "0 0 31W * *",
            "2027-01-01T00:00:00Z",
            &["2027-01-29T00:00:00Z", "2027-03-31T00:00:00Z"],
        ),
        // The last Friday, and the second Monday, of each month.
        (
            "0 0 * * 5L",
            "2027-01-01T00:00:00Z",
            &["2027-01-29T00:00:00Z", "2027-02-26T00:00:00Z"],
        ),
        (
            "0 0 * * MON#2",
            "2027-01-01T00:00:00Z",
            &["2027-01-11T00:00:00Z", "2027-02-08T00:00:00Z"],
        ),
    ];
    for (expr, from, expected) in cases {
        assert_eq!(
            fires(expr, "UTC", from, expected.len()),
            *expected,
            "{expr} after {from}"
        );
    }
}

#[test]
fn jitter_is_stable_and_bounded() {
    let jitter = Duration::from_secs(300);
    // Pinned: a change here would move every deployed job's fires.
    assert_eq!(
        jitter_offset("nightly-report", jitter),
        Duration::from_millis(249_131)
    );
    for name in ["a", "b", "backup.db", "x-1", "long-name-of-a-job"] {
        assert!(jitter_offset(name, jitter) < jitter);
    }
    assert_ne!(jitter_offset("a", jitter), jitter_offset("b", jitter));
    assert_eq!(jitter_offset("a", Duration::ZERO), Duration::ZERO);
}

/// The published FNV-1a 64 test vector for "a" pins the hash itself.
#[test]
fn jitter_hash_is_fnv1a() {
    let whole_range = Duration::from_millis(u64::MAX);
    assert_eq!(
        jitter_offset("a", whole_range),
        Duration::from_millis(0xaf63_dc4c_8601_ec8c)
    );
}

#[test]
fn jobs_with_the_same_expression_and_zone_share_one_parse() {
    let shared = |a: &Schedule, b: &Schedule| match (a, b) {
        (Schedule::Cron(a), Schedule::Cron(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    let mut cache = ScheduleCache::default();
    let first = cache.parse("*/5 * * * *", &TimeZone::UTC).unwrap();
    let again = cache.parse(" */5 * * * * ", &TimeZone::UTC).unwrap();
    let elsewhere = cache.parse("*/5 * * * *", &berlin).unwrap();
    assert!(shared(&first, &again));
    assert!(!shared(&first, &elsewhere), "a zone changes when it fires");
    let at: Timestamp = "2027-03-28T00:58:00Z".parse().unwrap();
    assert_eq!(
        again.next_after(at),
        Some("2027-03-28T01:00:00Z".parse().unwrap())
    );
    assert!(cache.parse("61 * * * *", &TimeZone::UTC).is_err());
}

fn parse_error(line: &str) -> String {
    Schedule::parse(line, &TimeZone::UTC)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

/// `SUN` is 0 wherever it is written, as cron(8) reads it: only a written `7` is the Sunday at
/// the end of a range.
#[test]
fn sunday_by_name_is_zero_at_either_end_of_a_range() {
    let sundays = [
        "2027-01-03T00:00:00Z",
        "2027-01-10T00:00:00Z",
        "2027-01-17T00:00:00Z",
    ];
    for line in [
        "0 0 * * SUN-SUN",
        "0 0 * * 0-SUN",
        "0 0 * * sun-sun/2",
        "0 0 * * SUN-0",
        "0 0 * * 7-7",
    ] {
        assert_eq!(
            fires(line, "UTC", "2027-01-01T00:00:00Z", 3),
            sundays,
            "{line}"
        );
    }
    // 2027-01-01 is a Friday.
    assert_eq!(
        fires("0 0 * * SAT-7", "UTC", "2027-01-01T00:00:00Z", 3),
        [
            "2027-01-02T00:00:00Z",
            "2027-01-03T00:00:00Z",
            "2027-01-09T00:00:00Z"
        ]
    );
    assert_eq!(
        fires("0 0 * * FRI-7/2", "UTC", "2027-01-01T00:00:00Z", 3),
        [
            "2027-01-03T00:00:00Z",
            "2027-01-08T00:00:00Z",
            "2027-01-10T00:00:00Z"
        ]
    );
    let err = parse_error("0 0 * * MON-SUN");
    assert!(
        err.ends_with(
            "day-of-week field `MON-SUN`: the range `MON-SUN` ends before it starts; `SUN` is 0, \
             so a range that ends on Sunday ends with 7, as in `MON-7`"
        ),
        "{err}"
    );
}

/// The documented rule holds for gaps of any length: Antarctica/Casey skipped three hours on
/// 2009-10-18 (02:00 +08 to 05:00 +11), Pacific/Apia the whole of 2011-12-30.
#[test]
fn gaps_of_any_length_keep_fixed_time_jobs_firing() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "0 2 * * *",
            "Antarctica/Casey",
            "2009-10-17T00:00:00Z",
            &["2009-10-17T18:00:00Z", "2009-10-18T15:00:00Z"],
        ),
        (
            "0 12 * * *",
            "Pacific/Apia",
            "2011-12-28T00:00:00Z",
            &[
                "2011-12-28T22:00:00Z",
                "2011-12-29T22:00:00Z",
                "2011-12-30T10:00:00Z",
                "2011-12-30T22:00:00Z",
                "2011-12-31T22:00:00Z",
            ],
        ),
        (
            "0 9 30 * *",
            "Pacific/Apia",
            "2011-12-01T00:00:00Z",
            &[
                "2011-12-30T10:00:00Z",
                "2012-01-29T19:00:00Z",
                "2012-03-29T19:00:00Z",
            ],
        ),
        // Two dates in one gap fire once, at its end: Dec 30 and Dec 31 at 00:00.
        (
            "0 0 * * *",
            "Pacific/Apia",
            "2011-12-29T00:00:00Z",
            &[
                "2011-12-29T10:00:00Z",
                "2011-12-30T10:00:00Z",
                "2011-12-31T10:00:00Z",
            ],
        ),
        // Other jobs fire at real occurrences only: none on the skipped day.
        (
            "0 */6 * * *",
            "Pacific/Apia",
            "2011-12-29T20:00:00Z",
            &[
                "2011-12-29T22:00:00Z",
                "2011-12-30T04:00:00Z",
                "2011-12-30T10:00:00Z",
                "2011-12-30T16:00:00Z",
            ],
        ),
    ];
    for (expr, zone, from, expected) in cases {
        assert_eq!(
            fires(expr, zone, from, expected.len()),
            *expected,
            "{expr} in {zone} after {from}"
        );
    }
}

/// Every transition of every zone on this machine from 1900 to 2100: a fixed-time job set to
/// the wall-clock time at which the transition happens fires right after it (at the end of a
/// gap, or at the first time after a repeated stretch), so the search gives up on none.
#[test]
fn no_zone_transition_stops_a_fixed_time_job() {
    let from: Timestamp = "1900-01-01T00:00:00Z".parse().unwrap();
    let until: Timestamp = "2100-01-01T00:00:00Z".parse().unwrap();
    let second = jiff::SignedDuration::from_secs(1);
    let days = |n: i64| jiff::SignedDuration::from_hours(24 * n);
    let mut checked = 0;
    for name in jiff::tz::db().available() {
        let tz = TimeZone::get(name.as_str()).unwrap();
        let transitions: Vec<Timestamp> = tz
            .following(from)
            .map(|t| t.timestamp())
            .take_while(|at| *at < until)
            .collect();
        for (i, &at) in transitions.iter().enumerate() {
            let lonely = |other: Option<&Timestamp>| {
                other.is_none_or(|other| other.duration_since(at).abs() > days(3))
            };
            let (before, after) = (tz.to_offset(at - second), tz.to_offset(at));
            if before == after
                || !lonely(i.checked_sub(1).and_then(|p| transitions.get(p)))
                || !lonely(transitions.get(i + 1))
            {
                continue;
            }
            let wall = before.to_datetime(at);
            let line = format!(
                "{} {} {} {} {} *",
                wall.second(),
                wall.minute(),
                wall.hour(),
                wall.day(),
                wall.month()
            );
            let schedule = Schedule::parse(&line, &tz).unwrap();
            let expected = if after > before {
                at
            } else {
                at + before.duration_since(after)
            };
            assert_eq!(
                schedule.next_after(at - days(2)),
                Some(expected),
                "`{line}` in {name} around the transition at {at}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 10_000,
        "only {checked} transitions: is tzdata installed?"
    );
}

#[test]
fn fires_continue_until_supported_time_ends() {
    assert_eq!(
        fires("0 12 * * *", "UTC", "4999-12-31T23:58:00Z", 2),
        ["5000-01-01T12:00:00Z", "5000-01-02T12:00:00Z"]
    );
    let every_minute = Schedule::parse("* * * * *", &TimeZone::UTC).unwrap();
    let near_the_end: Timestamp = "9999-12-30T21:58:30Z".parse().unwrap();
    let last = every_minute.next_after(near_the_end).unwrap();
    assert_eq!(last.to_string(), "9999-12-30T21:59:00Z");
    let last = every_minute.next_after(last).unwrap();
    assert_eq!(last.to_string(), "9999-12-30T22:00:00Z");
    assert_eq!(every_minute.next_after(last), None);
    assert_eq!(every_minute.next_after(Timestamp::MAX), None);
    // Fourteen hours ahead of UTC, the last civil day still has its fire.
    assert_eq!(
        fires("0 0 * * *", "Pacific/Kiritimati", "9999-12-29T12:00:00Z", 1),
        ["9999-12-30T10:00:00Z"]
    );
}

/// A fixed-time job is one value in each of second, minute and hour, none written starting
/// with `*`: however the value is spelled.
#[test]
fn fixed_time_is_the_documented_test() {
    let cases: &[(&str, &str, &[&str])] = &[
        // `2-3/5` is the one hour 2: the end of the gap, and the first pass only.
        (
            "30 2-3/5 * * *",
            "2027-03-27T12:00:00Z",
            &["2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"],
        ),
        (
            "30 2-3/5 * * *",
            "2027-10-30T12:00:00Z",
            &["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
        ),
        (
            "30 2,2 * * *",
            "2027-10-30T12:00:00Z",
            &["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
        ),
        (
            "0-0 30-30 02 * * *",
            "2027-03-27T12:00:00Z",
            &["2027-03-28T01:00:00Z"],
        ),
        // `*/60` is the one minute 0 but starts with `*`, as cron(8) reads it: not fixed-time,
        // so no fire in the gap and one on each pass.
        (
            "*/60 2 * * *",
            "2027-03-27T12:00:00Z",
            &["2027-03-29T00:00:00Z"],
        ),
        (
            "*/60 2 * * *",
            "2027-10-30T12:00:00Z",
            &[
                "2027-10-31T00:00:00Z",
                "2027-10-31T01:00:00Z",
                "2027-11-01T01:00:00Z",
            ],
        ),
    ];
    for (expr, from, expected) in cases {
        assert_eq!(
            fires(expr, "Europe/Berlin", from, expected.len()),
            *expected,
            "{expr} after {from}"
        );
    }
}

#[test]
fn a_star_may_be_one_item_of_a_list() {
    assert_eq!(
        fires("*,5 * * * *", "UTC", "2027-01-01T00:00:30Z", 2),
        ["2027-01-01T00:01:00Z", "2027-01-01T00:02:00Z"]
    );
    // A day field starting with `*` is unrestricted whatever follows it: Mondays only, and the
    // 5th only.
    assert_eq!(
        fires("0 0 *,5 * MON", "UTC", "2027-01-01T00:00:00Z", 2),
        ["2027-01-04T00:00:00Z", "2027-01-11T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 5 * *,MON", "UTC", "2027-01-01T00:00:00Z", 2),
        ["2027-01-05T00:00:00Z", "2027-02-05T00:00:00Z"]
    );
}

#[test]
fn only_spaces_and_tabs_separate_fields() {
    assert_eq!(
        fires("\t0\t0 * *  *\t", "UTC", "2027-01-01T00:00:00Z", 1),
        ["2027-01-02T00:00:00Z"]
    );
    let cases = [
        (
            "0\u{a0}0 * * *",
            "U+00A0 (no-break space) at character 2 is not a field separator; separate fields \
             with spaces or tabs",
        ),
        (
            "0 0\u{2003}* * *",
            "U+2003 (em space) at character 4 is not",
        ),
        (
            "0 0 * * *\u{3000}",
            "U+3000 (ideographic space) at character 10 is not",
        ),
        (
            "0 0 *\u{85}* *",
            "U+0085 (next line, NEL) at character 6 is not",
        ),
        ("@daily\n", "U+000A (line feed) at character 7 is not"),
        (
            "0 0 * * MON\u{200b}",
            "U+200B (zero width space) at character 12",
        ),
        (
            "0 0 * * 1\u{2013}5",
            "`\u{2013}` (U+2013) at character 10 is not allowed; a schedule holds ASCII letters",
        ),
        (
            "0 0 ? * MON",
            "`?` at character 5 is not cron(8) syntax; write `*` for any day",
        ),
    ];
    for (line, expected) in cases {
        let err = parse_error(line);
        assert!(err.contains(expected), "{line:?}: {err}");
    }
}
