//! The `report` plugin under the real daemon: scheduled runs write a CSV and a PDF from a
//! SQLite database the test creates, bad SQL fails with SQLite's message, and `pacer check`
//! names a job's bad param.

use std::path::PathBuf;

use pacer_tests::{Sandbox, text, wait_until};
use rusqlite::Connection;
use serde_json::Value;

/// `data/shop.db` in the sandbox, with three orders.
fn shop(sandbox: &Sandbox) -> PathBuf {
    let path = sandbox.path().join("data/shop.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, note TEXT);
             INSERT INTO orders VALUES (1, 'Ada', 12.5, NULL);
             INSERT INTO orders VALUES (2, 'Bob, Jr.', 7.0, 'gift');
             INSERT INTO orders VALUES (3, 'Chloé', 99.99, 'said \"rush\"');",
        )
        .unwrap();
    path
}

/// The oldest run of `job` with `status`, once there is one.
fn first_run(sandbox: &Sandbox, job: &str, status: &str) -> Value {
    wait_until(&format!("a {status} run of {job}"), || {
        sandbox.history(&["--job", job, "--status", status]).pop()
    })
}

#[test]
fn scheduled_runs_write_a_csv_and_a_pdf() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("report");
    let db = shop(&sandbox);
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "orders-csv"
schedule = "* * * * * *"
plugin = "report"
[jobs.params]
database = "data/shop.db"
query = "SELECT id, customer, total, note FROM orders ORDER BY id"
output = "reports/orders-%Y-%m-%d.csv"

[[jobs]]
name = "orders-pdf"
schedule = "* * * * * *"
plugin = "report"
[jobs.params]
database = "data/shop.db"
query = "SELECT customer, total FROM orders ORDER BY total DESC"
output = "reports/orders.pdf"
title = "Orders by total"
"#,
    );
    let before = jiff::Zoned::now().date();
    let mut daemon = sandbox.start();
    let csv_run = first_run(&sandbox, "orders-csv", "succeeded");
    let pdf_run = first_run(&sandbox, "orders-pdf", "succeeded");
    let after = jiff::Zoned::now().date();

    // Named after the day the run started, in the daemon's local time.
    let reports = sandbox.path().join("reports");
    let name = [before, after]
        .iter()
        .map(|date| date.strftime("orders-%Y-%m-%d.csv").to_string())
        .find(|name| reports.join(name).exists())
        .unwrap_or_else(|| panic!("no dated CSV in {}", reports.display()));
    let csv = std::fs::read_to_string(reports.join(&name)).unwrap();
    assert_eq!(
        csv,
        "id,customer,total,note\r\n\
         1,Ada,12.5,\r\n\
         2,\"Bob, Jr.\",7,gift\r\n\
         3,Chloé,99.99,\"said \"\"rush\"\"\"\r\n"
    );
    let detail = sandbox.pacer_json(&["show", &csv_run["id"].to_string()]);
    let output = text(&detail, "output");
    assert!(
        output.contains(&format!(
            "wrote reports/{name}: 3 rows ({} bytes)",
            csv.len()
        )),
        "{output}"
    );

    let pdf = std::fs::read(reports.join("orders.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(
        pdf.windows(17).any(|w| w == b"(Orders by total)"),
        "the title is on the page"
    );
    assert_eq!(pdf_run["error"], Value::Null);

    // Once the daemon is down, no run is writing: no temporary file may be left.
    daemon.stop();
    let hidden: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    let count: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM orders", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 3);
}

#[test]
fn bad_sql_fails_with_sqlites_message() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("report");
    shop(&sandbox);
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "typo"
schedule = "* * * * * *"
plugin = "report"
params = { database = "data/shop.db", query = "SELECT * FROM order_lines", output = "out.csv" }

[[jobs]]
name = "no-db"
schedule = "* * * * * *"
plugin = "report"
params = { database = "data/gone.db", query = "SELECT 1", output = "out.csv" }
"#,
    );
    let _daemon = sandbox.start();
    let run = first_run(&sandbox, "typo", "failed");
    assert_eq!(run["error"], "the query failed: no such table: order_lines");
    let run = first_run(&sandbox, "no-db", "failed");
    assert_eq!(
        run["error"],
        "`database` data/gone.db does not exist (a relative path is taken from the directory \
         of the job's config file)"
    );
    assert!(!sandbox.path().join("out.csv").exists());
    assert!(!sandbox.path().join("data/gone.db").exists());
}

#[test]
fn check_names_the_job_and_the_bad_param() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("report");
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "spreadsheet"
schedule = "@daily"
plugin = "report"
params = { database = "app.db", query = "SELECT 1", output = "r.xlsx", format = "xlsx" }

[[jobs]]
name = "cleanup"
schedule = "@daily"
plugin = "report"
params = { database = "app.db", query = "DELETE FROM runs", output = "r.csv" }

[[jobs]]
name = "fine"
schedule = "@daily"
plugin = "report"
params = { database = "app.db", query = "SELECT 1", output = "r-%Y.pdf" }
"#,
    );
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    let verdicts = check.json();
    let verdict = |job: &str| {
        verdicts
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["job"] == job)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict for {job}: {verdicts}"))
    };
    let error = text(&verdict("spreadsheet"), "error").to_owned();
    assert!(
        error.ends_with(
            "params of `spreadsheet`: `format` must be \"csv\" or \"pdf\", not \"xlsx\""
        ),
        "{error}"
    );
    let error = text(&verdict("cleanup"), "error").to_owned();
    assert!(
        error.ends_with(
            "params of `cleanup`: `query` must be a statement that reads (SELECT, WITH or \
             VALUES), not DELETE: the database is opened read-only"
        ),
        "{error}"
    );
    assert_eq!(verdict("fine")["error"], Value::Null);
}
