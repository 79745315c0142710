//! Watches the plugin directories. Changes only say "something changed"; the engine waits for a
//! quiet moment and rescans.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::dir_watch::DirWatch;

/// A live watch on the plugin directories.
#[derive(Debug)]
pub struct PluginWatcher {
    watch: Option<DirWatch>,
}

impl PluginWatcher {
    /// Starts watching; each change in a watched directory sends `()` on `changes`.
    pub fn new(changes: mpsc::UnboundedSender<()>) -> PluginWatcher {
        let every_change = |_: &Path, _: Option<&OsStr>| true;
        let watch = DirWatch::new("plugin directory", Box::new(every_change), changes)
            .map_err(|e| {
                tracing::warn!("cannot watch plugin directories, changes need a reload: {e}");
            })
            .ok();
        PluginWatcher { watch }
    }

    /// Watches every directory of `dirs` that exists, and stops watching those no longer
    /// listed. A directory created (or re-created) later is picked up at the next call (each
    /// rescan and reload makes one).
    pub fn watch(&mut self, dirs: &[PathBuf]) {
        if let Some(watch) = &self.watch {
            watch.watch(dirs);
        }
    }
}
