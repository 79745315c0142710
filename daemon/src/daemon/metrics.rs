//! Prometheus metrics at `/metrics` on `metrics_listen` (served by [`crate::web`]): what ran and how, lateness, skips, load
//! per pool, plugin refusals and the last success per job. Labels are bounded by the config
//! (job, pool names), by the statuses, and by the skip kinds: never run ids.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::admission::{AdmissionStatus, SkipKind};
use crate::config::{Job, Jobs};
use crate::engine::Observation;
use crate::model::{RunSpan, Status};
use crate::store::postgres::{NodeInfo, PoolLoad};
use crate::time::{from_ms, to_ms};

/// How many upcoming fires [`Metrics::schedules`] looks at for a job's longest gap, exactly.
const FIRES_FOR_INTERVAL: usize = 16;

/// Longer gaps further ahead (nights and weekends of `*/5 9-17 * * MON-FRI`) are found by
/// probing every [`PROBE_EVERY_MS`] over [`PROBE_SPAN_MS`]: a gap's length is known to within
/// one probe step, at 96 next-fire computations per job.
const PROBE_EVERY_MS: i64 = 2 * 3_600_000;
const PROBE_SPAN_MS: i64 = 8 * 86_400_000;

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
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
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
    history_writable: Gauge,
    cluster_nodes: Family<StateLabel, Gauge>,
    cluster_queued: Family<PoolLabel, Gauge>,
    cluster_running: Family<PoolLabel, Gauge>,
    config_drift: Family<NodeLabel, Gauge>,
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
        let history_writable = Gauge::default();
        history_writable.set(1);
        registry.register(
            "pacer_history_writable",
            "1 while the history can be written; 0 while writes wait (a full disk, a lock held \
             elsewhere) and no fire is taken",
            history_writable.clone(),
        );
        let cluster_nodes = Family::<StateLabel, Gauge>::default();
        registry.register(
            "pacer_cluster_nodes",
            "With [cluster]: the cluster's nodes, by state (alive, stopping, stopped, dead)",
            cluster_nodes.clone(),
        );
        let cluster_queued = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pacer_cluster_queued",
            "With [cluster]: fires waiting in the cluster's queue, by pool",
            cluster_queued.clone(),
        );
        let cluster_running = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pacer_cluster_running",
            "With [cluster]: runs going on any node, by pool",
            cluster_running.clone(),
        );
        let config_drift = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "pacer_cluster_config_drift",
            "With [cluster]: jobs whose config on a node differs from the cluster's, by node",
            config_drift.clone(),
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
            history_writable,
            cluster_nodes,
            cluster_queued,
            cluster_running,
            config_drift,
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
    /// reload); jobs without a recurring schedule, disabled or paused (which are not expected
    /// to succeed) have no series.
    pub fn schedules(&self, jobs: &Jobs, paused: &HashSet<String>, now: jiff::Timestamp) {
        if !self.exported {
            return;
        }
        self.schedule_interval.clear();
        // Jobs that share a schedule and zone share its gaps (jitter shifts them all alike).
        let mut gaps: HashMap<(&str, &str), Option<i64>> = HashMap::new();
        for job in jobs
            .iter()
            .filter(|job| job.enabled && !paused.contains(&job.name))
        {
            let Some(text) = job.schedule_text.as_deref() else {
                continue;
            };
            let gap = *gaps
                .entry((text, job.timezone.name.as_str()))
                .or_insert_with(|| longest_gap_ms(job, now));
            self.set_interval(job, gap);
        }
    }

    /// Sets or removes `job`'s interval as it is paused or resumed.
    pub fn paused(&self, job: &Job, paused: bool, now: jiff::Timestamp) {
        if !self.exported {
            return;
        }
        if paused {
            self.schedule_interval.remove(&JobLabel {
                job: job.name.clone(),
            });
        } else {
            self.schedule(job, now);
        }
    }

    fn schedule(&self, job: &Job, now: jiff::Timestamp) {
        if job.enabled {
            self.set_interval(job, longest_gap_ms(job, now));
        }
    }

    fn set_interval(&self, job: &Job, gap_ms: Option<i64>) {
        if let Some(gap_ms) = gap_ms {
            self.schedule_interval
                .get_or_create(&JobLabel {
                    job: job.name.clone(),
                })
                .set(seconds(gap_ms));
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

    /// The cluster as the shared database shows it: its nodes and each pool's load.
    pub fn cluster(&self, nodes: &[NodeInfo], load: &[PoolLoad]) {
        self.cluster_nodes.clear();
        for state in ["alive", "stopping", "stopped", "dead"] {
            let count = nodes.iter().filter(|node| node.state == state).count();
            self.cluster_nodes
                .get_or_create(&StateLabel {
                    state: state.to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.config_drift.clear();
        for node in nodes {
            self.config_drift
                .get_or_create(&NodeLabel {
                    node: node.node.clone(),
                })
                .set(i64::try_from(node.drift.len()).unwrap_or(i64::MAX));
        }
        self.cluster_queued.clear();
        self.cluster_running.clear();
        for pool in load {
            let label = PoolLabel {
                pool: pool.pool.clone(),
            };
            self.cluster_queued.get_or_create(&label).set(pool.queued);
            self.cluster_running.get_or_create(&label).set(pool.running);
        }
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

    /// Counts what the engine observed.
    ///
    /// Nothing is kept when `metrics_listen` is off: nobody could read it, and keeping it cost
    /// a few allocations per run (each job's series are made on its first run).
    pub fn observe(&self, observation: Observation, now: jiff::Timestamp) {
        if !self.exported {
            return;
        }
        match observation {
            Observation::Skipped { job, kind } => self.skipped(&job, kind),
            Observation::Admitted { job, wait_ms } => self.admitted(&job.pool, wait_ms),
            Observation::Started { lateness_ms } => self.run_started(lateness_ms),
            Observation::Finished { job, status, span } => {
                self.run_finished(&job.name, status, span);
            }
            Observation::Load(status) => self.load(&status),
            Observation::Paused { job, paused } => self.paused(&job, paused, now),
            Observation::Jobs { config, paused } => self.schedules(&config.jobs, &paused, now),
            Observation::JobRemoved(job) => self.job_removed(&job),
            Observation::PluginsRefused(count) => self.plugins_refused(count),
            Observation::HistoryWritable(writable) => {
                self.history_writable.set(i64::from(writable));
            }
        }
    }

    /// Runs in flight and fires queued, per pool.
    pub fn load(&self, status: &AdmissionStatus) {
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

    /// The exposition in `format`.
    fn render(&self, format: Format) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        };
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
    /// The format an `Accept` header prefers: OpenMetrics only when it weighs more (by `q`)
    /// than every other type listed.
    fn negotiate(accept: Option<&str>) -> Format {
        let mut best = (0.0, Format::Text);
        let mut other = 0.0_f64;
        for item in accept.unwrap_or_default().split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                if q > best.0 {
                    best = (q, Format::OpenMetrics);
                }
            } else {
                other = other.max(q);
            }
        }
        if best.0 > 0.0 && best.0 >= other {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The longest gap between the job's fires ahead: exact among the next
/// [`FIRES_FOR_INTERVAL`], and to within a probe step over [`PROBE_SPAN_MS`].
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
    let start = to_ms(now);
    let mut probe = start;
    while probe < start + PROBE_SPAN_MS {
        let Some(next) = job.next_fire_after(from_ms(probe)) else {
            break;
        };
        let gap = to_ms(next) - probe;
        longest = Some(longest.map_or(gap, |l: i64| l.max(gap)));
        probe += PROBE_EVERY_MS;
    }
    longest
}

fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1_000.0
}

impl crate::web::MetricsSource for Metrics {
    fn scrape(&self, accept: Option<&str>) -> (&'static str, String) {
        let format = Format::negotiate(accept);
        (format.content_type(), self.render(format))
    }
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
        assert!(metrics.render(Format::OpenMetrics).ends_with("# EOF\n"));
        let text = metrics.render(Format::Text);
        for expected in [
            "# TYPE pacer_runs_total counter\n",
            "pacer_runs_total{job=\"j\",status=\"succeeded\"} 1\n",
            "# TYPE pacer_build_info gauge\n",
            "pacer_queue_wait_seconds_count{pool=\"default\"} 0\n",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_only_when_preferred() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        // What Prometheus sends.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;\
                 version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
    }

    #[test]
    fn the_interval_is_the_longest_gap_ahead() {
        let (_dir, jobs) = jobs(&[
            ("weekdays", "0 7 * * MON-FRI"),
            ("office-hours", "*/5 9-17 * * MON-FRI"),
            ("ten-seconds", "*/10 * * * * *"),
            ("at-boot", "@reboot"),
            ("resting", "@daily"),
        ]);
        // A Wednesday morning: the week's longest gaps, the nights and Friday to Monday, are
        // further ahead than the next sixteen fires of the office-hours job.
        let now: jiff::Timestamp = "2027-01-06T10:00:00Z".parse().unwrap();
        let metrics = Metrics::new(&[], true);
        let paused = HashSet::from(["resting".to_owned()]);
        metrics.schedules(&jobs, &paused, now);
        let interval = |job: &str| {
            let text = metrics.render(Format::Text);
            let series = format!("pacer_schedule_interval_seconds{{job=\"{job}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .map(|value| value.parse::<f64>().unwrap())
        };
        assert_eq!(interval("weekdays"), Some(259_200.0));
        let office = interval("office-hours").unwrap();
        let weekend = 2.0 * 86_400.0 + 15.0 * 3_600.0 + 5.0 * 60.0;
        assert!(
            (weekend - 2.0 * 3_600.0..=weekend).contains(&office),
            "Friday 17:55 to Monday 09:00, to within a probe step: {office}"
        );
        assert_eq!(interval("ten-seconds"), Some(10.0));
        assert_eq!(interval("at-boot"), None);
        assert_eq!(
            interval("resting"),
            None,
            "a paused job is not expected to run"
        );

        let resting = jobs.iter().find(|job| job.name == "resting").unwrap();
        metrics.paused(resting, false, now);
        assert_eq!(interval("resting"), Some(86_400.0));
        metrics.job_removed("weekdays");
        assert_eq!(interval("weekdays"), None);
    }
}
