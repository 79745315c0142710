//! `history`: a database of 1,000,000 runs (1,000 jobs over 30 days), written through the
//! store's real writer, then the CLI's own queries against it: one job's newest runs, the
//! failures of the last day, and one job's statistics over 30 days.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer::model::{Status, Trigger};
use pacer::store::sqlite::{SqliteHistory, SqliteStore};
use pacer::store::{Finish, History, HistoryQuery, NewFire, StartRun, Store, Write};

use crate::report::{Report, median};

pub(super) const JOBS: usize = 1_000;
pub(super) const DAYS: i64 = 30;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let rows = if quick { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pacer.db");
    let now = jiff::Timestamp::now().as_millisecond();
    let insert_rows_per_s = fill(&path, rows, now)?;
    let history = SqliteHistory::open(&path)?;
    let timed = |mut query: Box<dyn FnMut() -> anyhow::Result<()>>| -> anyhow::Result<f64> {
        let mut samples = Vec::new();
        for _ in 0..25 {
            let start = Instant::now();
            query()?;
            samples.push(start.elapsed().as_secs_f64() * 1_000.0);
        }
        Ok(median(&mut samples))
    };
    let last50_job_ms = timed(Box::new(|| {
        let runs = history.runs(&HistoryQuery {
            job: Some("job-500".to_owned()),
            limit: 50,
            ..HistoryQuery::default()
        })?;
        anyhow::ensure!(runs.len() == 50, "expected 50 runs of job-500");
        Ok(())
    }))?;
    let failed_24h_ms = timed(Box::new(|| {
        let runs = history.runs(&HistoryQuery {
            status: Some(Status::Failed),
            since: Some(now - 86_400_000),
            limit: 50,
            ..HistoryQuery::default()
        })?;
        anyhow::ensure!(!runs.is_empty(), "expected failures in the last day");
        Ok(())
    }))?;
    let stats_ms = timed(Box::new(|| {
        let stats = history.stats(Some("job-500"), Some(now - DAYS * 86_400_000))?;
        anyhow::ensure!(stats.len() == 1, "expected stats of job-500");
        Ok(())
    }))?;
    report.add(
        "history",
        vec![
            ("insert_rows_per_s", insert_rows_per_s),
            ("last50_job_ms", last50_job_ms),
            ("failed_24h_ms", failed_24h_ms),
            ("stats_ms", stats_ms),
        ],
    );
    Ok(())
}

/// Writes `rows` runs spread over the last 30 days; returns rows per second.
pub(super) fn fill(path: &std::path::Path, rows: usize, now: i64) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = SqliteStore::open(path)?;
        let span = DAYS * 86_400_000;
        let start = Instant::now();
        // Enough writes in flight that the writer batches them, as a burst of fires would.
        let window = 2_000;
        let mut pending = Vec::with_capacity(window);
        let params = Arc::new(serde_json::json!({ "command": "true" }));
        for i in 0..rows {
            let job = format!("job-{}", i % JOBS);
            let scheduled_at = now - span + (i as i64 * span) / rows as i64;
            // Of each job's fires, 1 in 100 is skipped, 3 in 100 fail, the rest succeed, spread
            // over the month (row `i` is fire `i / JOBS` of its job).
            let fire = NewFire {
                job,
                plugin: "exec".to_owned(),
                trigger: Trigger::Schedule,
                attempt: 1,
                scheduled_at,
                accepted_at: scheduled_at,
                params: Arc::clone(&params),
                own_params: false,
                advances_schedule: true,
            };
            // Of each job's fires, 1 in 100 is skipped, 3 in 100 fail, the rest succeed, spread
            // over the month (row `i` is fire `i / JOBS` of its job): each written as the daemon
            // writes it, a queued record that starts and then finishes.
            let write = match (i + i / JOBS) % 100 {
                0 => {
                    let skipped = store.write(vec![Write::Skipped {
                        fire,
                        reason: "run 1 of `job` is still running (overlap = \"skip\")".to_owned(),
                    }]);
                    tokio::spawn(async move { anyhow::Ok(skipped.await.map(drop)?) })
                }
                kind => {
                    let queued = store.write(vec![Write::Queued { fire, reason: None }]);
                    let store = store.clone();
                    tokio::spawn(async move {
                        let id = queued
                            .await?
                            .pop()
                            .and_then(Result::ok)
                            .flatten()
                            .ok_or_else(|| anyhow::anyhow!("a queued record without an id"))?;
                        store
                            .start_run(StartRun {
                                id,
                                started_at: scheduled_at + 3,
                                queue_ms: 0,
                                process: None,
                            })
                            .await?;
                        let failed = kind <= 3;
                        store
                            .finish_run(Finish {
                                id,
                                status: if failed {
                                    Status::Failed
                                } else {
                                    Status::Succeeded
                                },
                                finished_at: scheduled_at + 250,
                                error: failed.then(|| "command exited with code 1".to_owned()),
                                message: None,
                                output: b"done\n".to_vec(),
                                output_dropped: 0,
                            })
                            .await?;
                        anyhow::Ok(())
                    })
                }
            };
            pending.push(write);
            if pending.len() == window {
                for write in pending.drain(..) {
                    write.await??;
                }
            }
        }
        for write in pending {
            write.await??;
        }
        let elapsed = start.elapsed().max(Duration::from_millis(1));
        store.close().await?;
        Ok(rows as f64 / elapsed.as_secs_f64())
    })
}
