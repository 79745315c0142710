//! The job's params as written, and the checked [`Report`] they describe.

use std::path::{Path, PathBuf};

use jiff::Zoned;
use pacer_plugin_api::{Error, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// The job's `[jobs.params]` table as written.
///
/// Values stay JSON until [`Report::from_params`] checks them, so that a missing or mistyped
/// value gets a message naming the key and what it should be, rather than serde's. Unknown keys
/// are still refused here, with serde's list of the valid ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    database: Option<Value>,
    query: Option<Value>,
    output: Option<Value>,
    format: Option<Value>,
    title: Option<Value>,
    /// Added by `pacerd` to a chained run's params; a report reads its database, not the run
    /// that started it, so it is accepted and ignored.
    #[serde(default, rename = "upstream")]
    _upstream: Option<IgnoredAny>,
}

/// How the result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Pdf,
}

/// Checked params: what one run does.
#[derive(Debug)]
pub struct Report {
    /// As written: relative to the run's working directory.
    pub database: PathBuf,
    pub query: String,
    /// The output path before its strftime placeholders are expanded.
    pub output: String,
    pub format: Format,
    /// `None`: the output file's name.
    pub title: Option<String>,
}

impl Report {
    pub fn from_params(params: &Params) -> Result<Self, Error> {
        let database = match string("database", params.database.as_ref())? {
            None => bail!("`database` is required: the SQLite file to read"),
            Some("") => bail!("`database` must not be empty"),
            Some(path) => PathBuf::from(path),
        };
        let query = match string("query", params.query.as_ref())? {
            None => bail!("`query` is required: the SELECT statement whose rows make the report"),
            Some(query) => {
                check_query(query)?;
                query.to_owned()
            }
        };
        let output = match string("output", params.output.as_ref())? {
            None => {
                bail!("`output` is required: the file to write, such as \"reports/%Y-%m-%d.csv\"")
            }
            Some("") => bail!("`output` must not be empty"),
            Some(output) => output.to_owned(),
        };
        // Expanding once now finds bad placeholders before any run.
        expand(&output, &Zoned::now())?;
        let format = match string("format", params.format.as_ref())? {
            Some("csv") => Format::Csv,
            Some("pdf") => Format::Pdf,
            Some(other) => bail!("`format` must be \"csv\" or \"pdf\", not {other:?}"),
            None => match Path::new(&output).extension().and_then(|e| e.to_str()) {
                Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
                Some(ext) if ext.eq_ignore_ascii_case("pdf") => Format::Pdf,
                _ => bail!(
                    "`format` is required when `output` does not end in .csv or .pdf: \
                     \"csv\" or \"pdf\""
                ),
            },
        };
        let title = string("title", params.title.as_ref())?.map(str::to_owned);
        Ok(Self {
            database,
            query,
            output,
            format,
            title,
        })
    }
}

/// `output` with its strftime placeholders expanded at `now`.
pub fn expand(output: &str, now: &Zoned) -> Result<PathBuf, Error> {
    let path = match jiff::fmt::strtime::format(output, now) {
        Ok(path) => PathBuf::from(path),
        Err(e) => bail!(
            "`output`: `{output}` has an invalid strftime placeholder ({e}); write `%%` for a \
             literal `%`"
        ),
    };
    if output.ends_with('/') || path.file_name().is_none() {
        bail!("`output` must name a file, not a directory: `{output}`");
    }
    Ok(path)
}

/// The string value of `key`, or `None` when it is absent.
fn string<'a>(key: &str, value: Option<&'a Value>) -> Result<Option<&'a str>, Error> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => bail!("`{key}` must be a string, not {}", kind(other)),
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

/// The statements that only read. A `WITH` can still end in a write (`WITH ... DELETE`):
/// SQLite itself tells when the statement is prepared, and the read-only connection refuses
/// the write regardless.
const READING: [&str; 3] = ["SELECT", "WITH", "VALUES"];

/// Checks without a database what can be checked: one statement, and one that reads.
fn check_query(query: &str) -> Result<(), Error> {
    let tokens = Tokens::new(query);
    let Some(first) = tokens.clone().next() else {
        bail!("`query` must not be empty");
    };
    let keyword: String = first
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    if !READING.iter().any(|k| keyword.eq_ignore_ascii_case(k)) {
        bail!(
            "`query` must be a statement that reads (SELECT, WITH or VALUES), not {}: the \
             database is opened read-only",
            if keyword.is_empty() {
                first.to_owned()
            } else {
                keyword.to_ascii_uppercase()
            }
        );
    }
    let mut tokens = tokens.skip_while(|token| *token != ";");
    if tokens.any(|token| token != ";") {
        bail!("`query` must be a single statement: remove what follows the `;`");
    }
    Ok(())
}

/// Splits SQL into rough tokens, enough to find statement boundaries: quoted strings and
/// identifiers come whole (so a `;` inside them does not count), comments and whitespace are
/// dropped, `;` is a token of its own, and anything else runs up to the next of those.
#[derive(Clone)]
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a str) -> Self {
        Self { rest: sql }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            self.rest = self.rest.trim_start();
            if let Some(comment) = self.rest.strip_prefix("--") {
                self.rest = comment.find('\n').map_or("", |end| &comment[end..]);
            } else if let Some(comment) = self.rest.strip_prefix("/*") {
                self.rest = comment.find("*/").map_or("", |end| &comment[end + 2..]);
            } else {
                break;
            }
        }
        let first = self.rest.chars().next()?;
        let len = match first {
            ';' => 1,
            '\'' | '"' | '`' | '[' => {
                let close = if first == '[' { ']' } else { first };
                // A doubled quote inside a quoted string is an escaped one: scanning on from
                // the closing quote finds the rest of the string as the next token, which is
                // just as good for finding boundaries.
                self.rest[1..]
                    .find(close)
                    .map_or(self.rest.len(), |end| end + 2)
            }
            _ => {
                let bytes = self.rest.as_bytes();
                // Stops only at ASCII bytes, so never inside a multi-byte character.
                (0..bytes.len())
                    .find(|&i| {
                        bytes[i].is_ascii_whitespace()
                            || matches!(bytes[i], b';' | b'\'' | b'"' | b'`' | b'[')
                            || bytes[i..].starts_with(b"--")
                            || bytes[i..].starts_with(b"/*")
                    })
                    .unwrap_or(bytes.len())
            }
        };
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_error(query: &str) -> Option<String> {
        check_query(query).err().map(|e| e.to_string())
    }

    #[test]
    fn reading_statements_pass() {
        for query in [
            "SELECT 1",
            "select * from runs where name = 'a;b' order by id;",
            "  -- the nightly numbers\n  WITH t AS (SELECT 1) SELECT * FROM t ;  -- done\n",
            "/* a; b */ values (1, 2), (3, 4)",
            r#"SELECT "semi;colon", [x;y], `z;` FROM t; ;"#,
            "SELECT 'it''s; fine'",
            "SELECT 1--comment; not a statement",
        ] {
            assert_eq!(query_error(query), None, "{query}");
        }
    }

    #[test]
    fn writes_and_several_statements_are_refused() {
        let reads = |what: &str| {
            format!(
                "`query` must be a statement that reads (SELECT, WITH or VALUES), not {what}: \
                 the database is opened read-only"
            )
        };
        assert_eq!(query_error("DELETE FROM runs").unwrap(), reads("DELETE"));
        assert_eq!(
            query_error("  insert into t values (1)").unwrap(),
            reads("INSERT")
        );
        assert_eq!(
            query_error("PRAGMA user_version = 3").unwrap(),
            reads("PRAGMA")
        );
        assert_eq!(query_error("(SELECT 1)").unwrap(), reads("(SELECT"));
        let single = "`query` must be a single statement: remove what follows the `;`";
        assert_eq!(query_error("SELECT 1; DROP TABLE t").unwrap(), single);
        assert_eq!(query_error("SELECT ';'; SELECT 2").unwrap(), single);
        let empty = "`query` must not be empty";
        assert_eq!(query_error("").unwrap(), empty);
        assert_eq!(query_error("  -- nothing\n /* here */ ").unwrap(), empty);
    }

    #[test]
    fn output_placeholders_expand() {
        let now: Zoned = "2027-03-04T05:06:07[Europe/Berlin]".parse().unwrap();
        assert_eq!(
            expand("reports/runs-%Y-%m-%d_%H%M.csv", &now).unwrap(),
            Path::new("reports/runs-2027-03-04_0506.csv")
        );
        assert_eq!(
            expand("100%%-%b.pdf", &now).unwrap(),
            Path::new("100%-Mar.pdf")
        );
        let message = expand("r-%.csv", &now).unwrap_err().to_string();
        assert!(
            message.starts_with("`output`: `r-%.csv` has an invalid strftime placeholder ("),
            "{message}"
        );
        assert_eq!(
            expand("reports/%Y/", &now).unwrap_err().to_string(),
            "`output` must name a file, not a directory: `reports/%Y/`"
        );
    }
}
