//! Where the pages' data comes from: the history, read on blocking threads (SQLite through
//! read-only connections, or a cluster's PostgreSQL through a pool of its own, as the CLI reads
//! them), and the engine, asked through the control channel (as the CLI asks it), so serving a
//! page never stalls the daemon's loop nor takes the connections its cluster protocol uses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use tokio::sync::mpsc;

use super::history::History;
use super::page::PageError;
use crate::config::{Config, Environment};
use crate::control::server::Incoming;
use crate::control::{Request, Response};
use crate::store::postgres::PgDatabase;
use crate::store::sqlite::SqliteHistory;

/// How long a page waits for the engine's answer before saying the daemon is busy.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections kept open between requests (more are opened when pages are read at
/// once, and closed after).
const IDLE_CONNECTIONS: usize = 4;

/// The web view's sources.
#[derive(Debug)]
pub(crate) struct Site {
    engine: mpsc::Sender<Incoming>,
    history: Source,
    config: ConfigCache,
    /// The zone pages show instants in: the machine's, as the CLI's tables do.
    pub(crate) zone: TimeZone,
}

/// Where the history is.
#[derive(Debug)]
enum Source {
    /// The daemon's SQLite file, and read-only connections to it kept between requests.
    Local {
        database: PathBuf,
        idle: Mutex<Vec<SqliteHistory>>,
    },
    /// The cluster's database (boxed: a pool's handle is large beside a path).
    Cluster(Box<PgDatabase>),
}

impl Site {
    /// The sources of a daemon started with `config`; `cluster` is the shared database of a
    /// node of a cluster (a pool for the web view alone).
    pub(crate) fn new(
        config: &Arc<Config>,
        engine: mpsc::Sender<Incoming>,
        cluster: Option<PgDatabase>,
    ) -> Site {
        let history = match cluster {
            Some(db) => Source::Cluster(Box::new(db)),
            None => Source::Local {
                database: config.daemon.database.clone(),
                idle: Mutex::new(Vec::new()),
            },
        };
        Site {
            engine,
            history,
            config: ConfigCache::new(Arc::clone(config)),
            zone: TimeZone::system(),
        }
    }

    /// Whether this daemon is a node of a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.history, Source::Cluster(_))
    }

    /// Asks the engine, as `pacer` does over the control socket.
    pub(crate) async fn ask(&self, request: Request) -> Result<Response, PageError> {
        let (reply, mut answers) = mpsc::unbounded_channel();
        let busy = || PageError::Unavailable("pacerd did not answer in time; try again".into());
        tokio::time::timeout(ENGINE_TIMEOUT, async {
            self.engine
                .send(Incoming { request, reply })
                .await
                .map_err(|_| PageError::Unavailable("pacerd is stopping".to_owned()))?;
            answers
                .recv()
                .await
                .ok_or_else(|| PageError::Unavailable("pacerd is stopping".to_owned()))
        })
        .await
        .map_err(|_| busy())?
    }

    /// Runs `query` on a blocking thread, on the history (one daemon's in one read
    /// transaction, so that a page agrees with itself), with the config in force.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, query: F) -> Result<T, PageError>
    where
        T: Send + 'static,
        F: FnOnce(&History<'_>, &Config) -> Result<T, PageError> + Send + 'static,
    {
        let site = Arc::clone(self);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let config = site.config.current();
            match &site.history {
                Source::Local { database, idle } => {
                    let history = match idle.lock().ok().and_then(|mut idle| idle.pop()) {
                        Some(history) => history,
                        None => SqliteHistory::open(database)?,
                    };
                    let result = history.snapshot(|| query(&History::Local(&history), &config));
                    if let Ok(mut idle) = idle.lock()
                        && idle.len() < IDLE_CONNECTIONS
                    {
                        idle.push(history);
                    }
                    result
                }
                Source::Cluster(db) => query(&History::Cluster(db, &runtime), &config),
            }
        })
        .await
        .map_err(|e| PageError::Internal(format!("a page's query stopped: {e}")))?
    }
}

/// The config in force, as far as the web view needs it (pools, caps, a job's settings): the
/// daemon reloads by itself when the files change, so the files, re-read when they change,
/// are what it runs; a file that does not validate leaves the last good config, as the daemon
/// does.
#[derive(Debug)]
struct ConfigCache {
    path: PathBuf,
    state: Mutex<(Fingerprint, Arc<Config>)>,
}

impl ConfigCache {
    fn new(config: Arc<Config>) -> ConfigCache {
        let path = config.path.clone();
        ConfigCache {
            state: Mutex::new((fingerprint(&path), config)),
            path,
        }
    }

    /// The config, re-read first if its files changed.
    fn current(&self) -> Arc<Config> {
        let now = fingerprint(&self.path);
        // Held only while the files are compared (and re-read when they changed): a panic
        // there leaves the state as it was, so a poisoned lock is still sound.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.0 != now {
            if let Ok(config) = crate::config::load(&self.path, Environment::current()) {
                state.1 = Arc::new(config);
            }
            state.0 = now;
        }
        Arc::clone(&state.1)
    }
}

/// The config files with their modification times and sizes: when it differs, they changed.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The main file and the drop-ins with their modification times and sizes.
fn fingerprint(path: &Path) -> Fingerprint {
    let mut files = vec![path.to_owned()];
    if let Some(dir) = path.parent() {
        let drop_ins = dir.join(crate::config::defaults::DROP_IN_DIR);
        if let Ok(entries) = std::fs::read_dir(&drop_ins) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    files
        .into_iter()
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (file, modified, len)
        })
        .collect()
}
