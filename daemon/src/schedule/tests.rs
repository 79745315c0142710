//! Table tests pinned to fixed instants: what a line fires, and what it is rejected for.

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
        ("", "found 0 field(s)"),
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
    }
}

#[test]
fn croner_extensions_still_parse() {
    for line in ["0 0 L * *", "0 0 15W * *", "0 0 * * 5L", "0 0 * * MON#2"] {
        Schedule::parse(line, &TimeZone::UTC).unwrap_or_else(|e| panic!("{line}: {e}"));
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
