//! Query strings: each page names the parameters it takes, and anything else, a repeated
//! parameter or a value that does not parse is a 400 whose text says which and what was
//! expected. An empty value counts as absent, as a form sends its empty fields.

use std::collections::BTreeMap;
use std::str::FromStr;

use jiff::tz::TimeZone;

use super::page::PageError;
use crate::time::{parse_instant_or_ago, to_ms};
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
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
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
                .insert(key.clone().into_owned(), value.trim().to_owned())
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
                PageError::BadRequest(format!(
                    "parameter `{key}`: {e}, or a local date and time (2027-01-05 10:00)"
                ))
            })
    }
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
        assert!(reason.contains("RFC 3339"), "{reason}");
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
