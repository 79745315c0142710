//! The files of a history on disk: the writer's lock, how a new database comes to exist, its
//! mode, and whether pacerd may write what SQLite will write.
//!
//! A new install is recognized by the database file being absent. pacerd then builds the
//! database under `<database>.new` and renames it into place once its schema is committed, so
//! the database path never holds a half-made file of pacerd's: an empty file there was
//! truncated or put there by someone else, and holds no history to start over from.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::AccessFlags;
use rusqlite::Connection;

use super::super::StoreError;
use super::schema;

/// The mode of every file of the history: the daemon's user writes, its group (the control
/// socket's, which `pacer` users join) reads, others nothing. Applied whatever the umask.
pub(super) const MODE: u32 = 0o640;

/// `<database><suffix>`: SQLite's `-wal` and `-shm`, our `.lock` and `.new`.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Holds the database for one daemon: an exclusive `flock` on `<database>.lock`, kept for as
/// long as the writer runs. SQLite would let two daemons write the same file, and the second
/// would take the first one's runs for abandoned.
///
/// The lock file's modification time is the daemon's last sign of life: a daemon touches it
/// while it runs, so the next one can tell when its predecessor was last seen (a run it left
/// `running` ends there, not at the next start).
#[derive(Debug)]
pub(super) struct WriterLock {
    #[allow(dead_code, reason = "held, not read: dropping it unlocks")]
    lock: Flock<File>,
    /// When the previous holder was last seen alive, Unix ms.
    pub(super) previous_alive: Option<i64>,
    /// Another handle on the lock file, to touch it.
    pub(super) alive: File,
}

pub(super) fn lock_database(path: &Path) -> Result<WriterLock, StoreError> {
    let lock_path = sibling(path, ".lock");
    let failed = |action, cause| StoreError::File {
        path: lock_path.clone(),
        action,
        cause,
    };
    let file = match create_restricted(&lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|cause| failed("open the lock file", cause))?,
        Err(cause) => return Err(failed("create the lock file", cause)),
    };
    let previous_alive = file
        .metadata()
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|at| jiff::Timestamp::try_from(at).ok())
        .map(crate::time::to_ms);
    let alive = file
        .try_clone()
        .map_err(|cause| failed("open the lock file", cause))?;
    let mut lock = take_lock(file).map_err(|file| {
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
    lock.set_len(0)
        .and_then(|()| write!(lock, "{}", std::process::id()))
        .map_err(|cause| failed("write the lock file", cause))?;
    Ok(WriterLock {
        lock,
        previous_alive,
        alive,
    })
}

/// How long a start waits for the lock. A daemon that has just died can leave it held for a
/// moment longer: a process it was spawning holds a copy of its descriptors until that
/// process's `exec`, and a restart (by systemd, or by hand) may come sooner.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Takes the exclusive lock on `file`, trying for [`LOCK_PATIENCE`]; gives the file back if
/// another process still holds it then.
fn take_lock(mut file: File) -> Result<Flock<File>, File> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, _)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((back, _)) => return Err(back),
        }
    }
}

/// Creates `path` with [`MODE`], failing if it exists. The mode is set again after creation
/// because the umask may have taken bits from it.
fn create_restricted(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(MODE))?;
    Ok(file)
}

/// What was found at the database's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Nothing: a new install.
    Nothing,
    /// A database file with content.
    Database,
}

/// Looks at the database's path before SQLite opens it (SQLite would take an empty file for a
/// new, empty database).
pub(super) fn inspect(path: &Path) -> Result<Found, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(StoreError::File {
            path: path.to_owned(),
            action: "open the run history",
            cause: std::io::Error::from(std::io::ErrorKind::IsADirectory),
        }),
        Ok(meta) if meta.len() == 0 => Err(StoreError::Empty(path.to_owned())),
        Ok(meta) => {
            if meta.mode() & 0o007 != 0 {
                tracing::warn!(
                    "the run history {} is readable by every local user (mode {:04o}): its runs \
                     hold job params and output; `chmod 0640` it and its -wal and -shm files",
                    path.display(),
                    meta.mode() & 0o7777
                );
            }
            Ok(Found::Database)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(cause) => Err(StoreError::File {
            path: path.to_owned(),
            action: "look at the run history",
            cause,
        }),
    }
}

/// Makes a new database at `path`: built and migrated under `<database>.new` with [`MODE`],
/// made durable, then renamed into place. The caller holds the writer lock.
pub(super) fn create_database(path: &Path) -> Result<(), StoreError> {
    let building = sibling(path, ".new");
    for leftover in ["", "-wal", "-shm", "-journal"] {
        // A previous start that died while building left these; nothing else uses them.
        let _ = std::fs::remove_file(sibling(&building, leftover));
    }
    let file_error = |path: &Path, action, cause| StoreError::File {
        path: path.to_owned(),
        action,
        cause,
    };
    create_restricted(&building).map_err(|e| file_error(&building, "create", e))?;
    let mut conn = Connection::open(&building).map_err(|cause| StoreError::Open {
        path: building.clone(),
        cause,
        hint: "",
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|cause| StoreError::Open {
            path: building.clone(),
            cause,
            hint: "",
        })?;
    schema::migrations()
        .to_latest(&mut conn)
        .map_err(|cause| StoreError::Migrate {
            path: building.clone(),
            cause,
        })?;
    // Closing the only connection checkpoints the log into the file and removes it.
    conn.close().map_err(|(_, cause)| StoreError::Open {
        path: building.clone(),
        cause,
        hint: "",
    })?;
    File::open(&building)
        .and_then(|file| file.sync_all())
        .map_err(|e| file_error(&building, "write", e))?;
    std::fs::rename(&building, path).map_err(|e| file_error(path, "create", e))?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| file_error(dir, "write the directory", e))?;
    }
    Ok(())
}

/// Fails, naming the file, when pacerd could not write the database, its write-ahead log, its
/// shared-memory file or their directory. SQLite would open an immutable `-shm` read-only
/// without a word, and fail every later write with "attempt to write a readonly database".
pub(super) fn check_writable(path: &Path) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let files = [
        path.to_owned(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ];
    for file in std::iter::once(dir).chain(files.iter().map(PathBuf::as_path)) {
        match nix::unistd::faccessat(
            nix::fcntl::AT_FDCWD,
            file,
            AccessFlags::W_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(errno) => {
                return Err(StoreError::File {
                    path: file.to_owned(),
                    action: "write",
                    cause: errno.into(),
                });
            }
        }
    }
    Ok(())
}
