//! `peer_N`: the same load as `dispatch_N` on `tokio-cron-scheduler` with its default settings,
//! in the same run: N jobs on `* * * * * *`; how late each job starts, and how many of the due
//! fires start at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};

use super::Lateness;
use crate::report::Report;

pub fn run(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    super::lateness_at_scale(quick, "peer", report, one)
}

fn one(jobs: usize, seconds: i64) -> anyhow::Result<Lateness> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let scheduler = JobScheduler::new().await?;
        // (due second, lateness ms) of each start.
        let starts: Arc<Mutex<Vec<(i64, f64)>>> = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..jobs {
            let starts = Arc::clone(&starts);
            let job = Job::new_async("* * * * * *", move |_id, _lock| {
                let starts = Arc::clone(&starts);
                Box::pin(async move {
                    let now = jiff::Timestamp::now().as_microsecond();
                    let due = now / 1_000_000;
                    let late = (now - due * 1_000_000) as f64 / 1_000.0;
                    if let Ok(mut starts) = starts.lock() {
                        starts.push((due, late));
                    }
                })
            })?;
            scheduler.add(job).await?;
        }
        scheduler.start().await?;
        let begin = jiff::Timestamp::now().as_second() + 2;
        let end = begin + seconds;
        tokio::time::sleep(Duration::from_millis(
            u64::try_from((end + 1) * 1_000 - jiff::Timestamp::now().as_millisecond()).unwrap_or(0),
        ))
        .await;
        let mut scheduler = scheduler;
        scheduler.shutdown().await?;
        let mut late: Vec<f64> = starts
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .filter(|(due, _)| (begin..end).contains(due))
            .map(|(_, late)| *late)
            .collect();
        Ok(Lateness::of(&mut late, jobs as f64 * seconds as f64))
    })
}
