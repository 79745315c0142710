//! Watches the plugin directories (directories, never single files: an editor or `install`
//! replaces a file by renaming another over it, and a watch on the old file would die with it).
//! Events only say "something changed"; the engine waits for a quiet moment and rescans.

use std::collections::HashSet;
use std::path::PathBuf;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A live watch on the plugin directories.
#[derive(Debug)]
pub struct PluginWatcher {
    watcher: Option<RecommendedWatcher>,
    watched: HashSet<PathBuf>,
}

impl PluginWatcher {
    /// Starts watching; each change in a watched directory sends `()` on `changes`.
    pub fn new(changes: mpsc::UnboundedSender<()>) -> PluginWatcher {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Workers opening a library to load it must not count as a change.
            if event.is_ok_and(|event| !matches!(event.kind, notify::EventKind::Access(_))) {
                let _ = changes.send(());
            }
        })
        .map_err(|e| tracing::warn!("cannot watch plugin directories, changes need a reload: {e}"))
        .ok();
        PluginWatcher {
            watcher,
            watched: HashSet::new(),
        }
    }

    /// Watches every directory of `dirs` that exists and is not watched yet, and stops watching
    /// those no longer listed. A directory created later is picked up at the next call (each
    /// rescan and reload makes one).
    pub fn watch(&mut self, dirs: &[PathBuf]) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: HashSet<PathBuf> = dirs.iter().cloned().collect();
        for gone in self
            .watched
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            let _ = watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for dir in dirs {
            if self.watched.contains(dir) || !dir.is_dir() {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot watch plugin directory: {e}");
                }
            }
        }
    }
}
