//! The config file: serde structs with spans ([`raw`]), defaults ([`defaults`]), and a validate
//! step that turns them into the typed [`Config`] or errors naming `file:line:column`.

mod cluster;
pub mod defaults;
mod document;
mod error;
mod load;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::schedule::{Schedule, jitter_offset};

pub use cluster::{ClusterSettings, DatabaseUrl, SslMode, UrlSource};
pub(crate) use document::closest;
pub use error::{ConfigError, ConfigErrors};
#[cfg(test)]
pub use load::load_text;
pub use load::{ConfigPath, Environment, load, load_cluster_settings, load_daemon_settings};
pub use raw::{CatchUp, Overlap, Recover};
pub use validate::plugin_name;

/// A validated configuration: what the daemon runs and what `pacer check` reports on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file, as the user named it.
    pub path: PathBuf,
    /// Drop-in files read from `jobs.d`, in the order read.
    pub drop_ins: Vec<PathBuf>,
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[cluster]`: with it, the node shares its schedule with others on PostgreSQL.
    pub cluster: Option<ClusterSettings>,
    /// Named pools; always holds [`defaults::POOL`].
    pub pools: BTreeMap<String, Pool>,
    /// Jobs in file order, main file first.
    pub jobs: Jobs,
}

/// Jobs in file order, with an index by name: reloads and chains look jobs up by name, and a
/// scan per lookup makes a reload of 10,000 jobs quadratic. The index holds positions sorted
/// by name rather than a map of copied names: a tenth of the memory, for a binary search.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    list: Vec<Arc<Job>>,
    by_name: Vec<u32>,
}

impl Jobs {
    /// Indexes `list`, whose names validation made unique.
    fn new(list: Vec<Arc<Job>>) -> Jobs {
        let mut by_name: Vec<u32> = (0..u32::try_from(list.len()).unwrap_or(u32::MAX)).collect();
        by_name.sort_unstable_by(|a, b| list[*a as usize].name.cmp(&list[*b as usize].name));
        Jobs { list, by_name }
    }

    fn named(&self, name: &str) -> Option<&Arc<Job>> {
        let at = self
            .by_name
            .binary_search_by(|i| self.list[*i as usize].name.as_str().cmp(name))
            .ok()?;
        Some(&self.list[self.by_name[at] as usize])
    }
}

impl std::ops::Deref for Jobs {
    type Target = [Arc<Job>];

    fn deref(&self) -> &[Arc<Job>] {
        &self.list
    }
}

impl<'a> IntoIterator for &'a Jobs {
    type Item = &'a Arc<Job>;
    type IntoIter = std::slice::Iter<'a, Arc<Job>>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// `[daemon]`, with defaults filled in and relative paths resolved.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Directories searched for plugins, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// The SQLite database.
    pub database: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The default zone for jobs.
    pub timezone: Zone,
    /// Runs in flight, all jobs together.
    pub max_concurrency: u32,
    /// Fires waiting for a slot.
    pub max_queue: u32,
    /// Missed fires run per job with `catch_up = "all"`.
    pub max_catch_up: u32,
    /// Captured output kept per run, in bytes.
    pub output_limit: u64,
    /// PSI thresholds above which new starts wait.
    pub pressure: PressureLimits,
    /// Runs older than this are pruned.
    pub history_retention: Duration,
    /// How long running jobs get on stop.
    pub shutdown_grace: Duration,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the read-only web view is served, if anywhere.
    pub web_listen: Option<SocketAddr>,
    /// Whether the web view shows captured output (which can hold secrets).
    pub web_show_output: bool,
}

/// Linux PSI thresholds ("some avg10", percent).
#[derive(Debug, Clone, PartialEq)]
pub struct PressureLimits {
    /// `max_cpu_pressure`.
    pub cpu: Option<f64>,
    /// `max_memory_pressure`.
    pub memory: Option<f64>,
    /// `max_io_pressure`.
    pub io: Option<f64>,
    /// Where `cpu`, `memory` and `io` files are read.
    pub dir: PathBuf,
}

/// A named time zone from the system's tz database.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The IANA name as configured.
    pub name: String,
    /// The zone's rules.
    pub tz: TimeZone,
}

/// `[pools.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Runs in flight in this pool; `None` means the global cap.
    pub max_concurrency: Option<u32>,
    /// Starts per second; a token bucket holding `max(1, rate)` tokens.
    pub max_starts_per_second: Option<f64>,
}

/// One job, validated.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// `None`: the job runs only when triggered.
    pub schedule: Option<Schedule>,
    /// The schedule line as written.
    pub schedule_text: Option<String>,
    /// The job's zone (its own or the daemon's default).
    pub timezone: Zone,
    /// The name the plugin declares.
    pub plugin: String,
    /// The pool it runs in.
    pub pool: String,
    /// What happens when a fire finds the previous run still going.
    pub overlap: Overlap,
    /// Killed after this long.
    pub timeout: Option<Duration>,
    /// Further attempts after a failure.
    pub retries: u32,
    /// The first retry delay; it doubles each attempt.
    pub retry_backoff: Duration,
    /// The cap on the retry delay.
    pub retry_backoff_max: Duration,
    /// The fixed offset added to each scheduled fire (already derived from the name).
    pub jitter_offset: Duration,
    /// The configured jitter span (for display).
    pub jitter: Option<Duration>,
    /// Fires missed while the daemon was down.
    pub catch_up: CatchUp,
    /// Higher starts first when runs wait for a slot.
    pub priority: i32,
    /// A disabled job never fires.
    pub enabled: bool,
    /// Address-space cap of the run's process, in bytes.
    pub memory_limit: Option<u64>,
    /// Run as this user.
    pub user: Option<String>,
    /// Jobs started when a run ends failed, timed out or crashed (after its last retry).
    pub on_failure: Vec<String>,
    /// Jobs started when a run succeeds.
    pub on_success: Vec<String>,
    /// With `[cluster]`: what becomes of a run whose node died.
    pub recover: Recover,
    /// The params table, as JSON, handed to the plugin; shared, as every fire hands it on.
    pub params: Arc<serde_json::Value>,
    /// The file that defines the job.
    pub source: Arc<Path>,
    /// 1-based line of the `[[jobs]]` entry in `source`.
    pub line: usize,
    /// 1-based line and column of the `plugin` value, where errors about the plugin point.
    pub plugin_at: (usize, usize),
    /// 1-based line and column of the params table (of the entry, without one), where errors
    /// about the params point.
    pub params_at: (usize, usize),
    /// Where runs start: the directory of `source`.
    pub workdir: Arc<Path>,
}

impl Job {
    /// The first scheduled fire strictly after `after`, jitter included.
    pub fn next_fire_after(&self, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let offset = jiff::SignedDuration::try_from(self.jitter_offset).ok()?;
        let cron_time = self
            .schedule
            .as_ref()?
            .next_after(after.checked_sub(offset).ok()?)?;
        cron_time.checked_add(offset).ok()
    }

    /// `file:line:column` of a place in the job's entry, such as [`Job::params_at`].
    pub fn place(&self, (line, column): (usize, usize)) -> String {
        format!("{}:{line}:{column}", self.source.display())
    }

    /// Whether the job fires once per boot.
    pub fn is_reboot(&self) -> bool {
        matches!(self.schedule, Some(Schedule::Reboot))
    }

    /// What decides when the job fires, as one line: two versions of a job with the same
    /// timing fire at the same instants, so a reload keeps its next fire.
    pub fn timing(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.schedule_text.as_deref().unwrap_or(""),
            self.timezone.name,
            self.jitter_offset.as_millis(),
            self.enabled
        )
    }

    /// Everything that decides what the job does, as one line: two versions of a job with the
    /// same digest behave the same (where the job is written in its file does not count).
    pub fn digest(&self) -> String {
        format!(
            "{}|{}|{}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
            self.timing(),
            self.plugin,
            self.pool,
            self.overlap,
            self.timeout,
            self.retries,
            self.retry_backoff,
            self.retry_backoff_max,
            self.catch_up,
            self.memory_limit,
            self.priority,
            self.user,
            self.on_failure,
            self.on_success,
            self.recover,
            self.jitter,
            self.params,
            self.workdir.display(),
        )
    }

    /// Whether the job fires at times its schedule computes (neither manual-only nor
    /// `@reboot`): for such a job, no next fire is worth saying.
    pub fn has_timed_schedule(&self) -> bool {
        matches!(self.schedule, Some(Schedule::Cron(_)))
    }
}

impl Config {
    /// The job called `name`.
    pub fn job(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.named(name)
    }

    /// The job whose name a mistyped `name` most likely meant, if one is close.
    pub fn nearest_job(&self, name: &str) -> Option<&str> {
        closest(name, self.jobs.iter().map(|job| job.name.as_str()))
    }
}

/// Resolves `path` against `base` (the directory of the file it was written in).
fn resolve(base: &Path, path: &str) -> PathBuf {
    base.join(path)
}

/// The offset a job's jitter puts on each fire.
fn offset_for(name: &str, jitter: Option<Duration>) -> Duration {
    jitter.map_or(Duration::ZERO, |span| jitter_offset(name, span))
}
