//! Prometheus metrics at `/metrics` on `metrics_listen`: what ran and how, lateness, skips, load
//! per pool, plugin refusals and the last success per job. Labels are bounded by the config
//! (job, pool names), by the statuses, and by the skip kinds: never run ids.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::dispatch::{DispatchStatus, SkipKind};
use crate::model::Status;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatus {
    job: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobReason {
    job: String,
    reason: String,
}

/// Seconds, from 10 ms to about 3 hours: run durations.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

/// Seconds, from 1 ms to about 4 minutes: waits and lateness, which should be short.
fn wait_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<JobStatus, Counter>,
    duration: Family<JobLabel, Histogram, fn() -> Histogram>,
    queue_wait: Family<PoolLabel, Histogram, fn() -> Histogram>,
    lateness: Histogram,
    skipped: Family<JobReason, Counter>,
    in_flight: Family<PoolLabel, Gauge>,
    queued: Family<PoolLabel, Gauge>,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    plugins_refused: Gauge,
}

impl Metrics {
    /// The metrics of a daemon whose pools are `pools`, each with its series from the start.
    pub fn new<'a>(pools: impl IntoIterator<Item = &'a String>) -> Metrics {
        let mut registry = Registry::default();
        let runs = Family::<JobStatus, Counter>::default();
        registry.register(
            "pacer_runs",
            "Runs that ended, by job and status",
            runs.clone(),
        );
        let duration: Family<JobLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_buckets);
        registry.register_with_unit(
            "pacer_run_duration",
            "How long runs took, from spawn to reap",
            Unit::Seconds,
            duration.clone(),
        );
        let queue_wait: Family<PoolLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(wait_buckets);
        registry.register_with_unit(
            "pacer_queue_wait",
            "How long fires waited for admission, by pool",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let lateness = wait_buckets();
        registry.register_with_unit(
            "pacer_schedule_lateness",
            "Start time minus due time of each run",
            Unit::Seconds,
            lateness.clone(),
        );
        let skipped = Family::<JobReason, Counter>::default();
        registry.register(
            "pacer_skipped",
            "Fires a policy declined, by job and reason",
            skipped.clone(),
        );
        let in_flight = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pacer_in_flight",
            "Runs in flight, by pool",
            in_flight.clone(),
        );
        let queued = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pacer_queued",
            "Fires waiting for a slot, by pool",
            queued.clone(),
        );
        let last_success = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "pacer_last_success_timestamp",
            "When each job last succeeded, Unix time",
            Unit::Seconds,
            last_success.clone(),
        );
        let plugins_refused = Gauge::default();
        registry.register(
            "pacer_plugins_refused",
            "Plugin libraries found but refused",
            plugins_refused.clone(),
        );
        registry.register(
            "pacer_build",
            "The running pacerd's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let metrics = Metrics {
            registry,
            runs,
            duration,
            queue_wait,
            lateness,
            skipped,
            in_flight,
            queued,
            last_success,
            plugins_refused,
        };
        for pool in pools {
            let label = PoolLabel { pool: pool.clone() };
            metrics.in_flight.get_or_create(&label).set(0);
            metrics.queued.get_or_create(&label).set(0);
        }
        metrics
    }

    /// A run started `lateness_ms` after it was due.
    pub fn run_started(&self, lateness_ms: i64) {
        self.lateness.observe(seconds(lateness_ms));
    }

    /// A fire of `pool` waited `wait_ms` for admission.
    pub fn admitted(&self, pool: &str, wait_ms: i64) {
        self.queue_wait
            .get_or_create(&PoolLabel {
                pool: pool.to_owned(),
            })
            .observe(seconds(wait_ms));
    }

    /// A run of `job` ended as `status` after `duration_ms`, at `finished_at_ms`.
    pub fn run_finished(
        &self,
        job: &str,
        status: Status,
        duration_ms: Option<i64>,
        finished_at_ms: i64,
    ) {
        self.runs
            .get_or_create(&JobStatus {
                job: job.to_owned(),
                status: status.to_string(),
            })
            .inc();
        let label = JobLabel {
            job: job.to_owned(),
        };
        if let Some(duration) = duration_ms {
            self.duration
                .get_or_create(&label)
                .observe(seconds(duration));
        }
        if status == Status::Succeeded {
            self.last_success
                .get_or_create(&label)
                .set(seconds(finished_at_ms));
        }
    }

    /// A fire of `job` was declined.
    pub fn skipped(&self, job: &str, kind: SkipKind) {
        self.skipped
            .get_or_create(&JobReason {
                job: job.to_owned(),
                reason: kind.as_str().to_owned(),
            })
            .inc();
    }

    /// Runs in flight and fires queued, per pool.
    pub fn load(&self, status: &DispatchStatus) {
        for (pool, load) in &status.pools {
            let label = PoolLabel { pool: pool.clone() };
            self.in_flight
                .get_or_create(&label)
                .set(i64::from(load.in_flight));
            self.queued
                .get_or_create(&label)
                .set(i64::from(load.queued));
        }
    }

    /// How many plugin libraries are refused.
    pub fn plugins_refused(&self, count: usize) {
        self.plugins_refused
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1_000.0
}

/// Serves `GET /metrics` until the listener fails; anything else is a 404.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, std::sync::Arc::clone(&metrics)));
            }
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The longest request head read: a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;

async fn answer(mut stream: TcpStream, metrics: std::sync::Arc<Metrics>) {
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf)).await
        {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
