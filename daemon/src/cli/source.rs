//! Where the CLI reads the history: the daemon's SQLite file, or, with `[cluster]`, the
//! PostgreSQL database the nodes share (so every verb works from any node). Both read without
//! the daemon; both give the same rows, a cluster's with the node that ran each run.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

use super::Context;
use crate::config::load_cluster_settings;
use crate::model::Status;
use crate::store::postgres::{NodeInfo, PgDatabase};
use crate::store::sqlite::SqliteHistory;
use crate::store::{History, HistoryQuery, JobState, JobStats, RunDetail, RunRecord, StoreError};

/// The history the CLI reads.
#[derive(Debug)]
pub enum Source {
    /// One daemon's SQLite file.
    Local(SqliteHistory, PathBuf),
    /// A cluster's shared database.
    Cluster(PgDatabase, Box<tokio::runtime::Runtime>),
}

impl Source {
    /// The history the config at hand names, `None` before the daemon's first start made one.
    pub fn open(context: &Context) -> anyhow::Result<Option<Source>> {
        let cluster = load_cluster_settings(&context.config).map_err(|errors| {
            anyhow!("{errors}").context(
                "cannot read [cluster] (with database_url_file, the file must be readable: be \
                 root or in pacerd's group)",
            )
        })?;
        if let Some(settings) = cluster {
            let runtime = super::runtime()?;
            let db = runtime
                .block_on(async { PgDatabase::connect(&settings.database, 1) })
                .context("cannot reach the cluster's database")?;
            // Before the first node started, the database has no tables: no history yet.
            if !runtime.block_on(db.has_schema())? {
                return Ok(None);
            }
            return Ok(Some(Source::Cluster(db, Box::new(runtime))));
        }
        let settings = context.settings()?;
        match SqliteHistory::open(&settings.database) {
            Ok(history) => Ok(Some(Source::Local(history, settings.database))),
            Err(StoreError::Missing(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Why there is no history yet, for the verbs that need one.
    pub fn missing(context: &Context) -> anyhow::Error {
        match load_cluster_settings(&context.config) {
            Ok(Some(settings)) => anyhow!(
                "no run history yet in the cluster's database {}: the first node to start \
                 creates it",
                settings.database
            ),
            _ => match context.settings() {
                Ok(settings) => StoreError::Missing(settings.database).into(),
                Err(e) => e,
            },
        }
    }

    /// Whether this is a cluster's history (its runs name their node).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Source::Cluster(..))
    }

    /// Runs matching `query`, newest first.
    pub fn runs(&self, query: &HistoryQuery) -> anyhow::Result<Vec<RunRecord>> {
        match self {
            Source::Local(history, database) => {
                let runs = history.runs(query)?;
                super::warn_damaged(history, database);
                Ok(runs)
            }
            Source::Cluster(db, runtime) => Ok(runtime
                .block_on(db.runs(query))?
                .into_iter()
                .map(RunRecord::from)
                .collect()),
        }
    }

    /// One run in full.
    pub fn run(&self, id: i64) -> anyhow::Result<Option<RunDetail>> {
        match self {
            Source::Local(history, _) => Ok(history.run(id)?),
            Source::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.run(id))?.map(|detail| RunDetail {
                    record: RunRecord::from(detail.run),
                    output: detail.output,
                    output_dropped: detail.output_dropped,
                    params: detail.params,
                }))
            }
        }
    }

    /// Per-job figures.
    pub fn stats(&self, job: Option<&str>, since: Option<i64>) -> anyhow::Result<Vec<JobStats>> {
        match self {
            Source::Local(history, database) => {
                let stats = history.stats(job, since)?;
                super::warn_damaged(history, database);
                Ok(stats)
            }
            Source::Cluster(db, runtime) => Ok(runtime.block_on(db.stats(job, since))?),
        }
    }

    /// The newest run's status for each job.
    pub fn last_statuses(&self) -> anyhow::Result<HashMap<String, Status>> {
        match self {
            Source::Local(history, _) => Ok(history.last_statuses()?),
            Source::Cluster(db, runtime) => Ok(runtime.block_on(db.last_statuses())?),
        }
    }

    /// Each job's last fire and paused flag.
    pub fn job_states(&self) -> anyhow::Result<HashMap<String, JobState>> {
        match self {
            Source::Local(history, _) => Ok(history.job_states()?),
            Source::Cluster(db, runtime) => Ok(runtime.block_on(db.job_states())?),
        }
    }

    /// A cluster's nodes; `None` for one daemon.
    pub fn nodes(&self) -> anyhow::Result<Option<Vec<NodeInfo>>> {
        match self {
            Source::Local(..) => Ok(None),
            Source::Cluster(db, runtime) => Ok(Some(runtime.block_on(db.nodes())?)),
        }
    }
}
