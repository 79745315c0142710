//! The `report` plugin: runs one SQL query against a SQLite database and writes the result as
//! a CSV file or a PDF table.
//!
//! # Params
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `database` | string | required | the SQLite file to read; a relative path is taken from the directory of the job's config file |
//! | `query` | string | required | one statement that reads: `SELECT`, `WITH ... SELECT` or `VALUES` |
//! | `output` | string | required | the file to write; strftime placeholders (`%Y-%m-%d`, `%H`, `%%` for a literal `%`) expand when the run starts, in local time |
//! | `format` | string | from `output`'s extension | `"csv"` or `"pdf"`; required when `output` ends in neither `.csv` nor `.pdf` |
//! | `title` | string | `output`'s file name | the PDF's title (a CSV has none) |
//!
//! Any other key is an error, except `upstream`, which `pacerd` adds to chained runs.
//!
//! # What it writes
//!
//! - **CSV** (RFC 4180): a header row of the column names, then one record per row, with CRLF
//!   line ends; a field is quoted when it holds a comma, a double quote (doubled inside) or a
//!   line break. NULL is an empty field (as is an empty string), an integer is written in
//!   decimal, a real in the shortest form that reads back as the same number (`2`, `0.1`),
//!   text as stored, and a blob as lowercase hex (`00ff`).
//! - **PDF**: A4 landscape in Helvetica (built into every reader, nothing embedded). Each page
//!   has the title, a note with the row count and when the report was made, the header row,
//!   and its page number (`Page 2 of 5`). Columns are as wide as their content, and share the
//!   page when that is too wide: a cell that does not fit ends in `…`. Numeric columns are
//!   right-aligned, NULL is blank and a blob shows as `<N bytes>`. Characters outside
//!   Windows-1252 show as `?`. The PDF is built in memory, so it suits results of up to some
//!   ten thousand rows; CSV streams rows of any number.
//!
//! The placeholders in `output` use the time zone of the run's process: `TZ` in the
//! environment `pacerd` was started with, or else the system's (`/etc/localtime`). A job's
//! `timezone` decides when it fires, not how its output is named.
//!
//! # Safety
//!
//! - The database is opened read-only, and a statement that would write is refused before it
//!   runs (`pacer check` already refuses one that does not start with `SELECT`, `WITH` or
//!   `VALUES`, and more than one statement).
//! - The report is written to `.NAME.tmp-<pid>` in the output directory (created if missing),
//!   flushed to disk, then renamed over `NAME`, and the directory flushed: readers see the
//!   previous report or the new one, never part of one. A failed or cancelled run removes its
//!   temporary file and leaves any previous report in place.
//!
//! # Errors
//!
//! The run fails, naming the file or SQLite's message, when the database is missing or not a
//! database (`the query failed: file is not a database`), the SQL is invalid
//! (`the query failed: no such table: runs`), or the output directory cannot be created or
//! written to. A successful run logs and returns `wrote reports/runs-2027-01-04.csv: 42 rows
//! (1834 bytes)`.
//!
//! # Example
//!
//! ```toml
//! [[jobs]]
//! name = "nightly-report"
//! schedule = "30 2 * * *"
//! plugin = "report"
//! [jobs.params]
//! database = "/var/lib/myapp/app.db"
//! query = """
//! SELECT day, count(*) AS orders, sum(total) AS revenue
//! FROM orders GROUP BY day ORDER BY day DESC LIMIT 30
//! """
//! output = "reports/orders-%Y-%m-%d.csv"
//! ```

mod database;
mod helvetica;
mod params;
mod pdf;
mod staged;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use jiff::Zoned;
use pacer_plugin_api::{Context, Error, Plugin, ResultExt, export_plugin};
use rusqlite::Statement;
use rusqlite::types::ValueRef;

use crate::params::{Format, Params, Report};
use crate::pdf::{Cell, Table};
use crate::staged::Staged;

#[derive(Debug, Default)]
struct ReportPlugin;

impl Plugin for ReportPlugin {
    const NAME: &'static str = "report";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Params = Params;

    fn validate(&self, params: &Params) -> Result<(), Error> {
        Report::from_params(params)?;
        Ok(())
    }

    fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
        let report = Report::from_params(&params)?;
        let now = Zoned::now();
        let output = params::expand(&report.output, &now)?;
        let connection = database::open(&report.database)?;
        let mut statement = database::prepare(&connection, &report.query)?;
        // Only now, so that a bad query or database leaves the output directory alone.
        let staged = Staged::create(&output)?;
        let rows = match report.format {
            Format::Csv => write_csv(ctx, &mut statement, staged.file())?,
            Format::Pdf => {
                let title = match &report.title {
                    Some(title) => title.clone(),
                    None => file_name(&output),
                };
                write_pdf(ctx, &mut statement, &title, &now, staged.file())?
            }
        };
        let size = staged.commit()?;
        let summary = format!(
            "wrote {}: {} ({size} bytes)",
            output.display(),
            count(rows, "row")
        );
        tracing::info!("{summary}");
        ctx.set_message(&summary);
        Ok(())
    }
}

export_plugin!(ReportPlugin);

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn column_names(statement: &Statement<'_>) -> Vec<String> {
    statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Streams the rows into `file` as RFC 4180 CSV; returns how many there were.
fn write_csv(ctx: &Context, statement: &mut Statement<'_>, file: &File) -> Result<u64, Error> {
    const CANNOT: &str = "cannot write the report";
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(BufWriter::new(file));
    writer
        .write_record(column_names(statement))
        .context(CANNOT)?;
    let rows = database::for_each_row(ctx, statement, |values| {
        writer
            .write_record(values.iter().map(|value| csv_field(*value)))
            .context(CANNOT)
    })?;
    writer.flush().context(CANNOT)?;
    Ok(rows)
}

/// One value as a CSV field: NULL empty, blobs in hex, the rest as SQLite returns it.
fn csv_field(value: ValueRef<'_>) -> Cow<'_, [u8]> {
    match value {
        ValueRef::Null => Cow::Borrowed(b""),
        ValueRef::Integer(n) => Cow::Owned(n.to_string().into_bytes()),
        ValueRef::Real(x) => Cow::Owned(x.to_string().into_bytes()),
        ValueRef::Text(text) => Cow::Borrowed(text),
        ValueRef::Blob(bytes) => {
            let mut hex = String::with_capacity(2 * bytes.len());
            for byte in bytes {
                let _ = write!(hex, "{byte:02x}");
            }
            Cow::Owned(hex.into_bytes())
        }
    }
}

/// Collects the rows and writes them to `file` as a PDF table; returns how many there were.
fn write_pdf(
    ctx: &Context,
    statement: &mut Statement<'_>,
    title: &str,
    now: &Zoned,
    file: &File,
) -> Result<u64, Error> {
    let mut table = Table {
        columns: column_names(statement),
        rows: Vec::new(),
    };
    let rows = database::for_each_row(ctx, statement, |values| {
        table
            .rows
            .push(values.iter().map(|value| pdf_cell(*value)).collect());
        Ok(())
    })?;
    let when = jiff::fmt::strtime::format("%Y-%m-%d %H:%M %Z", now)
        .unwrap_or_else(|_| now.timestamp().to_string());
    let note = format!("{}, made {when}", count(rows, "row"));
    let mut writer = file;
    writer
        .write_all(&pdf::render(title, &note, now, &table))
        .context("cannot write the report")?;
    Ok(rows)
}

/// One value as a PDF cell: NULL blank, a blob by its size.
fn pdf_cell(value: ValueRef<'_>) -> Cell {
    let (text, numeric) = match value {
        ValueRef::Null => (String::new(), false),
        ValueRef::Integer(n) => (n.to_string(), true),
        ValueRef::Real(x) => (x.to_string(), true),
        ValueRef::Text(text) => (String::from_utf8_lossy(text).into_owned(), false),
        ValueRef::Blob(bytes) => (format!("<{} bytes>", bytes.len()), false),
    };
    Cell { text, numeric }
}
