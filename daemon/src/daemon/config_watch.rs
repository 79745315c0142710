//! Reload when the config file or a drop-in changes. Only changes naming the config file,
//! `jobs.d` or `jobs.d/*.toml` count, so a database in the same directory does not trigger
//! reloads.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::config::defaults::DROP_IN_DIR;
use crate::dir_watch::DirWatch;

/// A live watch on the config file's directory and its `jobs.d`.
#[derive(Debug)]
pub struct ConfigWatcher {
    watch: Option<DirWatch>,
    dirs: [PathBuf; 2],
}

impl ConfigWatcher {
    /// Watches `config` and its drop-ins; each relevant change sends `()` on `changes`.
    pub fn new(config: &Path, changes: mpsc::UnboundedSender<()>) -> ConfigWatcher {
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
        let dir = config
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let drop_ins = dir.join(DROP_IN_DIR);
        let file_name = config.file_name().map(OsStr::to_owned);
        let (main_dir, drop_in_dir) = (dir.clone(), drop_ins.clone());
        let relevant = move |watched: &Path, name: Option<&OsStr>| {
            if watched == main_dir {
                name.is_some()
                    && (name == file_name.as_deref() || name == Some(DROP_IN_DIR.as_ref()))
            } else {
                watched == drop_in_dir
                    && name.is_none_or(|name| Path::new(name).extension() == Some("toml".as_ref()))
            }
        };
        let watch = DirWatch::new("config directory", Box::new(relevant), changes)
            .map_err(|e| {
                tracing::warn!(
                    "cannot watch the config file; reload with SIGHUP or pacer reload: {e}"
                );
            })
            .ok();
        let watcher = ConfigWatcher {
            watch,
            dirs: [dir, drop_ins],
        };
        watcher.rewatch();
        watcher
    }

    /// Watches `jobs.d` too if it was created since (its creation is itself a change).
    pub fn rewatch(&self) {
        if let Some(watch) = &self.watch {
            watch.watch(&self.dirs);
        }
    }
}
