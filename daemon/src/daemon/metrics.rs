//! Prometheus metrics at `/metrics` on `metrics_listen`: what ran and how, lateness, skips, load
//! per pool, plugin refusals and the last success per job. Labels are bounded by the config
//! (job, pool names), by the statuses, and by the skip kinds: never run ids.

use std::collections::HashMap;
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

use super::runner::RunSpan;
use crate::config::{Job, Jobs};
use crate::dispatch::{DispatchStatus, SkipKind};
use crate::model::Status;
use crate::time::to_ms;

/// How many upcoming fires [`Metrics::schedules`] looks at for a job's longest gap: enough to
/// span a week of a weekdays-only schedule.
const FIRES_FOR_INTERVAL: usize = 16;

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
    schedule_interval: Family<JobLabel, Gauge<f64, AtomicU64>>,
    plugins_refused: Gauge,
    /// Whether anything scrapes these (`metrics_listen` is set): the per-job figures that cost
    /// work to compute are skipped otherwise.
    exported: bool,
}

impl Metrics {
    /// The metrics of a daemon whose pools are `pools`, each with its series from the start;
    /// `exported` when `metrics_listen` serves them.
    pub fn new<'a>(pools: impl IntoIterator<Item = &'a String>, exported: bool) -> Metrics {
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
        let schedule_interval = Family::<JobLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "pacer_schedule_interval",
            "The longest gap between a scheduled job's upcoming fires, for alerts on a job \
             that has not succeeded when it should have",
            Unit::Seconds,
            schedule_interval.clone(),
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
            schedule_interval,
            plugins_refused,
            exported,
        };
        for pool in pools {
            let label = PoolLabel { pool: pool.clone() };
            metrics.in_flight.get_or_create(&label).set(0);
            metrics.queued.get_or_create(&label).set(0);
            drop(metrics.queue_wait.get_or_create(&label));
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

    /// A run of `job` ended as `status`; `span` when its process ran.
    pub fn run_finished(&self, job: &str, status: Status, span: Option<RunSpan>) {
        self.runs
            .get_or_create(&JobStatus {
                job: job.to_owned(),
                status: status.to_string(),
            })
            .inc();
        let label = JobLabel {
            job: job.to_owned(),
        };
        let Some(span) = span else {
            return;
        };
        self.duration
            .get_or_create(&label)
            .observe(seconds(span.duration_ms()));
        if status == Status::Succeeded {
            self.last_success
                .get_or_create(&label)
                .set(seconds(span.finished_at));
        }
    }

    /// When jobs last succeeded before this start, from the history, so a restart does not
    /// blank the series that alerts watch.
    pub fn seed_last_success(&self, found: &HashMap<String, i64>) {
        for (job, finished_at_ms) in found {
            self.last_success
                .get_or_create(&JobLabel { job: job.clone() })
                .set(seconds(*finished_at_ms));
        }
    }

    /// Sets each scheduled job's longest gap between its upcoming fires (at start and on
    /// reload); jobs without a recurring schedule, or disabled, have no series.
    pub fn schedules(&self, jobs: &Jobs, now: jiff::Timestamp) {
        if !self.exported {
            return;
        }
        self.schedule_interval.clear();
        for job in jobs.iter().filter(|job| job.enabled) {
            if let Some(gap_ms) = longest_gap_ms(job, now) {
                self.schedule_interval
                    .get_or_create(&JobLabel {
                        job: job.name.clone(),
                    })
                    .set(seconds(gap_ms));
            }
        }
    }

    /// A reload removed `job`: its gauges go, so no alert fires for a job that is gone.
    pub fn job_removed(&self, job: &str) {
        let label = JobLabel {
            job: job.to_owned(),
        };
        self.last_success.remove(&label);
        self.schedule_interval.remove(&label);
    }

    /// Whether `metrics_listen` serves these metrics.
    pub fn exported(&self) -> bool {
        self.exported
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

    /// The OpenMetrics exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// OpenMetrics 1.0, for scrapers that ask for it in `Accept`.
    OpenMetrics,
    /// Prometheus text format 0.0.4, the default: what `curl` and older scrapers read.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    fn negotiate(accept: Option<&str>) -> Format {
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Rewrites the OpenMetrics exposition in the Prometheus text format: a counter family is named
/// with its `_total` suffix, `info` becomes a gauge named `_info`, and the `# UNIT` and `# EOF`
/// lines, which that format lacks, go. Samples are written alike in both.
fn to_text_format(openmetrics: &str) -> String {
    let mut renamed: HashMap<&str, (String, &str)> = HashMap::new();
    for line in openmetrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        match rest.split_once(' ') {
            Some((name, "counter")) => {
                renamed.insert(name, (format!("{name}_total"), "counter"));
            }
            Some((name, "info")) => {
                renamed.insert(name, (format!("{name}_info"), "gauge"));
            }
            _ => {}
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                match (renamed.get(name), prefix) {
                    (Some((new_name, kind)), "# TYPE ") => {
                        text.push_str(&format!("# TYPE {new_name} {kind}"));
                    }
                    (Some((new_name, _)), _) => {
                        text.push_str(&format!("{prefix}{new_name} {tail}"));
                    }
                    (None, _) => text.push_str(line),
                }
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// The longest gap between the job's next [`FIRES_FOR_INTERVAL`] fires after `now`.
fn longest_gap_ms(job: &Job, now: jiff::Timestamp) -> Option<i64> {
    let mut previous = job.next_fire_after(now)?;
    let mut longest = None;
    for _ in 1..FIRES_FOR_INTERVAL {
        let Some(next) = job.next_fire_after(previous) else {
            break;
        };
        let gap = to_ms(next) - to_ms(previous);
        longest = Some(longest.map_or(gap, |l: i64| l.max(gap)));
        previous = next;
    }
    longest
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
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (parts.next(), parts.next());
    let accept = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("accept").then_some(value.trim())
    });
    let (status, content_type, body) = match (method, path) {
        (Some("GET"), Some("/metrics")) => {
            let format = Format::negotiate(accept);
            let openmetrics = metrics.render();
            let body = match format {
                Format::OpenMetrics => openmetrics,
                Format::Text => to_text_format(&openmetrics),
            };
            ("200 OK", format.content_type(), body)
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_text;

    fn jobs(schedules: &[(&str, &str)]) -> (tempfile::TempDir, Jobs) {
        let text: String = schedules
            .iter()
            .map(|(name, schedule)| {
                format!(
                    "[[jobs]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nplugin = \"exec\"\n"
                )
            })
            .collect();
        let (dir, config) = load_text(&text);
        (dir, config.jobs)
    }

    #[test]
    fn the_text_format_names_counters_and_info_as_prometheus_does() {
        let metrics = Metrics::new(&["default".to_owned()], true);
        metrics.run_finished("j", Status::Succeeded, None);
        let openmetrics = metrics.render();
        assert!(
            openmetrics.contains("# TYPE pacer_runs counter\n"),
            "{openmetrics}"
        );
        assert!(openmetrics.ends_with("# EOF\n"));
        let text = to_text_format(&openmetrics);
        for expected in [
            "# HELP pacer_runs_total Runs that ended, by job and status.\n",
            "# TYPE pacer_runs_total counter\n",
            "pacer_runs_total{job=\"j\",status=\"succeeded\"} 1\n",
            "# TYPE pacer_build_info gauge\n",
            "pacer_build_info{version=\"",
            "# TYPE pacer_schedule_lateness_seconds histogram\n",
            "# TYPE pacer_in_flight gauge\npacer_in_flight{pool=\"default\"} 0\n",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }

    #[test]
    fn the_interval_is_the_longest_gap_ahead() {
        let (_dir, jobs) = jobs(&[
            ("weekdays", "0 7 * * MON-FRI"),
            ("ten-seconds", "*/10 * * * * *"),
            ("at-boot", "@reboot"),
        ]);
        // A Wednesday: the week's longest gap, Friday to Monday, is still ahead.
        let now: jiff::Timestamp = "2027-01-06T12:00:00Z".parse().unwrap();
        let metrics = Metrics::new(&[], true);
        metrics.schedules(&jobs, now);
        let text = metrics.render();
        assert!(
            text.contains("pacer_schedule_interval_seconds{job=\"weekdays\"} 259200.0"),
            "{text}"
        );
        assert!(
            text.contains("pacer_schedule_interval_seconds{job=\"ten-seconds\"} 10.0"),
            "{text}"
        );
        assert!(!text.contains("job=\"at-boot\""), "{text}");

        metrics.job_removed("weekdays");
        assert!(!metrics.render().contains("job=\"weekdays\""));
    }
}
