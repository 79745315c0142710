//! Watches the plugin directories. Changes only say "something changed"; the engine waits for a
//! quiet moment and rescans.
//!
//! A plugin directory that does not exist yet (`/usr/local/lib/pacer/plugins` often does not)
//! is watched through its nearest existing ancestor, for the entry on the way to it: once it is
//! created, the rescan that follows watches it directly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::dir_watch::DirWatch;

/// A live watch on the plugin directories.
#[derive(Debug)]
pub struct PluginWatcher {
    watch: Option<DirWatch>,
    /// The plugin directories, shared with the filter that decides which changes count.
    wanted: Arc<Mutex<Vec<PathBuf>>>,
    changes: mpsc::UnboundedSender<()>,
    /// Whether a first set of directories was watched (directories found later may already
    /// hold libraries, so finding one asks for a rescan).
    started: bool,
}

impl PluginWatcher {
    /// Starts watching; each change in a watched directory sends `()` on `changes`.
    pub fn new(changes: mpsc::UnboundedSender<()>) -> PluginWatcher {
        let wanted: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let filter = Arc::clone(&wanted);
        let relevant = move |dir: &Path, name: Option<&OsStr>| {
            let wanted = filter.lock().unwrap_or_else(PoisonError::into_inner);
            match name {
                // The watched directory itself went: a plugin directory, or the ancestor that
                // stands in for a missing one.
                None => wanted.iter().any(|plugins| plugins.starts_with(dir)),
                Some(name) => {
                    let entry = dir.join(name);
                    wanted
                        .iter()
                        .any(|plugins| plugins == dir || plugins.starts_with(&entry))
                }
            }
        };
        let watch = DirWatch::new("plugin directory", Box::new(relevant), changes.clone())
            .map_err(|e| {
                tracing::warn!("cannot watch plugin directories, changes need a reload: {e}");
            })
            .ok();
        PluginWatcher {
            watch,
            wanted,
            changes,
            started: false,
        }
    }

    /// Watches every directory of `dirs`, or the nearest existing ancestor of one that does not
    /// exist, and stops watching those no longer needed. Each rescan and reload makes this call.
    pub fn watch(&mut self, dirs: &[PathBuf]) {
        let Some(watch) = &self.watch else {
            return;
        };
        *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = dirs.to_vec();
        let mut targets: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if let Some(existing) = dir.ancestors().find(|a| a.is_dir())
                && !targets.iter().any(|t| t == existing)
            {
                targets.push(existing.to_path_buf());
            }
        }
        let before = watch.watched();
        watch.watch(&targets);
        let appeared = dirs
            .iter()
            .any(|dir| targets.contains(dir) && !before.contains(dir));
        if self.started && appeared {
            // Libraries may have landed in it before its watch began.
            let _ = self.changes.send(());
        }
        self.started = true;
    }
}
