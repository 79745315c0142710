//! The SQLite backend: one writer thread that batches, and read-only connections for the CLI.

mod browse;
mod reader;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use rusqlite::{Connection, OpenFlags};

pub use browse::{CappedRun, Span, WindowRun, summarize};
pub use reader::SqliteHistory;
pub(crate) use reader::percentile;
pub use writer::SqliteStore;

use super::StoreError;

/// How long a connection waits for another's lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Holds the database for one daemon: an exclusive `flock` on `<database>.lock`, kept for as
/// long as the writer runs. SQLite would let two daemons write the same file, and the second
/// would take the first one's runs for abandoned.
#[derive(Debug)]
struct WriterLock(#[allow(dead_code, reason = "held, not read: dropping it unlocks")] Flock<File>);

fn lock_database(path: &Path) -> Result<WriterLock, StoreError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let open_error = |e: std::io::Error| StoreError::Open {
        path: path.to_owned(),
        cause: rusqlite::Error::InvalidPath(lock_path.clone()),
        hint: if e.kind() == std::io::ErrorKind::PermissionDenied {
            "; pacerd may not create files in its directory"
        } else {
            "; check `database` in [daemon]"
        },
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(open_error)?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(file, _)| {
        let holder = std::io::read_to_string(&file)
            .ok()
            .map(|pid| pid.trim().to_owned())
            .filter(|pid| !pid.is_empty())
            .map_or_else(String::new, |pid| format!(", pid {pid}"));
        StoreError::Locked {
            path: path.to_owned(),
            holder,
        }
    })?;
    lock.set_len(0).map_err(open_error)?;
    write!(lock, "{}", std::process::id()).map_err(open_error)?;
    Ok(WriterLock(lock))
}

/// Opens (creating if needed) the database for writing and brings its schema up to date.
fn open_for_writing(path: &Path) -> Result<(Connection, WriterLock), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            cause: rusqlite::Error::InvalidPath(parent.to_owned()),
            hint: if e.kind() == std::io::ErrorKind::PermissionDenied {
                "; pacerd may not create its directory: create it or fix `database` in [daemon]"
            } else {
                "; check `database` in [daemon]"
            },
        })?;
    }
    let open_error = |cause| StoreError::Open {
        path: path.to_owned(),
        cause,
        hint: "; check that the directory exists and pacerd may write to it",
    };
    let lock = lock_database(path)?;
    let mut conn = Connection::open(path).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // WAL lets the CLI read while the daemon writes; NORMAL keeps every commit across a daemon
    // crash (only a power cut can lose the last ones) at a fraction of FULL's fsyncs.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_error)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_error)?;
    schema::migrations()
        .to_latest(&mut conn)
        .map_err(|cause| StoreError::Migrate {
            path: path.to_owned(),
            cause,
        })?;
    Ok((conn, lock))
}

/// Opens the database read-only, for the CLI.
///
/// A read-only reader of a WAL database needs the `-shm` file, which SQLite removes when the
/// last writer closes cleanly. Then the database is fully checkpointed, so reading it as
/// `immutable` sees every run and needs no write access at all.
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Missing(path.to_owned()));
        }
        // Not "no history": the history is there, but not for this user.
        Err(cause) => {
            let hint = if cause.kind() == std::io::ErrorKind::PermissionDenied {
                "; be root or in pacerd's group (`pacer` for the packaged service)"
            } else {
                "; check `database` in [daemon]"
            };
            return Err(StoreError::Unreadable {
                path: path.to_owned(),
                cause,
                hint,
            });
        }
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let first = Connection::open_with_flags(path, flags).and_then(|conn| {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        Ok(conn)
    });
    match first {
        Ok(conn) => Ok(conn),
        Err(_) if !wal_in_use(path) => {
            let uri = format!(
                "file:{}?immutable=1",
                percent_encode_path(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
            );
            Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(|cause| {
                StoreError::Open {
                    path: path.to_owned(),
                    cause,
                    hint: "; check that you may read it (pacer history needs read access)",
                }
            })
        }
        Err(cause) => Err(StoreError::Open {
            path: path.to_owned(),
            cause,
            hint: "; reading a database that pacerd has open needs read access to it and to its \
                   -wal and -shm files (be root or in pacerd's group)",
        }),
    }
}

/// Whether a writer may still hold changes in the write-ahead log.
fn wal_in_use(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).is_ok_and(|m| m.len() > 0)
}

/// A path as a SQLite URI path: `?`, `#`, `%` and every non-ASCII byte percent-encoded.
fn percent_encode_path(path: &Path) -> String {
    let mut out = String::new();
    for &byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b'?' | b'#' | b'%') || byte == b' ' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
