//! `web`: the web view's pages over 1,000,000 runs (the `history` scenario's database: 1,000
//! jobs over 30 days), served by the real daemon and fetched over HTTP as a browser would:
//! each page's time from request to last byte, the median of its repetitions.
//!
//! `web_cluster`: the same pages, and `/nodes`, served by a node of a cluster whose shared
//! PostgreSQL (a server of its own, started as the tests start theirs) holds the same
//! 1,000,000 runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pacer_tests::postgres::Postgres;

use super::history::{DAYS, JOBS, fill};
use crate::daemon::Daemon;
use crate::report::{Report, median};

/// Each page is fetched this many times; the first fetch (cold caches) is not counted.
const REPETITIONS: usize = 11;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let rows = if quick { 100_000 } else { 1_000_000 };
    let now = jiff::Timestamp::now().as_millisecond();
    let port = free_port()?;
    let daemon = Daemon::start_on(
        |path| fill(path, rows, now).map(drop),
        &format!("web_listen = \"127.0.0.1:{port}\"\nweb_show_output = true"),
        &jobs(),
    )?;
    let figures = measure(port, &pages(rows))?;
    drop(daemon);
    add(report, "web", &figures);
    Ok(())
}

pub fn run_cluster(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let rows = if quick { 100_000 } else { 1_000_000 };
    let Some(pg) = Postgres::start() else {
        eprintln!("pacer-bench: web_cluster skipped: PostgreSQL is not installed");
        return Ok(());
    };
    let port = free_port()?;
    // Retention longer than the history, so that no node prunes while the pages are measured.
    let daemon = Daemon::start(
        &format!(
            "web_listen = \"127.0.0.1:{port}\"\nweb_show_output = true\n\
             history_retention = \"90d\""
        ),
        &format!(
            "[cluster]\ndatabase_url = \"{}\"\nnode_id = \"bench\"\n{}",
            pg.url(),
            jobs()
        ),
    )?;
    fill_cluster(&pg, rows, jiff::Timestamp::now().as_millisecond());
    let mut pages = pages(rows);
    pages.push(("nodes", "/nodes".to_owned()));
    let figures = measure(port, &pages)?;
    drop(daemon);
    add(report, "web_cluster", &figures);
    Ok(())
}

/// The seeded jobs, on a schedule that does not fire while the pages are measured.
fn jobs() -> String {
    (0..JOBS)
        .map(|i| {
            format!(
                "[[jobs]]\nname = \"job-{i}\"\nschedule = \"0 0 1 1 *\"\nplugin = \"exec\"\n\
                 params = {{ command = \"true\" }}\n"
            )
        })
        .collect()
}

/// The pages measured, by figure name, over a history of `rows` runs.
fn pages(rows: usize) -> Vec<(&'static str, String)> {
    let middle = rows as i64 / 2;
    vec![
        ("jobs", "/".to_owned()),
        ("jobs_7d", "/?window=7d".to_owned()),
        ("jobs_30d", "/?window=30d".to_owned()),
        ("job", "/jobs/job-500".to_owned()),
        ("job_30d", "/jobs/job-500?window=30d".to_owned()),
        ("runs", "/runs".to_owned()),
        ("runs_job", "/runs?job=job-500".to_owned()),
        ("runs_failed", "/runs?status=failed".to_owned()),
        ("runs_manual", "/runs?trigger=manual".to_owned()),
        ("runs_window", "/runs?since=3d&until=2d".to_owned()),
        ("runs_older", format!("/runs?before={middle}")),
        (
            "runs_job_failed",
            "/runs?job=job-500&status=failed".to_owned(),
        ),
        ("run", format!("/runs/{middle}")),
        ("job_older", format!("/jobs/job-500?before={middle}")),
        ("jobs_last_page", "/?page=20".to_owned()),
        ("timeline_1h", "/timeline?span=1h".to_owned()),
        ("timeline_24h", "/timeline".to_owned()),
        ("timeline_7d", "/timeline?span=7d".to_owned()),
        (
            "timeline_job_7d",
            "/timeline?span=7d&job=job-500".to_owned(),
        ),
    ]
}

/// Each page's median time, then the worst of them.
fn measure(port: u16, pages: &[(&'static str, String)]) -> anyhow::Result<Vec<(String, f64)>> {
    let mut figures = Vec::new();
    for (name, path) in pages {
        let mut samples = Vec::new();
        for repetition in 0..=REPETITIONS {
            let start = Instant::now();
            let size = get(port, path).with_context(|| format!("GET {path}"))?;
            if repetition > 0 {
                samples.push(start.elapsed().as_secs_f64() * 1_000.0);
            }
            anyhow::ensure!(size > 1_000, "GET {path} answered only {size} bytes");
        }
        figures.push((format!("{name}_ms"), median(&mut samples)));
    }
    let worst = figures.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    figures.push(("worst_page_ms".to_owned(), worst));
    Ok(figures)
}

fn add(report: &mut Report, scenario: &str, figures: &[(String, f64)]) {
    report.add(
        scenario,
        figures
            .iter()
            .map(|(name, ms)| (name.as_str(), *ms))
            .collect(),
    );
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes `rows` runs spread over the 30 days before `now` into the cluster's database, with
/// the `history` scenario's mix (1 in 100 skipped, 3 in 100 failed, the rest succeeded, each
/// started 3 ms after it was due and run 250 ms): in SQL, since the nodes' own path writes
/// through claims that take the cluster lock. Then the tables are analyzed, as autovacuum
/// would do by itself soon after.
fn fill_cluster(pg: &Postgres, rows: usize, now: i64) {
    let span = DAYS * 86_400_000;
    let kind = format!("(i + i / {JOBS}) % 100");
    pg.psql(&format!(
        "INSERT INTO runs (fire_key, job, plugin, pool, priority, digest, status, trigger,
                           attempt, scheduled_at, queued_at, claimed_at, started_at,
                           finished_at, queue_ms, error, params, node, incarnation)
         SELECT 'bench:' || i, 'job-' || (i % {JOBS}), 'exec', 'default', 0, 'bench',
                CASE WHEN {kind} = 0 THEN 'skipped' WHEN {kind} <= 3 THEN 'failed'
                     ELSE 'succeeded' END,
                'schedule', 1, due, due, due,
                CASE WHEN {kind} = 0 THEN NULL ELSE due + 3 END,
                CASE WHEN {kind} = 0 THEN NULL ELSE due + 250 END,
                CASE WHEN {kind} = 0 THEN NULL ELSE 0 END,
                CASE WHEN {kind} = 0 THEN 'run 1 of `job` is still running (overlap = \"skip\")'
                     WHEN {kind} <= 3 THEN 'command exited with code 1' END,
                '{{\"command\": \"true\"}}',
                CASE WHEN {kind} = 0 THEN NULL ELSE 'bench' END, 1
         FROM (SELECT i, {now} - {span} + (i::bigint * {span}) / {rows} AS due
               FROM generate_series(0, {rows} - 1) AS i) AS fires"
    ));
    pg.psql(
        "INSERT INTO run_output (run_id, output, dropped)
         SELECT id, convert_to(E'done\\n', 'UTF8'), 0 FROM runs WHERE status <> 'skipped'",
    );
    pg.psql("VACUUM ANALYZE runs");
    pg.psql("VACUUM ANALYZE run_output");
}

/// `GET path` on a fresh connection; the body's size. Fails on anything but a 200.
fn get(port: u16, path: &str) -> anyhow::Result<usize> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{}",
            head.lines().next().unwrap_or("no status line").to_owned()
        );
    }
    Ok(response.len() - head_end - 4)
}
