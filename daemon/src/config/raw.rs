//! The config file's shape as serde reads it: every key the contract names, values still as
//! written (with their spans) so `validate` can point at them. Unknown keys are found by
//! [`super::document`], which walks the file against these structs' field lists.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// A whole config file, as [`super::document`] reads it section by section.
#[derive(Debug, Default)]
pub struct File {
    pub daemon: Option<Spanned<Daemon>>,
    pub cluster: Option<Spanned<Cluster>>,
    pub pools: BTreeMap<Spanned<String>, Spanned<Pool>>,
    pub jobs: Jobs,
}

/// A drop-in file from `jobs.d`: jobs only.
#[derive(Debug, Default)]
pub struct DropIn {
    pub jobs: Jobs,
}

/// The `[[jobs]]` entries of one file.
#[derive(Debug, Default)]
pub struct Jobs {
    /// The entries that could be read.
    pub read: Vec<Spanned<Job>>,
    /// The names of entries that could not be read (their error is reported already), so that
    /// chains naming them and duplicates of them are judged as if they were there.
    pub unreadable: Vec<Spanned<String>>,
}

/// `[daemon]`.
#[derive(Debug, Deserialize)]
pub struct Daemon {
    pub plugin_dirs: Option<Spanned<Vec<Spanned<String>>>>,
    pub database: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub max_concurrency: Option<Spanned<i64>>,
    pub max_queue: Option<Spanned<i64>>,
    pub max_catch_up: Option<Spanned<i64>>,
    pub output_limit: Option<Spanned<Scalar>>,
    pub max_cpu_pressure: Option<Spanned<f64>>,
    pub max_memory_pressure: Option<Spanned<f64>>,
    pub max_io_pressure: Option<Spanned<f64>>,
    pub pressure_dir: Option<Spanned<String>>,
    pub history_retention: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub metrics_listen: Option<Spanned<String>>,
    pub web_listen: Option<Spanned<String>>,
    pub web_show_output: Option<Spanned<bool>>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
pub struct Cluster {
    pub database_url: Option<Spanned<String>>,
    pub database_url_file: Option<Spanned<String>>,
    pub node_id: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<String>>,
    pub heartbeat: Option<Spanned<String>>,
    pub max_clock_skew: Option<Spanned<String>>,
    pub node_max_concurrency: Option<Spanned<i64>>,
    pub pools: Option<Vec<Spanned<String>>>,
}

/// `[pools.NAME]`.
#[derive(Debug, Default, Deserialize)]
pub struct Pool {
    pub max_concurrency: Option<Spanned<i64>>,
    pub max_starts_per_second: Option<Spanned<f64>>,
}

/// One `[[jobs]]` entry.
#[derive(Debug, Deserialize)]
pub struct Job {
    pub name: Spanned<String>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub plugin: Spanned<String>,
    pub pool: Option<Spanned<String>>,
    pub overlap: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_backoff: Option<Spanned<String>>,
    pub retry_backoff_max: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub catch_up: Option<Spanned<String>>,
    pub priority: Option<Spanned<i64>>,
    pub enabled: Option<bool>,
    pub memory_limit: Option<Spanned<Scalar>>,
    pub user: Option<Spanned<String>>,
    pub on_failure: Option<Vec<Spanned<String>>>,
    pub on_success: Option<Vec<Spanned<String>>>,
    pub recover: Option<Spanned<String>>,
    pub params: Option<Spanned<toml::Table>>,
}

/// What happens to a fire while the job's previous run still goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the fire as skipped, naming the run still going.
    #[default]
    Skip,
    /// Wait for the previous run; at most one fire waits per job.
    Queue,
    /// Cancel the running one, then start.
    Replace,
    /// Run side by side.
    Allow,
}

/// What happens to fires missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Record each as skipped.
    #[default]
    Skip,
    /// Run one.
    Once,
    /// Run the newest `max_catch_up`, one after another; record the older ones.
    All,
}

/// What becomes of a run whose node died while it ran (with `[cluster]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recover {
    /// It stays `abandoned`.
    #[default]
    Abandon,
    /// It stays `abandoned`, and one retry of it is queued for another node.
    Retry,
}

impl Recover {
    /// The config file's names.
    pub const CHOICES: [(&'static str, Recover); 2] =
        [("abandon", Recover::Abandon), ("retry", Recover::Retry)];
}

impl Overlap {
    /// The config file's names, in the order the contract lists them.
    pub const CHOICES: [(&'static str, Overlap); 4] = [
        ("skip", Overlap::Skip),
        ("queue", Overlap::Queue),
        ("replace", Overlap::Replace),
        ("allow", Overlap::Allow),
    ];
}

impl CatchUp {
    /// The config file's names, in the order the contract lists them.
    pub const CHOICES: [(&'static str, CatchUp); 3] = [
        ("skip", CatchUp::Skip),
        ("once", CatchUp::Once),
        ("all", CatchUp::All),
    ];
}

/// A size or count written either as a TOML integer or as a string with a unit (`"1M"`).
#[derive(Debug, Clone)]
pub enum Scalar {
    Integer(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string such as \"1M\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Integer)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}
