//! Reload when the config file or a drop-in changes. The directories are watched, not the files
//! (editors save by renaming a new file over the old one), and only events naming the config
//! file or `jobs.d/*.toml` count, so a database in the same directory does not trigger reloads.

use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::defaults::DROP_IN_DIR;

/// A live watch on the config file's directory and its `jobs.d`.
#[derive(Debug)]
pub struct ConfigWatcher {
    _watcher: Option<RecommendedWatcher>,
}

impl ConfigWatcher {
    /// Watches `config` and its drop-ins; each relevant change sends `()` on `changes`.
    pub fn new(config: &Path, changes: mpsc::UnboundedSender<()>) -> ConfigWatcher {
        let Ok(config) = std::path::absolute(config) else {
            return ConfigWatcher { _watcher: None };
        };
        let dir = config
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let drop_ins = dir.join(DROP_IN_DIR);
        let (file, drops) = (config.clone(), drop_ins.clone());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reading the file (as a reload does) must not count as a change.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let relevant = event.paths.iter().any(|path| {
                path == &file
                    || path.parent() == Some(drops.as_path())
                        && path.extension().is_some_and(|ext| ext == "toml")
                    || path == &drops
            });
            if relevant {
                let _ = changes.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(
                    "cannot watch the config file; reload with SIGHUP or pacer reload: {e}"
                );
                return ConfigWatcher { _watcher: None };
            }
        };
        for path in [&dir, &drop_ins] {
            if path.is_dir()
                && let Err(e) = watcher.watch(path, RecursiveMode::NonRecursive)
            {
                tracing::warn!(dir = %path.display(), "cannot watch for config changes: {e}");
            }
        }
        ConfigWatcher {
            _watcher: Some(watcher),
        }
    }
}
