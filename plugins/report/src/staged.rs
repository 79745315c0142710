//! The output file, written under a temporary name beside its final one and renamed into place
//! once complete, so that readers see the previous report or the new one, never half of one.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use pacer_plugin_api::{Error, ResultExt};

/// A report being written; dropped without [`Staged::commit`], its temporary file is removed.
#[derive(Debug)]
pub struct Staged {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl Staged {
    /// Creates `.NAME.tmp-<pid>` beside `target`, and `target`'s directory if it is missing
    /// (so that an output such as `reports/%Y/%m/runs.csv` works from the first run of a
    /// month).
    pub fn create(target: &Path) -> Result<Self, Error> {
        let dir = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
        let mut name = OsString::from(".");
        name.push(target.file_name().unwrap_or(target.as_os_str()));
        name.push(format!(".tmp-{}", std::process::id()));
        let temp = dir.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("cannot write in the output directory {}", dir.display()))?;
        Ok(Self {
            file,
            temp,
            target: target.to_owned(),
            dir,
            committed: false,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Flushes the file to disk, renames it into place (replacing an older report) and flushes
    /// the directory, so that the report survives a crash right after the run. Returns its size.
    pub fn commit(mut self) -> Result<u64, Error> {
        self.file
            .sync_all()
            .with_context(|| format!("cannot flush {} to disk", self.temp.display()))?;
        let size = self.file.metadata().map_or(0, |meta| meta.len());
        fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| {
                format!("cannot flush the directory {} to disk", self.dir.display())
            })?;
        Ok(size)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the run is failing already, with the error that matters.
            let _ = fs::remove_file(&self.temp);
        }
    }
}
