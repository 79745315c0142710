//! The job's params as written, and the checked [`Job`] they describe.

use std::path::PathBuf;
use std::time::Duration;

use glob::Pattern;
use pacer_plugin_api::{Error, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// The job's `[jobs.params]` table as written.
///
/// Values stay JSON until [`Job::from_params`] checks them, so that a missing or mistyped value
/// gets a message naming the key and what it should be, rather than serde's. Unknown keys are
/// still refused here, with serde's list of the valid ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    path: Option<Value>,
    pattern: Option<Value>,
    older_than: Option<Value>,
    action: Option<Value>,
    recursive: Option<Value>,
    dry_run: Option<Value>,
    /// Added by `pacerd` to a chained run's params; a cleanup does not depend on what ran
    /// before it, so it is accepted and ignored.
    #[serde(default, rename = "upstream")]
    _upstream: Option<IgnoredAny>,
}

/// What to do with each old file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Delete,
    Gzip,
}

/// Checked params: what one run does.
#[derive(Debug)]
pub struct Job {
    /// The directory to clean, as written (relative to the run's working directory).
    pub dir: PathBuf,
    /// Matched against file names, never against paths.
    pub pattern: Pattern,
    /// A file qualifies when its modification time is at least this far in the past.
    pub older_than: Duration,
    pub action: Action,
    pub recursive: bool,
    pub dry_run: bool,
}

impl Job {
    pub fn from_params(params: &Params) -> Result<Self, Error> {
        let dir = match string("path", params.path.as_ref())? {
            None => bail!("`path` is required: the directory whose old files to delete or gzip"),
            Some("") => bail!("`path` must not be empty"),
            Some(path) => PathBuf::from(path),
        };
        let pattern = string("pattern", params.pattern.as_ref())?.unwrap_or("*");
        if pattern.contains('/') {
            bail!(
                "`pattern` is matched against file names, so it cannot contain `/`; \
                 set `path` to the directory instead"
            );
        }
        let pattern = match Pattern::new(pattern) {
            Ok(compiled) => compiled,
            Err(e) => bail!("`pattern`: `{pattern}` is not a valid glob ({})", e.msg),
        };
        let older_than = match string("older_than", params.older_than.as_ref())? {
            None => Duration::from_secs(7 * 86_400),
            Some(text) => parse_duration(text)
                .map_err(|why| Error::msg(format_args!("`older_than`: {why}")))?,
        };
        let action = match string("action", params.action.as_ref())? {
            Some("delete") => Action::Delete,
            Some("gzip") => Action::Gzip,
            Some(other) => bail!("`action` must be \"delete\" or \"gzip\", not {other:?}"),
            None => bail!("`action` is required: \"delete\" or \"gzip\""),
        };
        Ok(Self {
            dir,
            pattern,
            older_than,
            action,
            recursive: boolean("recursive", params.recursive.as_ref())?,
            dry_run: boolean("dry_run", params.dry_run.as_ref())?,
        })
    }
}

/// The string value of `key`, or `None` when it is absent.
fn string<'a>(key: &str, value: Option<&'a Value>) -> Result<Option<&'a str>, Error> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => bail!("`{key}` must be a string, not {}", kind(other)),
    }
}

/// The boolean value of `key`, false when it is absent.
fn boolean(key: &str, value: Option<&Value>) -> Result<bool, Error> {
    match value {
        None => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => bail!("`{key}` must be true or false, not {}", kind(other)),
    }
}

/// What a JSON value is, for messages (as TOML would call it where TOML has it).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// Parses `<integer><unit>` parts such as `7d` or `1d12h`, the way Pacer's config writes
/// durations; units are `ms`, `s`, `m`, `h`, `d` and `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration such as 30m, 12h or 7d");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let unit: u64 = match &rest[digits..digits + unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(invalid()),
        };
        millis = value
            .checked_mul(unit)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let day = 86_400;
        for (text, secs) in [
            ("7d", 7 * day),
            ("1d12h", day + 12 * 3600),
            ("30m", 1800),
            ("2w", 14 * day),
            ("0s", 0),
            ("1h30m15s", 5415),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "7", "d", "7 days", "1.5h", "-1d", "7D", "1h 30m", " 7d"] {
            assert_eq!(
                parse_duration(bad),
                Err(format!("`{bad}` is not a duration such as 30m, 12h or 7d")),
            );
        }
        assert_eq!(
            parse_duration("99999999999999999w"),
            Err("`99999999999999999w` is too long a duration".to_owned())
        );
    }
}
