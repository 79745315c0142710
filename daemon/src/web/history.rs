//! The history a page reads: the daemon's SQLite file, or, with `[cluster]`, the PostgreSQL
//! database the nodes share, so that every node shows the whole cluster's runs (each with the
//! node that ran it). Both answer the same queries in the same shapes; a page does not know
//! which it reads, except that a cluster's runs name their nodes and only a cluster has nodes.

use std::collections::HashMap;

use tokio::runtime::Handle;

use super::page::PageError;
use crate::model::Status;
use crate::store::postgres::{ClusterError, NodeInfo, PgDatabase};
use crate::store::sqlite::SqliteHistory;
use crate::store::{
    CappedRun, History as _, HistoryQuery, JobStats, RunRecord, Span, StoreError, WindowRun,
};

/// A page's view of the history, on a blocking thread.
#[derive(Debug)]
pub(crate) enum History<'a> {
    /// One daemon's history, inside one read transaction.
    Local(&'a SqliteHistory),
    /// A cluster's shared database; its calls are run on the daemon's runtime.
    Cluster(&'a PgDatabase, &'a Handle),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        PageError::Internal(e.to_string())
    }
}

impl From<ClusterError> for PageError {
    fn from(e: ClusterError) -> PageError {
        if e.is_transient() {
            PageError::Unavailable(format!("{e}; try again"))
        } else {
            PageError::Internal(e.to_string())
        }
    }
}

impl History<'_> {
    /// Runs matching `query`, newest first (a cluster's with their nodes).
    pub(crate) fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, PageError> {
        match self {
            History::Local(history) => Ok(history.runs(query)?),
            History::Cluster(db, runtime) => Ok(runtime
                .block_on(db.runs(query))?
                .into_iter()
                .map(RunRecord::from)
                .collect()),
        }
    }

    /// The runs of `job` scheduled in `[from, to)`, latest due first, at most `limit`.
    pub(crate) fn job_window(
        &self,
        job: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<WindowRun>, PageError> {
        match self {
            History::Local(history) => Ok(history.job_window(job, from, to, limit)?),
            History::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.job_window(job, from, to, limit))?)
            }
        }
    }

    /// For each of `jobs`, its runs scheduled in `[from, to)`, latest due first, at most
    /// `limit` each.
    pub(crate) fn jobs_windows(
        &self,
        jobs: &[String],
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<Vec<WindowRun>>, PageError> {
        match self {
            History::Local(history) => jobs
                .iter()
                .map(|job| Ok(history.job_window(job, from, to, limit)?))
                .collect(),
            History::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.jobs_windows(jobs, from, to, limit))?)
            }
        }
    }

    /// For each of `jobs`, its newest `limit` runs, newest first.
    pub(crate) fn recent_runs(
        &self,
        jobs: &[String],
        limit: u32,
    ) -> Result<Vec<Vec<RunRecord>>, PageError> {
        match self {
            History::Local(history) => jobs
                .iter()
                .map(|job| {
                    Ok(history.runs(&HistoryQuery {
                        job: Some(job.clone()),
                        limit,
                        ..HistoryQuery::default()
                    })?)
                })
                .collect(),
            History::Cluster(db, runtime) => Ok(runtime.block_on(db.recent_runs(jobs, limit))?),
        }
    }

    /// For each of `jobs`, its figures over its newest `limit` runs in `[from, to)`, and how
    /// many runs that was.
    pub(crate) fn jobs_figures(
        &self,
        jobs: &[String],
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<(JobStats, usize)>, PageError> {
        match self {
            History::Local(history) => jobs
                .iter()
                .map(|job| Ok(history.job_figures(job, from, to, limit)?))
                .collect(),
            History::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.jobs_figures(jobs, from, to, limit))?)
            }
        }
    }

    /// Those of `jobs` with a run scheduled in `[from, to)`, in their order.
    pub(crate) fn jobs_with_runs(
        &self,
        jobs: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, PageError> {
        match self {
            History::Local(history) => {
                let mut active = Vec::new();
                for job in jobs {
                    if history.has_runs(job, from, to)? {
                        active.push(job.clone());
                    }
                }
                Ok(active)
            }
            History::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.jobs_with_runs(jobs, from, to))?)
            }
        }
    }

    /// The runs that held a slot in `[from, to)` and the fires waiting for one.
    pub(crate) fn spans(
        &self,
        from: i64,
        to: i64,
        lookback: i64,
        limit: u32,
    ) -> Result<Vec<Span>, PageError> {
        match self {
            History::Local(history) => Ok(history.spans(from, to, lookback, limit)?),
            History::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.spans(from, to, lookback, limit))?)
            }
        }
    }

    /// Run `id` with at most the last `max_output` bytes of its output.
    pub(crate) fn run_capped(
        &self,
        id: i64,
        max_output: u64,
    ) -> Result<Option<CappedRun>, PageError> {
        match self {
            History::Local(history) => Ok(history.run_capped(id, max_output)?),
            History::Cluster(db, runtime) => Ok(runtime.block_on(db.run_capped(id, max_output))?),
        }
    }

    /// The chained runs that `upstream` caused.
    pub(crate) fn downstream(
        &self,
        upstream: &RunRecord,
        window_ms: i64,
    ) -> Result<Vec<RunRecord>, PageError> {
        match self {
            History::Local(history) => Ok(history.downstream(upstream, window_ms)?),
            History::Cluster(db, runtime) => {
                Ok(runtime.block_on(db.downstream(upstream, window_ms))?)
            }
        }
    }

    /// The newest run's status of each job, across the cluster; `None` for one daemon, whose
    /// engine knows them.
    pub(crate) fn cluster_statuses(&self) -> Result<Option<HashMap<String, Status>>, PageError> {
        match self {
            History::Local(_) => Ok(None),
            History::Cluster(db, runtime) => Ok(Some(runtime.block_on(db.last_statuses())?)),
        }
    }

    /// A cluster's nodes, as `pacer nodes` lists them; `None` for one daemon.
    pub(crate) fn nodes(&self) -> Result<Option<Vec<NodeInfo>>, PageError> {
        match self {
            History::Local(_) => Ok(None),
            History::Cluster(db, runtime) => Ok(Some(runtime.block_on(db.nodes())?)),
        }
    }
}
