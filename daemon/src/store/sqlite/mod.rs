//! The SQLite backend: one writer thread that batches, and read-only connections for the CLI.

mod browse;
mod files;
mod reader;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use reader::SqliteHistory;
pub use writer::SqliteStore;

use super::StoreError;
use files::{Found, WriterLock};

/// How long a connection waits for another's lock before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes a fault on the history's shared-memory file end the daemon with a message that names
/// the file, rather than a silent SIGBUS.
///
/// In WAL mode SQLite maps `<database>-shm` into memory, and every connection of every process
/// must share that map for the CLI to read while the daemon writes; `locking_mode=EXCLUSIVE`
/// would keep it on the heap instead, but then no other process could read the history. When
/// the file can no longer be written (made immutable, its file system failing), the kernel
/// reports the next write to the map as SIGBUS, which no SQLite setting turns into an error
/// value. What can be checked before is checked at open ([`files::check_writable`]).
pub fn explain_bus_errors(path: &Path) -> std::io::Result<()> {
    let shm = files::sibling(path, "-shm");
    crate::sys::exit_on_bus_error(&format!(
        "pacerd: stopped by SIGBUS, a failed access to a memory-mapped file: most likely the run \
         history's shared-memory file {shm}, which can no longer be written (is it immutable, \
         see `lsattr {shm}`, or is its file system failing or full?). Runs in flight are \
         recorded as abandoned at the next start, which says what is wrong with the file.",
        shm = shm.display()
    ))
}

/// Opens (creating if needed) the database for writing and brings its schema up to date.
fn open_for_writing(path: &Path) -> Result<(Connection, WriterLock), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|cause| StoreError::File {
            path: parent.to_owned(),
            action: "create the directory",
            cause,
        })?;
    }
    let lock = files::lock_database(path)?;
    if files::inspect(path)? == Found::Nothing {
        files::create_database(path)?;
    }
    files::check_writable(path)?;
    let open_error = |cause| StoreError::Open {
        path: path.to_owned(),
        cause,
        hint: "",
    };
    let mut conn = Connection::open(path).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // Room for every statement the writer prepares, so the ones each run uses stay parsed.
    conn.set_prepared_statement_cache_capacity(32);
    // The database file is read and written with system calls, never through a memory map,
    // so a failing disk is an error value (SQLite's default, said here so it stays so).
    conn.pragma_update(None, "mmap_size", 0)
        .map_err(open_error)?;
    // WAL lets the CLI read while the daemon writes; NORMAL keeps every commit across a daemon
    // crash (only a power cut can lose the last ones) at a fraction of FULL's fsyncs.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_error)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error)?;
    // Off while migrating: rebuilding a table drops the old one, which with foreign keys on
    // would delete every run's output with it.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(open_error)?;
    schema::migrations()
        .to_latest(&mut conn)
        .map_err(|cause| StoreError::Migrate {
            path: path.to_owned(),
            cause,
        })?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_error)?;
    // This connection writes statuses and triggers only from their Rust enums, so the table's
    // CHECK constraints cannot fail here; SQLite would build a temporary index of each
    // `IN (...)` list for every row it inserts or whose status changes (about a twelfth of
    // the writer's time). Other connections (a `sqlite3` shell) are still held to them.
    conn.pragma_update(None, "ignore_check_constraints", "ON")
        .map_err(open_error)?;
    Ok((conn, lock))
}

/// Opens the database read-only, for the CLI.
///
/// A read-only reader of a WAL database needs the `-shm` file, which SQLite removes when the
/// last writer closes cleanly. Then the database is fully checkpointed, so reading it as
/// `immutable` sees every run and needs no write access at all.
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 && meta.is_file() => {
            return Err(StoreError::Empty(path.to_owned()));
        }
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
    let opened = match first {
        Ok(conn) => Ok(conn),
        Err(_) if !wal_in_use(path) => {
            let uri = format!(
                "file:{}?immutable=1",
                percent_encode_path(&std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
            );
            Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .and_then(|conn| {
                    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
                    Ok(conn)
                })
                .map_err(|cause| StoreError::Open {
                    path: path.to_owned(),
                    hint: access_hint(&cause, "; check that you may read it"),
                    cause,
                })
        }
        Err(cause) => Err(StoreError::Open {
            path: path.to_owned(),
            hint: access_hint(
                &cause,
                "; reading a database that pacerd has open needs read access to it and to its \
                 -wal and -shm files (be root or in pacerd's group)",
            ),
            cause,
        }),
    }?;
    // As for the writer: reads through system calls, so a truncated file is an error value.
    opened
        .pragma_update(None, "mmap_size", 0)
        .map_err(|cause| StoreError::Open {
            path: path.to_owned(),
            hint: "",
            cause,
        })?;
    Ok(opened)
}

/// `hint` when SQLite's reason is about access, else nothing (the error's own advice follows).
fn access_hint(cause: &rusqlite::Error, hint: &'static str) -> &'static str {
    use rusqlite::ErrorCode;
    match cause.sqlite_error_code() {
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => hint,
        _ => "",
    }
}

/// Whether a writer may still hold changes in the write-ahead log.
fn wal_in_use(path: &Path) -> bool {
    std::fs::metadata(files::sibling(path, "-wal")).is_ok_and(|m| m.len() > 0)
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
