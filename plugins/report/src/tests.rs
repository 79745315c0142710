//! The plugin on real SQLite files in temporary directories, through `TestHost` as `pacerd`
//! runs it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pacer_plugin_api::testing::{Outcome, TestHost};
use rusqlite::Connection;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::ReportPlugin;

/// A database with a table `t` whose values need every kind of CSV care.
fn database(dir: &Path) -> PathBuf {
    let path = dir.join("app.db");
    let connection = Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE t (id INTEGER, name TEXT, note TEXT, score REAL, data BLOB);
             INSERT INTO t VALUES (1, 'plain', NULL, 1.5, NULL);
             INSERT INTO t VALUES (2, 'comma, here', 'say \"hi\"', 2.0, x'00ff');
             INSERT INTO t VALUES (3, 'line
break', '', NULL, NULL);",
        )
        .unwrap();
    path
}

/// A database with `n` rows in table `numbers` (n, square, label).
fn numbers(dir: &Path, n: u32) -> PathBuf {
    let path = dir.join("numbers.db");
    let connection = Connection::open(&path).unwrap();
    connection
        .execute_batch(&format!(
            "CREATE TABLE numbers (n INTEGER, square INTEGER, label TEXT);
             WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {n})
             INSERT INTO numbers SELECT n, n * n, 'number ' || n FROM c;"
        ))
        .unwrap();
    path
}

fn run(params: &Value) -> Outcome {
    TestHost::new().params(params).run::<ReportPlugin>()
}

fn validate(params: &Value) -> Outcome {
    TestHost::new().params(params).validate::<ReportPlugin>()
}

fn failure(outcome: &Outcome) -> &str {
    assert!(!outcome.ok, "expected a failure: {outcome:?}");
    outcome.message.as_deref().unwrap()
}

fn succeeded(outcome: &Outcome) -> &str {
    assert!(outcome.ok, "expected success: {outcome:?}");
    outcome.message.as_deref().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// How often `needle` occurs in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

#[test]
fn csv_follows_rfc_4180_exactly() {
    let tmp = TempDir::new().unwrap();
    let db = database(tmp.path());
    let out = tmp.path().join("out.csv");
    let outcome = run(&json!({
        "database": db,
        "query": "SELECT id, name, note, score, data AS \"raw, bytes\" FROM t ORDER BY id",
        "output": out,
    }));
    let expected: &[u8] = b"id,name,note,score,\"raw, bytes\"\r\n\
        1,plain,,1.5,\r\n\
        2,\"comma, here\",\"say \"\"hi\"\"\",2,00ff\r\n\
        3,\"line\nbreak\",,,\r\n";
    assert_eq!(
        succeeded(&outcome),
        format!("wrote {}: 3 rows ({} bytes)", out.display(), expected.len())
    );
    assert_eq!(
        String::from_utf8_lossy(&fs::read(&out).unwrap()),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(
        names(tmp.path()),
        ["app.db", "out.csv"],
        "no temporary file left"
    );
}

#[test]
fn an_empty_result_is_a_header_row() {
    let tmp = TempDir::new().unwrap();
    let db = database(tmp.path());
    let out = tmp.path().join("empty.csv");
    let outcome = run(&json!({
        "database": db, "query": "SELECT id, name FROM t WHERE id > 99", "output": out,
    }));
    assert_eq!(
        succeeded(&outcome),
        format!("wrote {}: 0 rows (9 bytes)", out.display())
    );
    assert_eq!(fs::read(&out).unwrap(), b"id,name\r\n");
}

#[test]
fn a_lone_empty_field_is_quoted_so_that_its_row_is_not_blank() {
    let tmp = TempDir::new().unwrap();
    let db = database(tmp.path());
    let out = tmp.path().join("notes.csv");
    let outcome = run(&json!({
        "database": db, "query": "SELECT note FROM t ORDER BY id", "output": out,
    }));
    succeeded(&outcome);
    assert_eq!(
        fs::read(&out).unwrap(),
        b"note\r\n\"\"\r\n\"say \"\"hi\"\"\"\r\n\"\"\r\n"
    );
}

#[test]
fn pdf_has_a_title_a_header_on_each_page_and_page_numbers() {
    let tmp = TempDir::new().unwrap();
    let db = numbers(tmp.path(), 100);
    let out = tmp.path().join("numbers.pdf");
    let outcome = run(&json!({
        "database": db,
        "query": "SELECT n AS number, square, label FROM numbers ORDER BY n",
        "output": out,
        "title": "Squares (first 100)",
    }));
    let message = succeeded(&outcome);
    assert!(
        message.starts_with(&format!("wrote {}: 100 rows (", out.display())),
        "{message}"
    );
    let pdf = fs::read(&out).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(pdf.trim_ascii_end().ends_with(b"%%EOF"));
    // 33 rows a page: 4 pages, each with the title, the header row and its number.
    let pages = occurrences(&pdf, b"/Type /Page") - occurrences(&pdf, b"/Type /Pages");
    assert_eq!(pages, 4);
    assert_eq!(
        occurrences(&pdf, b"(Squares (first 100))"),
        4 + 1,
        "4 pages + metadata"
    );
    assert_eq!(occurrences(&pdf, b"(square)"), 4);
    assert_eq!(occurrences(&pdf, b"(Page 1 of 4)"), 1);
    assert_eq!(occurrences(&pdf, b"(Page 4 of 4)"), 1);
    assert_eq!(occurrences(&pdf, b"(number 100)"), 1);
    assert_eq!(occurrences(&pdf, b"(100 rows, made "), 4);
    assert_eq!(occurrences(&pdf, b"/BaseFont /Helvetica"), 2);
    assert_eq!(occurrences(&pdf, b"/FontFile"), 0, "no font is embedded");
}

#[test]
fn pdf_cells_that_do_not_fit_end_in_an_ellipsis() {
    let tmp = TempDir::new().unwrap();
    let db = numbers(tmp.path(), 1);
    let out = tmp.path().join("wide.pdf");
    let long = "x".repeat(2000);
    let outcome = run(&json!({
        "database": db,
        "query": format!("SELECT '{long}' AS wide, n, NULL AS empty, x'0102' AS raw FROM numbers"),
        "output": out,
    }));
    succeeded(&outcome);
    let pdf = fs::read(&out).unwrap();
    // The title defaults to the file's name.
    assert_eq!(occurrences(&pdf, b"(wide.pdf)"), 2);
    // Helvetica's x is 500/1000 em: at 9 pt, the 770 pt row holds 170 or so, never 2000.
    assert_eq!(occurrences(&pdf, long.as_bytes()), 0);
    // With the ellipsis (WinAnsi 0x85) the cell is no longer ASCII, so pdf-writer writes it
    // as a hex string: <7878...85>.
    let start = pdf.windows(7).position(|w| w == b"<787878").unwrap() + 1;
    let cut = &pdf[start..];
    let end = cut.iter().position(|&b| b == b'>').unwrap();
    assert!(
        cut[..end].ends_with(b"85"),
        "{}",
        String::from_utf8_lossy(&cut[..end])
    );
    let kept = cut[..end - 2]
        .chunks(2)
        .filter(|pair| *pair == b"78")
        .count();
    assert_eq!(kept, end / 2 - 1, "only x before the ellipsis");
    assert!((100..200).contains(&kept), "{kept} x kept");
    assert_eq!(occurrences(&pdf, b"(<2 bytes>)"), 1);
}

#[test]
fn output_placeholders_expand_at_run_time() {
    let tmp = TempDir::new().unwrap();
    let db = numbers(tmp.path(), 3);
    let before = jiff::Zoned::now().date();
    let outcome = run(&json!({
        "database": db,
        "query": "SELECT n FROM numbers",
        "output": tmp.path().join("reports/%Y/runs-%Y-%m-%d.csv"),
    }));
    let after = jiff::Zoned::now().date();
    succeeded(&outcome);
    let path = |date: jiff::civil::Date| {
        tmp.path()
            .join(date.strftime("reports/%Y/runs-%Y-%m-%d.csv").to_string())
    };
    let written = [path(before), path(after)]
        .into_iter()
        .find(|p| p.exists())
        .expect("the report is named after the day it ran");
    assert_eq!(fs::read(&written).unwrap(), b"n\r\n1\r\n2\r\n3\r\n");
}

#[test]
fn a_report_replaces_the_previous_one_only_when_complete() {
    let tmp = TempDir::new().unwrap();
    let db = numbers(tmp.path(), 5);
    let out = tmp.path().join("r.csv");
    fs::write(&out, "the previous report\r\n").unwrap();
    // abs() of the smallest integer is an error SQLite raises at the fourth row.
    let outcome = run(&json!({
        "database": db,
        "query": "SELECT CASE WHEN n < 4 THEN n ELSE abs(-9223372036854775807 - 1) END FROM numbers",
        "output": out,
    }));
    assert_eq!(failure(&outcome), "the query failed: integer overflow");
    assert_eq!(fs::read(&out).unwrap(), b"the previous report\r\n");
    assert_eq!(
        names(tmp.path()),
        ["numbers.db", "r.csv"],
        "no temporary file left"
    );

    let outcome = run(&json!({
        "database": db, "query": "SELECT n FROM numbers WHERE n = 5", "output": out,
    }));
    succeeded(&outcome);
    assert_eq!(fs::read(&out).unwrap(), b"n\r\n5\r\n");
    assert_eq!(names(tmp.path()), ["numbers.db", "r.csv"]);
}

#[test]
fn bad_sql_fails_with_sqlites_message() {
    let tmp = TempDir::new().unwrap();
    let db = database(tmp.path());
    let out = tmp.path().join("reports/out.csv");
    let outcome = run(&json!({"database": db, "query": "SELECT * FROM nope", "output": out}));
    assert_eq!(failure(&outcome), "the query failed: no such table: nope");
    let outcome = run(&json!({"database": db, "query": "SELECT * FORM t", "output": out}));
    assert_eq!(
        failure(&outcome),
        "the query failed: near \"FORM\": syntax error"
    );
    assert!(
        !tmp.path().join("reports").exists(),
        "a failed query touches no output"
    );

    let not_sqlite = tmp.path().join("notes.txt");
    fs::write(
        &not_sqlite,
        "just some text, long enough to be no SQLite header",
    )
    .unwrap();
    let outcome = run(&json!({"database": not_sqlite, "query": "SELECT 1", "output": out}));
    assert_eq!(
        failure(&outcome),
        "the query failed: file is not a database"
    );
}

#[test]
fn a_missing_database_is_named() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("missing.db");
    let outcome = run(&json!({
        "database": missing, "query": "SELECT 1", "output": tmp.path().join("out.csv"),
    }));
    assert_eq!(
        failure(&outcome),
        format!(
            "`database` {} does not exist (a relative path is taken from the directory of the \
             job's config file)",
            missing.display()
        )
    );
    assert!(!missing.exists(), "a read-only open creates nothing");
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

#[test]
fn an_unwritable_output_directory_fails_the_run() {
    let tmp = TempDir::new().unwrap();
    let db = numbers(tmp.path(), 1);
    let blocker = tmp.path().join("blocker");
    fs::write(&blocker, "a file where a directory should be").unwrap();
    let outcome = run(&json!({
        "database": db, "query": "SELECT n FROM numbers", "output": blocker.join("out.csv"),
    }));
    assert_eq!(
        failure(&outcome),
        format!(
            "cannot create the output directory {}: File exists (os error 17)",
            blocker.display()
        )
    );

    let readonly = tmp.path().join("readonly");
    fs::create_dir(&readonly).unwrap();
    fs::set_permissions(&readonly, fs::Permissions::from_mode(0o555)).unwrap();
    // Root (CAP_DAC_OVERRIDE) writes there anyway; the case above covers it.
    if fs::write(readonly.join("probe"), "").is_ok() {
        return;
    }
    let outcome = run(&json!({
        "database": db, "query": "SELECT n FROM numbers", "output": readonly.join("out.csv"),
    }));
    assert_eq!(
        failure(&outcome),
        format!(
            "cannot write in the output directory {}: Permission denied (os error 13)",
            readonly.display()
        )
    );
}

#[test]
fn the_database_is_never_written() {
    let tmp = TempDir::new().unwrap();
    let db = database(tmp.path());
    let out = tmp.path().join("out.csv");
    let count = || {
        Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0))
            .unwrap()
    };

    // Refused by `pacer check` already...
    let outcome = validate(&json!({"database": db, "query": "DELETE FROM t", "output": out}));
    assert_eq!(
        failure(&outcome),
        "`query` must be a statement that reads (SELECT, WITH or VALUES), not DELETE: the \
         database is opened read-only"
    );
    // ...or by SQLite once prepared, when the write hides behind a WITH...
    let outcome = run(&json!({
        "database": db,
        "query": "WITH doomed AS (SELECT 1) DELETE FROM t",
        "output": out,
    }));
    assert_eq!(
        failure(&outcome),
        "`query` would change the database; a report only runs statements that read"
    );
    // ...and the connection itself cannot write, whatever runs on it.
    let connection = crate::database::open(&db).unwrap();
    let err = connection.execute("DELETE FROM t", []).unwrap_err();
    assert_eq!(err.to_string(), "attempt to write a readonly database");
    assert_eq!(count(), 3);
    assert!(!out.exists());
}

#[test]
fn cancellation_leaves_no_file() {
    let tmp = TempDir::new().unwrap();
    let db = numbers(tmp.path(), 10);
    for output in ["out.csv", "out.pdf"] {
        let outcome = TestHost::new()
            .params(json!({
                "database": db, "query": "SELECT * FROM numbers", "output": tmp.path().join(output),
            }))
            .cancelled()
            .run::<ReportPlugin>();
        assert_eq!(failure(&outcome), "cancelled");
    }
    assert_eq!(names(tmp.path()), ["numbers.db"]);
}

#[test]
fn validate_names_the_key_and_the_fix() {
    let ok = json!({"database": "app.db", "query": "SELECT 1", "output": "r-%Y.csv"});
    let with = |key: &str, value: Value| {
        let mut params = ok.clone();
        params[key] = value;
        params
    };
    let without = |key: &str| {
        let mut params = ok.clone();
        params.as_object_mut().unwrap().remove(key);
        params
    };
    for (params, message) in [
        (
            without("database"),
            "`database` is required: the SQLite file to read".to_owned(),
        ),
        (
            with("database", json!("")),
            "`database` must not be empty".to_owned(),
        ),
        (
            with("database", json!(["a.db"])),
            "`database` must be a string, not an array".to_owned(),
        ),
        (
            without("query"),
            "`query` is required: the SELECT statement whose rows make the report".to_owned(),
        ),
        (
            with("query", json!("SELECT 1; SELECT 2")),
            "`query` must be a single statement: remove what follows the `;`".to_owned(),
        ),
        (
            without("output"),
            "`output` is required: the file to write, such as \"reports/%Y-%m-%d.csv\"".to_owned(),
        ),
        (
            with("output", json!("reports/")),
            "`output` must name a file, not a directory: `reports/`".to_owned(),
        ),
        (
            with("format", json!("xlsx")),
            "`format` must be \"csv\" or \"pdf\", not \"xlsx\"".to_owned(),
        ),
        (
            with("output", json!("report.txt")),
            "`format` is required when `output` does not end in .csv or .pdf: \"csv\" or \"pdf\""
                .to_owned(),
        ),
        (
            with("title", json!(true)),
            "`title` must be a string, not a boolean".to_owned(),
        ),
    ] {
        assert_eq!(failure(&validate(&params)), message, "{params}");
        assert_eq!(failure(&run(&params)), message, "{params}");
    }

    let message = failure(&validate(&with("output", json!("r-%.csv")))).to_owned();
    assert!(
        message.starts_with("`output`: `r-%.csv` has an invalid strftime placeholder ("),
        "{message}"
    );
    let message = failure(&validate(&with("fromat", json!("csv")))).to_owned();
    assert!(
        message.starts_with("invalid params: unknown field `fromat`, expected one of"),
        "{message}"
    );
    assert!(
        validate(&with("output", json!("report.txt")))
            .message
            .is_some()
    );
    assert!(
        validate(&with("format", json!("pdf"))).ok,
        "any name with an explicit format"
    );
}

#[test]
fn a_chained_run_may_carry_upstream() {
    let outcome = validate(&json!({
        "database": "app.db", "query": "SELECT 1", "output": "out.pdf", "title": "Nightly",
        "upstream": {"job": "import", "id": 7, "status": "succeeded", "error": null},
    }));
    assert!(outcome.ok, "{outcome:?}");
}
