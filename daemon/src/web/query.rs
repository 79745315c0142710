//! Query strings: each page names the parameters it takes, and anything else, a repeated
//! parameter or a value that does not parse is a 400 whose text says which and what was
//! expected. An empty value counts as absent, as a form sends its empty fields. The query string
//! must be valid percent-encoded UTF-8: a bad escape is refused, not read as something else.

use std::collections::BTreeMap;
use std::str::FromStr;

use jiff::tz::TimeZone;

use super::page::PageError;
use crate::time::{InstantError, parse_instant_or_ago, to_ms};
use crate::units::parse_duration;

/// A page's parsed query string.
#[derive(Debug)]
pub(crate) struct Query {
    values: BTreeMap<String, String>,
}

impl Query {
    /// Parses `raw` (the part after `?`), accepting only the parameters in `allowed`.
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, PageError> {
        let mut values = BTreeMap::new();
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let refuse = |at: String| {
                    PageError::BadRequest(format!(
                        "the query string is not valid percent-encoded UTF-8 at `{at}`"
                    ))
                };
                Ok((
                    decode(key, true).map_err(refuse)?,
                    decode(value, true).map_err(refuse)?,
                ))
            })
            .collect::<Result<Vec<(String, String)>, PageError>>()?;
        for (key, value) in pairs {
            if !allowed.contains(&key.as_ref()) {
                let expected = if allowed.is_empty() {
                    "this page takes no parameters".to_owned()
                } else {
                    format!("this page takes {}", allowed.join(", "))
                };
                return Err(PageError::BadRequest(format!(
                    "unknown parameter `{key}`: {expected}"
                )));
            }
            if value.trim().is_empty() {
                continue;
            }
            if values
                .insert(key.clone(), value.trim().to_owned())
                .is_some()
            {
                return Err(PageError::BadRequest(format!(
                    "parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(Query { values })
    }

    /// The raw text of `key`, if given.
    pub(crate) fn text(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `key` parsed by its type's `FromStr`, whose error names the valid values.
    pub(crate) fn parsed<T>(&self, key: &str) -> Result<Option<T>, PageError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.text(key)
            .map(|text| {
                text.parse()
                    .map_err(|e| PageError::BadRequest(format!("parameter `{key}`: {e}")))
            })
            .transpose()
    }

    /// `key` as a whole number in `range`.
    pub(crate) fn number(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, PageError> {
        let Some(text) = self.text(key) else {
            return Ok(None);
        };
        match text.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(PageError::BadRequest(format!(
                "parameter `{key}` must be a whole number from {} to {}, not `{text}`",
                range.start(),
                range.end()
            ))),
        }
    }

    /// `key` as a duration such as `24h` or `7d`, between `min_ms` and `max_ms`.
    pub(crate) fn duration_ms(
        &self,
        key: &str,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Option<i64>, PageError> {
        let Some(text) = self.text(key) else {
            return Ok(None);
        };
        let range = || {
            format!(
                "from {} to {}",
                super::fmt::span(min_ms),
                super::fmt::span(max_ms)
            )
        };
        let ms = parse_duration(text)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .ok_or_else(|| {
                PageError::BadRequest(format!(
                    "parameter `{key}`: `{text}` is not a duration such as 1h, 24h or 7d ({})",
                    range()
                ))
            })?;
        if !(min_ms..=max_ms).contains(&ms) {
            return Err(PageError::BadRequest(format!(
                "parameter `{key}`: {text} is out of range: {}",
                range()
            )));
        }
        Ok(Some(ms))
    }

    /// `key` as an instant: RFC 3339, a duration ago (`2h`), or a date and time without a
    /// zone (`2027-01-05 10:00`, as a date picker sends it) read in `zone`.
    pub(crate) fn instant(
        &self,
        key: &str,
        now: jiff::Timestamp,
        zone: &TimeZone,
    ) -> Result<Option<i64>, PageError> {
        let Some(text) = self.text(key) else {
            return Ok(None);
        };
        if let Ok(civil) = text.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>()
            && let Ok(zoned) = civil.to_zoned(zone.clone())
        {
            return Ok(Some(to_ms(zoned.timestamp())));
        }
        if let Ok(date) = text.parse::<jiff::civil::Date>()
            && let Ok(zoned) = date.to_zoned(zone.clone())
        {
            return Ok(Some(to_ms(zoned.timestamp())));
        }
        parse_instant_or_ago(text, now)
            .map(|at| Some(to_ms(at)))
            .map_err(|e| {
                PageError::BadRequest(match e {
                    InstantError::Unparsed(_) => format!(
                        "parameter `{key}`: `{text}` is neither an RFC 3339 instant \
                         (2027-01-01T00:00:00Z), a duration ago (30m, 2h, 7d) nor a local date \
                         and time (2027-01-05 10:00)"
                    ),
                    InstantError::TooFarBack(_) => format!(
                        "parameter `{key}`: `{text}` is a duration ago that reaches before the \
                         year -9999: give a shorter duration, an RFC 3339 instant \
                         (2027-01-01T00:00:00Z) or a local date and time (2027-01-05 10:00)"
                    ),
                })
            })
    }

    /// `key` as an instant (as [`Query::instant`] reads it) from `earliest` to `latest`, Unix
    /// ms; the error names the range, in `zone`.
    pub(crate) fn instant_within(
        &self,
        key: &str,
        now: jiff::Timestamp,
        zone: &TimeZone,
        (earliest, latest): (i64, i64),
    ) -> Result<Option<i64>, PageError> {
        let out_of_range = |text: &str| {
            PageError::BadRequest(format!(
                "parameter `{key}` must be an instant from {} to {}, not `{text}`",
                super::fmt::when(earliest, zone),
                super::fmt::when(latest, zone)
            ))
        };
        match self.instant(key, now, zone) {
            Ok(Some(at)) if !(earliest..=latest).contains(&at) => {
                Err(out_of_range(self.text(key).unwrap_or_default()))
            }
            Err(_)
                if self.text(key).is_some_and(|text| {
                    matches!(
                        parse_instant_or_ago(text, now),
                        Err(InstantError::TooFarBack(_))
                    )
                }) =>
            {
                Err(out_of_range(self.text(key).unwrap_or_default()))
            }
            other => other,
        }
    }
}

/// `text` with its percent-escapes decoded (and `+` read as a space when `plus_is_space`, as in
/// a query string). A `%` not followed by two hex digits, or escapes that do not make UTF-8,
/// are refused: the error is the text where decoding failed, as written.
pub(crate) fn decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let raw = text.as_bytes();
    let refuse = |at: std::ops::Range<usize>| {
        String::from_utf8_lossy(&raw[at.start..at.end.min(raw.len())]).into_owned()
    };
    let mut bytes = Vec::with_capacity(raw.len());
    // Where each decoded byte starts in `raw`, to point at the escapes that do not make UTF-8.
    let mut origin = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        origin.push(i);
        match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).and_then(|digits| {
                    std::str::from_utf8(digits)
                        .ok()
                        .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                });
                let byte = hex.ok_or_else(|| refuse(i..i + 3))?;
                bytes.push(byte);
                i += 3;
            }
            b'+' if plus_is_space => {
                bytes.push(b' ');
                i += 1;
            }
            byte => {
                bytes.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error();
        let start = bad.valid_up_to();
        let end = bad.error_len().map_or(raw.len(), |len| {
            origin.get(start + len).copied().unwrap_or(raw.len())
        });
        refuse(origin[start]..end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(raw: &str, allowed: &[&str]) -> String {
        match Query::parse(Some(raw), allowed) {
            Err(PageError::BadRequest(reason)) => reason,
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert_eq!(
            bad("jbo=a", &["job", "status"]),
            "unknown parameter `jbo`: this page takes job, status"
        );
        assert_eq!(
            bad("job=a&job=b", &["job"]),
            "parameter `job` is given more than once"
        );
        let query = Query::parse(Some("job=&status=failed"), &["job", "status"]).unwrap();
        assert_eq!(query.text("job"), None, "an empty field is absent");
        assert_eq!(query.text("status"), Some("failed"));
    }

    #[test]
    fn values_are_checked() {
        let query = Query::parse(
            Some("limit=0&span=fortnight&at=tomorrow"),
            &["limit", "span", "at"],
        )
        .unwrap();
        let PageError::BadRequest(reason) = query.number("limit", 1..=1000).unwrap_err() else {
            panic!()
        };
        assert_eq!(
            reason,
            "parameter `limit` must be a whole number from 1 to 1000, not `0`"
        );
        let PageError::BadRequest(reason) = query
            .duration_ms("span", 3_600_000, 7 * 86_400_000)
            .unwrap_err()
        else {
            panic!()
        };
        assert!(
            reason.starts_with("parameter `span`: `fortnight` is not a duration"),
            "{reason}"
        );
        let wide = Query::parse(Some("span=2w"), &["span"]).unwrap();
        let PageError::BadRequest(reason) = wide
            .duration_ms("span", 3_600_000, 7 * 86_400_000)
            .unwrap_err()
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "parameter `span`: 2w is out of range: from 1h to 7d"
        );
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let PageError::BadRequest(reason) = query.instant("at", now, &TimeZone::UTC).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "parameter `at`: `tomorrow` is neither an RFC 3339 instant (2027-01-01T00:00:00Z), \
             a duration ago (30m, 2h, 7d) nor a local date and time (2027-01-05 10:00)"
        );
    }

    #[test]
    fn bad_percent_escapes_are_refused() {
        for (raw, at) in [
            ("job=%FF%FE", "%FF"),
            ("job=ok%C3", "%C3"),
            ("job=%", "%"),
            ("job=%zz", "%zz"),
            ("job=a%2", "%2"),
            ("j%ZZob=a", "%ZZ"),
        ] {
            assert_eq!(
                bad(raw, &["job"]),
                format!("the query string is not valid percent-encoded UTF-8 at `{at}`"),
                "{raw}"
            );
        }
        let query = Query::parse(Some("job=caf%C3%A9+cr%C3%A8me%2B"), &["job"]).unwrap();
        assert_eq!(query.text("job"), Some("café crème+"));
        assert_eq!(decode("a+b%20c", false).unwrap(), "a+b c");
    }

    #[test]
    fn instants_too_far_back_or_out_of_range_say_what_is_accepted() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let query = Query::parse(
            Some("since=99999999999d&end=1969-12-31T00:00:00Z"),
            &["since", "end"],
        )
        .unwrap();
        let PageError::BadRequest(reason) =
            query.instant("since", now, &TimeZone::UTC).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "parameter `since`: `99999999999d` is a duration ago that reaches before the year \
             -9999: give a shorter duration, an RFC 3339 instant (2027-01-01T00:00:00Z) or a \
             local date and time (2027-01-05 10:00)"
        );
        let range = (0, 1_800_000_000_000);
        for key in ["since", "end"] {
            let PageError::BadRequest(reason) = query
                .instant_within(key, now, &TimeZone::UTC, range)
                .unwrap_err()
            else {
                panic!()
            };
            assert!(
                reason.starts_with(&format!(
                    "parameter `{key}` must be an instant from 1970-01-01 00:00:00 UTC to \
                     2027-01-15 08:00:00 UTC, not `"
                )),
                "{reason}"
            );
        }
    }

    #[test]
    fn instants_take_three_forms() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let at = |text: &str| {
            Query::parse(Some(&format!("at={text}")), &["at"])
                .unwrap()
                .instant("at", now, &zone)
                .unwrap()
                .unwrap()
        };
        assert_eq!(at("2h"), 1_800_000_000_000 - 7_200_000);
        assert_eq!(at("2027-01-05T10:00:00Z"), 1_799_143_200_000);
        assert_eq!(at("2027-01-05+11:00"), 1_799_143_200_000, "+ is a space");
        assert_eq!(at("2027-01-05T11:00"), 1_799_143_200_000);
        assert_eq!(at("2027-01-05"), 1_799_103_600_000);
    }
}
