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

/// What the jobs page reads of a page of jobs.
#[derive(Debug)]
pub(crate) struct Overview {
    /// Every job's last status across a cluster; `None` for one daemon, whose engine knows.
    pub(crate) statuses: Option<HashMap<String, Status>>,
    /// Each job's newest runs, newest first.
    pub(crate) recent: Vec<Vec<RunRecord>>,
    /// Each job's figures over the window, and how many runs they cover.
    pub(crate) figures: Vec<(JobStats, usize)>,
}

/// What the timeline asks for.
#[derive(Debug)]
pub(crate) struct TimelineQuery<'a> {
    /// The jobs it may show, in order.
    pub(crate) jobs: &'a [String],
    /// Of those with runs, how many to pass over (earlier pages) and how many to show.
    pub(crate) skip: usize,
    pub(crate) take: usize,
    /// The window, Unix ms.
    pub(crate) from: i64,
    pub(crate) to: i64,
    /// A row's runs are those due from here to `to`, at most `row_runs` of them.
    pub(crate) rows_from: i64,
    pub(crate) row_runs: u32,
    /// The load counts runs due this long before `from`, at most `load_runs` of them.
    pub(crate) load_lookback: i64,
    pub(crate) load_runs: u32,
}

/// What the timeline draws.
#[derive(Debug)]
pub(crate) struct Timeline {
    /// How many of the jobs have runs in the window.
    pub(crate) active: usize,
    /// The page of them asked for, each with its runs, latest due first.
    pub(crate) rows: Vec<(String, Vec<WindowRun>)>,
    /// The runs that held or waited for a slot.
    pub(crate) spans: Vec<Span>,
}

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

    /// What the jobs page shows of `jobs`: each one's newest `strip` runs, and its figures
    /// over its newest `limit` runs in `[from, to)` with how many runs that was; in a cluster,
    /// also every job's last status across the nodes. A cluster's three queries go at once,
    /// each on a connection of its own.
    pub(crate) fn overview(
        &self,
        jobs: &[String],
        strip: u32,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Overview, PageError> {
        match self {
            History::Local(history) => {
                let mut overview = Overview {
                    statuses: None,
                    recent: Vec::with_capacity(jobs.len()),
                    figures: Vec::with_capacity(jobs.len()),
                };
                for job in jobs {
                    overview.recent.push(history.runs(&HistoryQuery {
                        job: Some(job.clone()),
                        limit: strip,
                        ..HistoryQuery::default()
                    })?);
                    overview
                        .figures
                        .push(history.job_figures(job, from, to, limit)?);
                }
                Ok(overview)
            }
            History::Cluster(db, runtime) => runtime.block_on(async {
                let (statuses, recent, figures) = tokio::join!(
                    db.last_statuses(),
                    db.recent_runs(jobs, strip),
                    db.jobs_figures(jobs, from, to, limit)
                );
                Ok(Overview {
                    statuses: Some(statuses?),
                    recent: recent?,
                    figures: figures?,
                })
            }),
        }
    }

    /// What the timeline draws: of `query.jobs`, those with runs due in `[rows_from, to)`
    /// (how many, and the page of them asked for, each with its runs there, latest due first),
    /// and the spans that held or waited for a slot in `[from, to)`. A cluster's rows and
    /// spans are read at once, each on a connection of its own.
    pub(crate) fn timeline(&self, query: &TimelineQuery<'_>) -> Result<Timeline, PageError> {
        match self {
            History::Local(history) => {
                let mut active = Vec::new();
                for job in query.jobs {
                    if history.has_runs(job, query.rows_from, query.to)? {
                        active.push(job.clone());
                    }
                }
                let count = active.len();
                let mut rows = Vec::new();
                for job in active.into_iter().skip(query.skip).take(query.take) {
                    let runs =
                        history.job_window(&job, query.rows_from, query.to, query.row_runs)?;
                    rows.push((job, runs));
                }
                let spans =
                    history.spans(query.from, query.to, query.load_lookback, query.load_runs)?;
                Ok(Timeline {
                    active: count,
                    rows,
                    spans,
                })
            }
            History::Cluster(db, runtime) => runtime.block_on(async {
                let rows = async {
                    let active = db
                        .jobs_with_runs(query.jobs, query.rows_from, query.to)
                        .await?;
                    let shown: Vec<String> = active
                        .iter()
                        .skip(query.skip)
                        .take(query.take)
                        .cloned()
                        .collect();
                    let windows = db
                        .jobs_windows(&shown, query.rows_from, query.to, query.row_runs)
                        .await?;
                    Ok::<_, ClusterError>((active.len(), shown.into_iter().zip(windows).collect()))
                };
                let spans = db.spans(query.from, query.to, query.load_lookback, query.load_runs);
                let (rows, spans) = tokio::join!(rows, spans);
                let (active, rows) = rows?;
                Ok(Timeline {
                    active,
                    rows,
                    spans: spans?,
                })
            }),
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

    /// A cluster's nodes, as `pacer nodes` lists them; `None` for one daemon.
    pub(crate) fn nodes(&self) -> Result<Option<Vec<NodeInfo>>, PageError> {
        match self {
            History::Local(_) => Ok(None),
            History::Cluster(db, runtime) => Ok(Some(runtime.block_on(db.nodes())?)),
        }
    }
}
