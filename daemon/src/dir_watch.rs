//! Watches directories for finished changes to their entries: a file written and closed,
//! created, renamed in or out, removed, or given a new mode.
//!
//! Directories are watched, never single files: an editor or `install` replaces a file by
//! renaming another over it, and a watch on the old file would die with it. Opens, reads and
//! writes still in progress are left out of the kernel's mask, not filtered here: the history
//! database often lives beside the config and commits many times a second, and every run
//! opens its plugin library, so counting those would wake the daemon for nothing on every run.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The events that mean an entry has changed, and those that mean the directory itself went.
const MASK: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// Decides whether a change matters: the watched directory, and the entry's name (`None` when
/// the directory itself was removed or moved).
pub type Relevance = dyn Fn(&Path, Option<&OsStr>) -> bool + Send + Sync;

/// A set of watched directories; each batch of relevant changes sends `()` on a channel.
/// Dropping it stops the watch.
pub struct DirWatch {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    /// What the directories are, for warnings ("plugin directory").
    what: &'static str,
}

struct Shared {
    inotify: AsyncFd<InotifyFd>,
    dirs: Mutex<HashMap<WatchDescriptor, PathBuf>>,
}

/// `AsyncFd` needs `AsRawFd`, which nix's `Inotify` leaves to `AsFd`.
struct InotifyFd(Inotify);

impl AsFd for InotifyFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch")
            .field("what", &self.what)
            .field("dirs", &self.watched())
            .finish_non_exhaustive()
    }
}

impl DirWatch {
    /// Watches nothing yet; must be called within the daemon's runtime, which reads the
    /// events. `relevant` picks the changes that send `()` on `changes`.
    pub fn new(
        what: &'static str,
        relevant: Box<Relevance>,
        changes: mpsc::UnboundedSender<()>,
    ) -> io::Result<DirWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let inotify = crate::sys::register_readable(InotifyFd(inotify))?;
        let shared = Arc::new(Shared {
            inotify,
            dirs: Mutex::default(),
        });
        let reader = tokio::spawn(read_changes(Arc::clone(&shared), relevant, changes));
        Ok(DirWatch {
            shared,
            reader,
            what,
        })
    }

    /// Watches exactly `dirs`: those that exist and are not watched yet are added (a directory
    /// created later is picked up at the next call), those no longer listed are dropped.
    pub fn watch(&self, dirs: &[PathBuf]) {
        let mut watched = self.shared.dirs();
        let inotify = &self.shared.inotify.get_ref().0;
        watched.retain(|wd, dir| {
            let keep = dirs.contains(dir);
            if !keep {
                // The kernel may have dropped it already (the directory was removed).
                let _ = inotify.rm_watch(*wd);
            }
            keep
        });
        for dir in dirs {
            if watched.values().any(|known| known == dir) || !dir.is_dir() {
                continue;
            }
            match inotify.add_watch(dir.as_path(), MASK) {
                Ok(wd) => {
                    watched.insert(wd, dir.clone());
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    "cannot watch the {}; changes there need a reload: {e}",
                    self.what
                ),
            }
        }
    }

    /// The directories watched now.
    pub fn watched(&self) -> Vec<PathBuf> {
        self.shared.dirs().values().cloned().collect()
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Shared {
    fn dirs(&self) -> std::sync::MutexGuard<'_, HashMap<WatchDescriptor, PathBuf>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.dirs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn read_changes(
    shared: Arc<Shared>,
    relevant: Box<Relevance>,
    changes: mpsc::UnboundedSender<()>,
) {
    loop {
        let Ok(mut ready) = shared.inotify.readable().await else {
            return;
        };
        let events = match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from))
        {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::warn!("stopped watching for changes: {e}");
                return;
            }
            Err(_would_block) => continue,
        };
        let mut changed = false;
        {
            let mut dirs = shared.dirs();
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost; assume the worst.
                    changed = true;
                    continue;
                }
                let Some(dir) = dirs.get(&event.wd) else {
                    continue;
                };
                changed |= relevant(dir, event.name.as_deref());
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory is gone; a later `watch` adds it again if it comes back.
                    dirs.remove(&event.wd);
                }
            }
        }
        if changed && changes.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::time::{Duration, Instant};

    use super::*;

    /// A watch whose filter records every entry name it is shown, in order.
    fn recording() -> (
        DirWatch,
        Arc<Mutex<Vec<OsString>>>,
        mpsc::UnboundedReceiver<()>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let (tx, changes) = mpsc::unbounded_channel();
        let relevant = move |_: &Path, name: Option<&OsStr>| {
            record
                .lock()
                .unwrap()
                .push(name.unwrap_or(OsStr::new("<dir>")).to_owned());
            true
        };
        let watch = DirWatch::new("test directory", Box::new(relevant), tx).unwrap();
        (watch, seen, changes)
    }

    /// Waits until the filter has seen `name`; returns the distinct names seen so far, in order.
    async fn seen_until(seen: &Mutex<Vec<OsString>>, name: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut names: Vec<String> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            if names.iter().any(|n| n == name) {
                names.dedup();
                return names;
            }
            assert!(Instant::now() < deadline, "never saw {name}; saw {names:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn finished_changes_count_and_reads_or_writes_in_progress_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (watch, seen, mut changes) = recording();
        watch.watch(&[dir.path().to_owned()]);
        assert_eq!(watch.watched(), [dir.path().to_owned()]);

        let db = dir.path().join("history.db");
        std::fs::write(&db, b"x").unwrap();
        // Kept open and written to, as SQLite does with its database; then only read, as a
        // worker reads its plugin. Events are delivered in order, so once the marker is seen
        // anything these caused would have been seen before it.
        let mut open = std::fs::OpenOptions::new().append(true).open(&db).unwrap();
        for _ in 0..100 {
            io::Write::write_all(&mut open, b"more").unwrap();
        }
        std::fs::read(&db).unwrap();
        std::fs::write(dir.path().join("marker"), b"x").unwrap();
        assert_eq!(seen_until(&seen, "marker").await, ["history.db", "marker"]);
        assert!(changes.recv().await.is_some());

        // Editors save by renaming a new file over the old one.
        std::fs::write(dir.path().join(".pacer.toml.swp"), b"new").unwrap();
        std::fs::rename(
            dir.path().join(".pacer.toml.swp"),
            dir.path().join("pacer.toml"),
        )
        .unwrap();
        assert_eq!(
            seen_until(&seen, "pacer.toml").await,
            ["history.db", "marker", ".pacer.toml.swp", "pacer.toml"]
        );
        drop(open);
    }

    #[tokio::test]
    async fn a_removed_directory_is_watched_again_once_it_is_back() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("plugins");
        std::fs::create_dir(&dir).unwrap();
        let (watch, seen, _changes) = recording();
        watch.watch(std::slice::from_ref(&dir));
        std::fs::remove_dir(&dir).unwrap();
        seen_until(&seen, "<dir>").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !watch.watched().is_empty() {
            assert!(Instant::now() < deadline, "the dead watch was not dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        std::fs::create_dir(&dir).unwrap();
        watch.watch(std::slice::from_ref(&dir));
        std::fs::write(dir.join("libnew.so"), b"x").unwrap();
        seen_until(&seen, "libnew.so").await;

        // Once unlisted, the directory is no longer watched: the next event seen is from a
        // directory still listed.
        let other = parent.path().join("other");
        std::fs::create_dir(&other).unwrap();
        watch.watch(std::slice::from_ref(&other));
        assert_eq!(watch.watched(), std::slice::from_ref(&other));
        std::fs::write(dir.join("libold.so"), b"x").unwrap();
        std::fs::write(other.join("libmarker.so"), b"x").unwrap();
        let names = seen_until(&seen, "libmarker.so").await;
        assert!(!names.iter().any(|n| n == "libold.so"), "{names:?}");
    }
}
