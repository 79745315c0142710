//! Reading a config file section by section, so that one pass reports every mistake: a TOML
//! syntax error stops its file, but an unknown key or a value of the wrong type in one section
//! hides nothing in another. Unknown keys are found by walking the document against the field
//! lists of the [`raw`] structs (taken from their serde derives, so the two cannot disagree),
//! with a "did you mean" for a near miss.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::de::{self, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use super::error::{ConfigError, Lines};
use super::raw;

/// The main config file: `[daemon]`, `[pools.NAME]` and `[[jobs]]`. `None` when its syntax is
/// broken (that error is in `errors`).
pub fn main_file(
    file: &Path,
    lines: &Lines<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<raw::File> {
    let mut reader = Reader {
        file,
        lines,
        errors,
    };
    let root = reader.parse()?;
    let mut parsed = raw::File::default();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "daemon" => parsed.daemon = reader.section(value, "[daemon]"),
            "cluster" => parsed.cluster = reader.section(value, "[cluster]"),
            "pools" => parsed.pools = reader.pools(value),
            "jobs" => parsed.jobs = reader.jobs(value),
            other => reader.unknown(key.span(), other, "at the top level", &MAIN_SECTIONS),
        }
    }
    Some(parsed)
}

/// A drop-in from `jobs.d`: `[[jobs]]` only.
pub fn drop_in(
    file: &Path,
    lines: &Lines<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<raw::DropIn> {
    let mut reader = Reader {
        file,
        lines,
        errors,
    };
    let root = reader.parse()?;
    let mut parsed = raw::DropIn::default();
    for (key, value) in root {
        match key.get_ref().as_ref() {
            "jobs" => parsed.jobs = reader.jobs(value),
            section @ ("daemon" | "cluster" | "pools") => reader.error(
                key.span(),
                format!(
                    "a drop-in holds only [[jobs]]; `{section}` belongs in the main config file"
                ),
            ),
            other => reader.unknown(key.span(), other, "at the top level", &["jobs"]),
        }
    }
    Some(parsed)
}

/// `[daemon]` alone, as the CLI reads it: the rest of the file is not its business, so mistakes
/// there do not stop it.
pub fn daemon_only(
    file: &Path,
    lines: &Lines<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Spanned<raw::Daemon>> {
    let mut reader = Reader {
        file,
        lines,
        errors,
    };
    let root = reader.parse()?;
    reader.one_section(root, "daemon")
}

/// `[cluster]` alone, as the CLI reads it to find the shared database.
pub fn cluster_only(
    file: &Path,
    lines: &Lines<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Spanned<raw::Cluster>> {
    let mut reader = Reader {
        file,
        lines,
        errors,
    };
    let root = reader.parse()?;
    reader.one_section(root, "cluster")
}

/// The main file's sections, in the order the docs list them.
const MAIN_SECTIONS: [&str; 4] = ["daemon", "cluster", "pools", "jobs"];

/// Errors of one file, with its lines for positions.
struct Reader<'a, 'e> {
    file: &'a Path,
    lines: &'a Lines<'a>,
    errors: &'e mut Vec<ConfigError>,
}

impl<'a> Reader<'a, '_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            position: Some(self.lines.position(span.start)),
            message: message.into(),
        });
    }

    fn toml_error(&mut self, error: &toml::de::Error, values: &[(DeString<'_>, Range<usize>)]) {
        let mut message = error.message().trim_end().replace('\n', "; ");
        match error.span() {
            Some(span) => {
                // serde names the type it expected, not the key: name the key whose value it is.
                if let Some((key, _)) = values
                    .iter()
                    .find(|(_, value)| value.start <= span.start && span.end <= value.end)
                {
                    message = format!("{key}: {message}");
                }
                self.error(span, message);
            }
            None => self.errors.push(ConfigError::file(self.file, message)),
        }
    }

    fn parse(&mut self) -> Option<DeTable<'a>> {
        match DeTable::parse(self.lines.text()) {
            Ok(root) => Some(root.into_inner()),
            Err(error) => {
                self.toml_error(&error, &[]);
                None
            }
        }
    }

    /// The section `name` of the main file alone; the other sections are skipped unread, but a
    /// key that is no section at all is reported, since a `database = ...` above every table
    /// would otherwise leave the reader on the default path without a word.
    fn one_section<T: DeserializeOwned>(
        &mut self,
        root: DeTable<'a>,
        name: &str,
    ) -> Option<Spanned<T>> {
        let mut found = None;
        for (key, value) in root {
            match key.get_ref().as_ref() {
                wanted if wanted == name => found = Some(value),
                known if MAIN_SECTIONS.contains(&known) => {}
                other => self.unknown(key.span(), other, "at the top level", &MAIN_SECTIONS),
            }
        }
        found.and_then(|value| self.section(value, &format!("[{name}]")))
    }

    /// One table read into `T`, after its unknown keys are reported.
    fn section<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'a>>,
        what: &str,
    ) -> Option<Spanned<T>> {
        let DeValue::Table(table) = value.get_ref() else {
            self.error(
                value.span(),
                format!(
                    "{what} must be a table, found {}",
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        let known = fields_of::<T>();
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                self.unknown(key.span(), key.get_ref(), &format!("in {what}"), known);
            }
        }
        let values: Vec<(DeString<'_>, Range<usize>)> = table
            .iter()
            .map(|(key, value)| (key.get_ref().clone(), value.span()))
            .collect();
        let mut rest = table.clone();
        let span = value.span();
        match <Spanned<T> as serde::Deserialize>::deserialize(ValueDeserializer::from(value)) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                self.toml_error(&error, &values);
                self.further_errors::<T>(error, &mut rest, span, &values)
            }
        }
    }

    /// The other values of a table that serde cannot read: serde stops at the first, so the
    /// table is read again without each value at fault, and a user fixes them all in one go.
    /// What is left, once it reads, is returned so that its validation reports its errors too
    /// (the errors already reported keep the config from being used). It stops at an error
    /// that is about no value of the table (a field left missing).
    fn further_errors<T: DeserializeOwned>(
        &mut self,
        mut error: toml::de::Error,
        rest: &mut DeTable<'a>,
        span: Range<usize>,
        values: &[(DeString<'_>, Range<usize>)],
    ) -> Option<Spanned<T>> {
        loop {
            let at = error.span()?;
            let key = rest
                .iter()
                .find(|(_, value)| value.span().start <= at.start && at.end <= value.span().end)
                .map(|(key, _)| key.clone())?;
            rest.remove(&key);
            let table = Spanned::new(span.clone(), DeValue::Table(rest.clone()));
            match <Spanned<T> as serde::Deserialize>::deserialize(ValueDeserializer::from(table)) {
                Ok(parsed) => return Some(parsed),
                Err(next) => {
                    let about_a_value = next.span().is_some_and(|at| {
                        rest.values().any(|value| {
                            value.span().start <= at.start && at.end <= value.span().end
                        })
                    });
                    if !about_a_value {
                        return None;
                    }
                    self.toml_error(&next, values);
                    error = next;
                }
            }
        }
    }

    fn pools(
        &mut self,
        value: Spanned<DeValue<'a>>,
    ) -> BTreeMap<Spanned<String>, Spanned<raw::Pool>> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(span, "pools must be tables such as [pools.mail]");
            return BTreeMap::new();
        };
        table
            .into_iter()
            .map(|(name, pool)| {
                let what = format!("[pools.{}]", name.get_ref());
                let pool_span = pool.span();
                // A pool that cannot be read still exists, so jobs naming it are not flagged.
                let pool = self
                    .section(pool, &what)
                    .unwrap_or_else(|| Spanned::new(pool_span, raw::Pool::default()));
                (
                    Spanned::new(name.span(), name.into_inner().into_owned()),
                    pool,
                )
            })
            .collect()
    }

    fn jobs(&mut self, value: Spanned<DeValue<'a>>) -> raw::Jobs {
        let span = value.span();
        let DeValue::Array(entries) = value.into_inner() else {
            self.error(span, "jobs must be [[jobs]] tables, one per job");
            return raw::Jobs::default();
        };
        let mut jobs = raw::Jobs::default();
        for entry in entries {
            let name = match entry.get_ref() {
                DeValue::Table(table) => table.get("name").and_then(|name| {
                    Some(Spanned::new(
                        name.span(),
                        name.get_ref().as_str()?.to_owned(),
                    ))
                }),
                _ => None,
            };
            match self.section::<raw::Job>(entry, "[[jobs]]") {
                Some(job) => jobs.read.push(job),
                None => jobs.unreadable.extend(name),
            }
        }
        jobs
    }

    fn unknown(&mut self, span: Range<usize>, key: &str, place: &str, known: &[&str]) {
        let message = match closest(key, known.iter().copied()) {
            Some(near) => format!("unknown key `{key}` {place}: did you mean `{near}`?"),
            None => format!(
                "unknown key `{key}` {place}: expected one of {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.error(span, message);
    }
}

/// The known key a misspelled `key` most likely meant, if one is close.
pub(crate) fn closest<'k>(key: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let key = key.to_lowercase();
    known
        .into_iter()
        .map(|candidate| {
            let similarity = strsim::jaro_winkler(&key, &candidate.to_lowercase());
            (similarity, candidate)
        })
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The field names serde's derive gave `T`: a deserializer that asks for nothing but them.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// Records the fields a struct asks for, then stops.
struct FieldNames<'f>(&'f mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_the_derive() {
        assert_eq!(
            fields_of::<raw::Pool>(),
            ["max_concurrency", "max_starts_per_second"]
        );
        assert!(fields_of::<raw::Job>().contains(&"timeout"));
        assert!(fields_of::<raw::Daemon>().contains(&"plugin_dirs"));
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        let known = fields_of::<raw::Job>();
        assert_eq!(closest("timout", known.iter().copied()), Some("timeout"));
        assert_eq!(closest("Timeout", known.iter().copied()), Some("timeout"));
        assert_eq!(closest("retires", known.iter().copied()), Some("retries"));
        assert_eq!(closest("shedule", known.iter().copied()), Some("schedule"));
        assert_eq!(closest("colour", known.iter().copied()), None);
    }

    #[test]
    fn one_section_reports_keys_that_are_no_section() {
        let text = "database = \"x.db\"\n[daemon]\nsocket = \"s\"\n[[jobs]]\nname = \"a\"\n";
        let lines = Lines::new(text);
        let mut errors = Vec::new();
        let daemon = daemon_only(Path::new("p.toml"), &lines, &mut errors);
        assert!(daemon.is_some(), "[daemon] is still read");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .to_string()
                .contains("unknown key `database` at the top level"),
            "{}",
            errors[0]
        );
        let mut errors = Vec::new();
        assert!(cluster_only(Path::new("p.toml"), &lines, &mut errors).is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
