//! What goes wrong with the history, said so that an operator can act: every error names the
//! file, keeps the cause as the operating system or SQLite stated it, and says what to do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::ErrorCode;

use super::RunId;

/// Where the failure behaviours, restoring from a backup and reading a copy are described.
const FAILURES_DOC: &str = "docs/failures.md";

/// A store failure, with the file involved and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of the history (the database, its directory or its `.lock`) could not be created,
    /// opened, locked or given its mode.
    #[error("cannot {action} {}: {cause}{}", path.display(), io_advice(cause, path))]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, as a verb phrase ("create", "lock", ...).
        action: &'static str,
        /// The operating system's reason.
        cause: std::io::Error,
    },
    /// SQLite refused to open the database.
    #[error(
        "cannot open the run history {}: {cause}{}",
        path.display(),
        if hint.is_empty() { sqlite_advice(cause, path) } else { (*hint).to_owned() }
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason (in the message, not a separate source, so it is said once).
        cause: rusqlite::Error,
        /// What to check, when the side that opened knows better than SQLite's code says.
        hint: &'static str,
    },
    /// Another daemon holds the database.
    #[error(
        "another pacerd is using the database {path} (it holds {path}.lock{holder}); stop it, or give this one another `database`"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// ", pid N" when the holder wrote its pid.
        holder: String,
    },
    /// The database cannot be looked at (its directory is not searchable for this user).
    #[error("cannot read the run history at {path}: {cause}{hint}")]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// There is no database yet (read-only opens do not create one).
    #[error(
        "no run history at {0} yet: pacerd creates it on its first start (check `database` in [daemon])"
    )]
    Missing(PathBuf),
    /// The database file exists but holds nothing. pacerd never leaves one behind (it builds a
    /// new database under another name and renames it into place), so the history was lost.
    #[error(
        "the run history {} is empty (0 bytes): it was truncated or replaced, and pacerd will not \
         start a new history over it; restore it from a backup, or remove the empty file to start \
         an empty history ({FAILURES_DOC})",
        .0.display()
    )]
    Empty(PathBuf),
    /// The schema could not be brought up to date.
    #[error("{}", describe_migration(path, cause))]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The migration's reason.
        cause: rusqlite_migration::Error,
    },
    /// A query or a write failed. The database file is added where the store hands the error
    /// out, since the statements themselves do not know it.
    #[error("{}", describe_sqlite(path.as_deref(), cause))]
    Sqlite {
        /// The database file.
        path: Option<PathBuf>,
        /// SQLite's reason, shared by every write of a batch whose commit failed.
        cause: Arc<rusqlite::Error>,
    },
    /// One run's row does not decode (it was altered outside pacer, or the file is damaged).
    /// Listings skip such rows with a warning; this error is for `pacer show` of that run.
    #[error(
        "run {id} in {} is damaged: {problem}; the rest of the history is unaffected \
         ({FAILURES_DOC})",
        path.as_deref().map_or_else(|| "the run history".into(), |p| p.display().to_string())
    )]
    DamagedRun {
        /// The database file.
        path: Option<PathBuf>,
        /// The run.
        id: RunId,
        /// Which column holds what.
        problem: String,
    },
    /// A run that is not `running` was asked to finish (it was already finished or abandoned).
    #[error("run {0} is not running, so it cannot finish")]
    NotRunning(RunId),
    /// A run that is no longer `queued` was asked to start or to end before starting (it
    /// started, or was cancelled or skipped, already).
    #[error("run {0} is no longer queued")]
    NotQueued(RunId),
    /// A run's start was taken back before it was written (the daemon is stopping): the run
    /// stays `queued`.
    #[error("the start of run {0} was taken back before it could be written")]
    Withdrawn(RunId),
    /// The params could not be encoded for storing.
    #[error("cannot encode the params of a run: {0}")]
    Params(serde_json::Error),
    /// The writer thread could not be started.
    #[error("cannot start the history's writer thread: {0}")]
    Thread(std::io::Error),
    /// The writer thread is gone (the daemon is stopping).
    #[error("the history writer has stopped")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(cause: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: None,
            cause: Arc::new(cause),
        }
    }
}

impl StoreError {
    /// The same error, naming `path` where it did not name a file yet.
    pub(crate) fn in_file(self, path: &Path) -> StoreError {
        match self {
            StoreError::Sqlite { path: None, cause } => StoreError::Sqlite {
                path: Some(path.to_owned()),
                cause,
            },
            StoreError::DamagedRun {
                path: None,
                id,
                problem,
            } => StoreError::DamagedRun {
                path: Some(path.to_owned()),
                id,
                problem,
            },
            other => other,
        }
    }
}

fn describe_sqlite(path: Option<&Path>, cause: &rusqlite::Error) -> String {
    match path {
        Some(path) => format!(
            "the run history {}: {cause}{}",
            path.display(),
            sqlite_advice(cause, path)
        ),
        None => format!("the run history: {cause}"),
    }
}

/// What to do about a SQLite failure, from its primary result code.
pub(crate) fn sqlite_advice(cause: &rusqlite::Error, path: &Path) -> String {
    let file = path.display();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .display();
    match cause.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => format!(
            "; the file system holding it is full: free space there (`df -h {dir}`); pacer's \
             own output_limit and history_retention bound what it keeps"
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "; another process holds a lock on it: find it with `fuser -v {file} {file}-wal \
             {file}-shm` (often a sqlite3 shell or a backup left open) and end it"
        ),
        Some(ErrorCode::ReadOnly) => format!(
            "; it cannot be written: is its file system mounted read-only, or is the file, its \
             -wal or -shm immutable (`lsattr {file}*`, then `chattr -i`)?"
        ),
        // SQLite reports a write the kernel refused (an immutable file: EPERM) as an I/O
        // error too, so both causes are named.
        Some(ErrorCode::SystemIoFailure) => format!(
            "; the operating system failed or refused a read or write of {file} or its \
             -wal/-shm: check whether one is immutable or append-only (`lsattr {file}*`, then \
             `chattr -i -a`), the disk (`dmesg`) and free space"
        ),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => format!(
            "; the file is damaged or is not a pacer history: stop pacerd, move {file} aside and \
             restore it from a backup; {FAILURES_DOC} says how to recover what is left and read \
             it with `pacer --config COPY.toml history`"
        ),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => format!(
            "; check that {dir} exists and that this user may read it (pacerd: and write to it)"
        ),
        _ => String::new(),
    }
}

/// What to do about an I/O failure on `path`, from the operating system's reason.
pub(crate) fn io_advice(cause: &std::io::Error, path: &Path) -> String {
    use std::io::ErrorKind;
    let file = path.display();
    match cause.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            "; its file system is full: free space there".to_owned()
        }
        ErrorKind::ReadOnlyFilesystem => format!(
            "; its file system is mounted read-only: remount it read-write (`findmnt -T {file}`) \
             or set `database` in [daemon] to a writable place"
        ),
        // EPERM: root is refused too, so a permission bit is not the reason.
        ErrorKind::PermissionDenied if cause.raw_os_error() == Some(libc::EPERM) => format!(
            "; the file is immutable or append-only (`lsattr {file}`): `chattr -i -a {file}`"
        ),
        ErrorKind::PermissionDenied => format!(
            "; this user may not write there: give pacerd's user the file and its directory \
             (`ls -ld {file}`), or set `database` in [daemon]"
        ),
        ErrorKind::NotADirectory => {
            "; a part of the path is a file, not a directory: check `database` in [daemon]"
                .to_owned()
        }
        _ => String::new(),
    }
}

/// The migration crate's own text of a failed statement quotes the whole migration: say
/// SQLite's reason instead.
fn describe_migration(path: &Path, cause: &rusqlite_migration::Error) -> String {
    use rusqlite_migration::{Error, MigrationDefinitionError};
    let file = path.display();
    match cause {
        Error::RusqliteError { err, .. } => format!(
            "cannot bring the run history {file} up to date: {err}{}",
            sqlite_advice(err, path)
        ),
        Error::MigrationDefinition(MigrationDefinitionError::DatabaseTooFarAhead) => format!(
            "the run history {file} was written by a newer pacerd, which this one cannot read: \
             upgrade pacer, or restore a backup taken before the upgrade ({FAILURES_DOC})"
        ),
        other => format!("cannot bring the run history {file} up to date: {other}"),
    }
}

/// A row that did not decode, and so was left out of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRow {
    /// The row's id, when it could be read.
    pub id: Option<RunId>,
    /// The table it belongs to.
    pub table: &'static str,
    /// Which column holds what.
    pub problem: String,
}

impl fmt::Display for DamagedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} row {id}: {}", self.table, self.problem),
            None => write!(f, "a {} row: {}", self.table, self.problem),
        }
    }
}
