//! Plain-text tables for the human output of listing verbs.

use std::time::Duration;

use jiff::tz::TimeZone;

use crate::time::local;
use crate::units::format_duration;

/// Columns padded to their widest cell; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            out.push_str(&line(row, &widths));
            out.push('\n');
        }
        out
    }
}

/// One row: each cell padded to its column's width, two spaces between columns, nothing after
/// the last. A cell wider than its column pushes the rest of its row to the right. Padding is
/// written out rather than formatted, since `format!` refuses widths above 65,535.
pub fn line(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < cells.len() {
            let width = widths.get(i).copied().unwrap_or(0);
            let used = cell.chars().count();
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// An instant in the machine's local zone with the zone's abbreviation, or `-`.
pub fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| local(ms, &TimeZone::system()))
}

/// A duration in milliseconds as a short human figure.
pub fn millis(ms: Option<i64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1_000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1_000),
    }
}

/// A job's jitter offset as `+2m13s`, or `-` for a job without jitter.
pub fn jitter(offset: Option<Duration>) -> String {
    offset.map_or_else(|| "-".to_owned(), |d| format!("+{}", format_duration(d)))
}

/// The first line of `text`, cut to `max` characters.
pub fn short(text: Option<&str>, max: usize) -> String {
    let Some(text) = text else {
        return String::new();
    };
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && !text.contains('\n') {
        return line.to_owned();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut table = Table::new(vec!["ID", "JOB", "STATUS"]);
        table.row(vec!["1".into(), "backup".into(), "succeeded".into()]);
        table.row(vec!["12".into(), "x".into(), "failed".into()]);
        assert_eq!(
            table.render(),
            "ID  JOB     STATUS\n1   backup  succeeded\n12  x       failed\n"
        );
    }

    #[test]
    fn rows_never_end_in_spaces() {
        let mut table = Table::new(vec!["ID", "ERROR"]);
        table.row(vec!["1".into(), String::new()]);
        table.row(vec!["2".into(), "exit code 1".into()]);
        assert_eq!(table.render(), "ID  ERROR\n1\n2   exit code 1\n");
    }

    #[test]
    fn a_cell_of_any_width_fits() {
        let long = "n".repeat(65_536);
        let mut table = Table::new(vec!["JOB", "STATUS"]);
        table.row(vec![long.clone(), "succeeded".into()]);
        table.row(vec!["short".into(), "failed".into()]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], format!("{long}  succeeded"));
        assert_eq!(lines[2].find("failed"), Some(65_538));
    }

    #[test]
    fn figures_are_short() {
        assert_eq!(millis(Some(12)), "12ms");
        assert_eq!(millis(Some(1_500)), "1.5s");
        assert_eq!(millis(Some(125_000)), "2m05s");
        assert_eq!(
            short(Some("a long error\nsecond line"), 40),
            "a long error…"
        );
        assert_eq!(short(Some("abcdef"), 4), "abc…");
    }
}
