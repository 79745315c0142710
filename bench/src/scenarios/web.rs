//! `web`: the web view's pages over 1,000,000 runs (the `history` scenario's database: 1,000
//! jobs over 30 days), served by the real daemon and fetched over HTTP as a browser would:
//! each page's time from request to last byte, the median of its repetitions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::history::{JOBS, fill};
use crate::daemon::Daemon;
use crate::report::{Report, median};

/// Each page is fetched this many times; the first fetch (cold caches) is not counted.
const REPETITIONS: usize = 11;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let rows = if quick { 100_000 } else { 1_000_000 };
    let now = jiff::Timestamp::now().as_millisecond();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // The seeded jobs, on a schedule that does not fire while the pages are measured.
    let jobs: String = (0..JOBS)
        .map(|i| {
            format!(
                "[[jobs]]\nname = \"job-{i}\"\nschedule = \"0 0 1 1 *\"\nplugin = \"exec\"\n\
                 params = {{ command = \"true\" }}\n"
            )
        })
        .collect();
    let daemon = Daemon::start_on(
        |path| fill(path, rows, now).map(drop),
        &format!("web_listen = \"127.0.0.1:{port}\"\nweb_show_output = true"),
        &jobs,
    )?;
    let middle = rows as i64 / 2;
    let pages = [
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
    ];
    let mut figures = Vec::new();
    for (name, path) in &pages {
        let mut samples = Vec::new();
        for repetition in 0..=REPETITIONS {
            let start = Instant::now();
            let size = get(port, path).with_context(|| format!("GET {path}"))?;
            if repetition > 0 {
                samples.push(start.elapsed().as_secs_f64() * 1_000.0);
            }
            anyhow::ensure!(size > 1_000, "GET {path} answered only {size} bytes");
        }
        figures.push((*name, median(&mut samples)));
    }
    drop(daemon);
    let worst = figures.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    figures.push(("worst_page", worst));
    let named: Vec<(String, f64)> = figures
        .iter()
        .map(|(name, ms)| (format!("{name}_ms"), *ms))
        .collect();
    report.add(
        "web",
        named
            .iter()
            .map(|(name, ms)| (name.as_str(), *ms))
            .collect(),
    );
    Ok(())
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
