//! Instants as the contract shows them, and the clock the daemon reads.
//!
//! Instants are stored and passed around as Unix milliseconds (`i64`): that is the precision the
//! contract promises, and an integer column sorts and indexes well in SQLite.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::units;

/// The source of "now" for everything that compares against the wall clock, so tests can set it.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current wall-clock instant.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Unix milliseconds of `ts`.
pub fn to_ms(ts: Timestamp) -> i64 {
    ts.as_millisecond()
}

/// How long from `now` until the Unix millisecond `at` begins (zero if it has), to the
/// microsecond: a wait counted from `now` truncated to its millisecond ends up to 1 ms after
/// `at`, before the timer's own rounding up.
pub fn until(now: Timestamp, at: i64) -> std::time::Duration {
    let micros = at
        .saturating_mul(1_000)
        .saturating_sub(now.as_microsecond());
    std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// The instant `ms` Unix milliseconds name, clamped to what `jiff` can represent.
pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// RFC 3339 in UTC with milliseconds, as every `--json` output shows instants:
/// `2027-01-01T00:00:00.000Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    format!("{:.3}", from_ms(ms))
}

/// Local time with the zone's abbreviation, as human tables show instants.
pub fn local(ms: i64, tz: &TimeZone) -> String {
    from_ms(ms)
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Why a `--since`/`--until`/`--from` value was refused; its text names the value and the forms
/// accepted, so that the CLI shows it as is and the web view can say the same of a parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    /// Neither form parses.
    #[error(
        "`{0}` is neither an RFC 3339 instant (2027-01-01T00:00:00Z) nor a duration ago \
         (30m, 2h, 7d)"
    )]
    Unparsed(String),
    /// A duration ago that lands before the earliest instant represented (year -9999).
    #[error(
        "`{0}` is a duration ago that reaches before the year -9999: give a shorter duration \
         or an RFC 3339 instant (2027-01-01T00:00:00Z)"
    )]
    TooFarBack(String),
}

/// Parses `--since`/`--until`/`--from` values: an RFC 3339 instant, or a duration ago such as
/// `2h`.
pub fn parse_instant_or_ago(text: &str, now: Timestamp) -> Result<Timestamp, InstantError> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Some(ts) = clamped_instant(text) {
        return Ok(ts);
    }
    let ago = units::parse_duration(text).map_err(|_| InstantError::Unparsed(text.to_owned()))?;
    jiff::SignedDuration::try_from(ago)
        .ok()
        .and_then(|ago| now.checked_sub(ago).ok())
        .ok_or_else(|| InstantError::TooFarBack(text.to_owned()))
}

/// An RFC 3339 instant beyond the ones `jiff` represents (which end late on 9999-12-30 UTC, so
/// that every offset still gives a civil date) is a valid instant all the same, such as
/// `9999-12-31T23:58:00Z`: it is read as the nearest one represented, since no fire and no
/// record lies beyond it.
fn clamped_instant(text: &str) -> Option<Timestamp> {
    let pieces = jiff::fmt::temporal::Pieces::parse(text).ok()?;
    let offset = pieces.to_numeric_offset()?;
    let wall = pieces.date().to_datetime(pieces.time()?);
    Some(offset.to_timestamp(wall).unwrap_or(if wall.year() < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    }))
}

/// Serde helpers that write optional Unix milliseconds as the contract's RFC 3339 strings.
pub mod json {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Option<i64>` milliseconds as `null` or `"2027-01-01T00:00:00.000Z"`.
    pub fn serialize_opt<S: Serializer>(value: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(ms) => s.serialize_str(&super::rfc3339_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    /// Serializes `i64` milliseconds as `"2027-01-01T00:00:00.000Z"`.
    pub fn serialize<S: Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_ms(*value))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<jiff::Timestamp>()
            .map(super::to_ms)
            .map_err(serde::de::Error::custom)
    }

    /// Reads what [`serialize_opt`] wrote.
    pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                text.parse::<jiff::Timestamp>()
                    .map(super::to_ms)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_milliseconds_and_utc() {
        assert_eq!(rfc3339_ms(1_798_761_600_000), "2027-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_798_761_600_123), "2027-01-01T00:00:00.123Z");
    }

    #[test]
    fn a_wait_ends_at_the_millisecond_not_a_millisecond_after() {
        let now: Timestamp = "2027-01-01T00:00:00.999600Z".parse().unwrap();
        let next_second = 1_798_761_601_000;
        assert_eq!(
            until(now, next_second),
            std::time::Duration::from_micros(400)
        );
        assert_eq!(until(now, next_second - 1_000), std::time::Duration::ZERO);
    }

    #[test]
    fn local_shows_the_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(local(1_798_761_600_000, &berlin), "2027-01-01 01:00:00 CET");
    }

    #[test]
    fn since_takes_instants_and_durations_ago() {
        let now: Timestamp = "2027-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_instant_or_ago("2027-01-01T06:00:00+01:00", now).unwrap(),
            "2027-01-01T05:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_instant_or_ago("2h", now).unwrap(),
            "2027-01-01T22:00:00Z".parse::<Timestamp>().unwrap()
        );
        let err = parse_instant_or_ago("yesterday", now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither an RFC 3339 instant"), "{err}");
        assert_eq!(
            parse_instant_or_ago("99999999999d", now)
                .unwrap_err()
                .to_string(),
            "`99999999999d` is a duration ago that reaches before the year -9999: give a \
             shorter duration or an RFC 3339 instant (2027-01-01T00:00:00Z)"
        );
    }

    #[test]
    fn instants_past_the_represented_range_are_valid_and_clamped() {
        let now: Timestamp = "2027-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_instant_or_ago("9999-12-31T23:58:00Z", now),
            Ok(Timestamp::MAX)
        );
        assert_eq!(
            parse_instant_or_ago("9999-12-31T23:58:00+01:00", now),
            Ok(Timestamp::MAX)
        );
        assert_eq!(
            parse_instant_or_ago("-009999-01-01T00:00:00Z", now),
            Ok(Timestamp::MIN)
        );
        for text in ["9999-12-31T23:58:00", "9999-13-31T23:58:00Z"] {
            assert_eq!(
                parse_instant_or_ago(text, now),
                Err(InstantError::Unparsed(text.to_owned()))
            );
        }
    }
}
