//! Walks the directory and applies the action to each old file, without following symlinks.
//!
//! Every lookup is relative to an open directory (`openat`, `fstatat`, `unlinkat` with
//! `O_NOFOLLOW`), never a path walked again from the top: a directory that is swapped for a
//! symlink while the run goes on cannot lead it outside `path`.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use pacer_plugin_api::{Cancelled, Context, Error};

use crate::gzip;
use crate::params::{Action, Job};

/// What one run did, for its summary line.
#[derive(Debug, Default)]
pub struct Tally {
    /// Files deleted or gzipped (or that would be, in a dry run).
    pub files: u64,
    /// Their sizes before.
    pub bytes: u64,
    /// The sizes of the `.gz` files written.
    pub compressed: u64,
    /// Files and directories that could not be handled; each was logged.
    pub errors: u64,
}

/// Cleans `job.dir`; per-file errors are counted in the tally, and only a missing `path` or
/// cancellation end the run early.
pub fn sweep(ctx: &Context, job: &Job) -> Result<Tally, Error> {
    let root = open(
        &job.dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| root_error(&job.dir, errno))?;
    let older_than = SignedDuration::try_from(job.older_than).unwrap_or(SignedDuration::MAX);
    let mut sweep = Sweep {
        ctx,
        job,
        cutoff: Timestamp::now()
            .checked_sub(older_than)
            .unwrap_or(Timestamp::MIN),
        zone: TimeZone::system(),
        tally: Tally::default(),
    };
    // Directories still to visit: the open parent and the name in it. Keeping the parent
    // rather than the directory itself holds one descriptor per level of depth, however wide.
    let mut pending: Vec<(Rc<OwnedFd>, OsString, PathBuf)> = Vec::new();
    sweep.directory(&Rc::new(root), &job.dir, &mut pending)?;
    while let Some((parent, name, shown)) = pending.pop() {
        sweep.check_cancelled()?;
        match openat(
            &*parent,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => sweep.directory(&Rc::new(dir), &shown, &mut pending)?,
            // Removed since it was listed: nothing left to clean there.
            Err(Errno::ENOENT) => {}
            // Replaced by a symlink since it was listed (O_NOFOLLOW refuses those).
            Err(Errno::ELOOP | Errno::ENOTDIR) => skip_symlink(&shown),
            Err(errno) => sweep.failed(&format!("cannot open {}", shown.display()), errno),
        }
    }
    Ok(sweep.tally)
}

fn root_error(dir: &Path, errno: Errno) -> Error {
    match errno {
        Errno::ENOENT => Error::msg(format_args!(
            "`path` {} does not exist (a relative path is taken from the directory of the \
             job's config file)",
            dir.display()
        )),
        Errno::ENOTDIR => Error::msg(format_args!("`path` {} is not a directory", dir.display())),
        other => Error::msg(format_args!(
            "cannot open `path` {}: {}",
            dir.display(),
            std::io::Error::from(other)
        )),
    }
}

fn skip_symlink(shown: &Path) {
    tracing::debug!("skipped {}: a symlink is never followed", shown.display());
}

struct Sweep<'a> {
    ctx: &'a Context,
    job: &'a Job,
    /// Files modified before this instant are old enough.
    cutoff: Timestamp,
    /// For the modification dates in log lines.
    zone: TimeZone,
    tally: Tally,
}

impl Sweep<'_> {
    fn check_cancelled(&self) -> Result<(), Cancelled> {
        if self.ctx.is_cancelled() {
            return Err(Cancelled);
        }
        Ok(())
    }

    fn failed(&mut self, what: &str, errno: Errno) {
        self.tally.errors += 1;
        tracing::error!("{what}: {}", std::io::Error::from(errno));
    }

    /// Handles the files of one directory, in name order, and queues its subdirectories.
    fn directory(
        &mut self,
        dir: &Rc<OwnedFd>,
        shown: &Path,
        pending: &mut Vec<(Rc<OwnedFd>, OsString, PathBuf)>,
    ) -> Result<(), Error> {
        let names = match list(dir) {
            Ok(names) => names,
            Err(errno) => {
                self.failed(&format!("cannot list {}", shown.display()), errno);
                return Ok(());
            }
        };
        let mut subdirs = Vec::new();
        for name in names {
            self.check_cancelled()?;
            let path = shown.join(&name);
            let stat = match fstatat(dir.as_ref(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::ENOENT) => continue,
                Err(errno) => {
                    self.failed(&format!("cannot examine {}", path.display()), errno);
                    continue;
                }
            };
            match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFREG => self.file(dir, &name, &stat, &path)?,
                SFlag::S_IFDIR if self.job.recursive => subdirs.push((name, path)),
                SFlag::S_IFLNK => skip_symlink(&path),
                // Subdirectories without `recursive`, and sockets, pipes and devices.
                _ => {}
            }
        }
        // Reversed so that popping visits them in name order.
        for (name, path) in subdirs.into_iter().rev() {
            pending.push((Rc::clone(dir), name, path));
        }
        Ok(())
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        stat: &FileStat,
        path: &Path,
    ) -> Result<(), Error> {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        if !self
            .job
            .pattern
            .matches_with(&name.to_string_lossy(), options)
        {
            return Ok(());
        }
        let modified = Timestamp::new(
            stat.st_mtime,
            i32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        )
        .unwrap_or(if stat.st_mtime < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
        if modified >= self.cutoff {
            return Ok(());
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let about = format!(
            "{} ({}, modified {})",
            path.display(),
            human_size(size),
            modified.to_zoned(self.zone.clone()).date()
        );
        match self.job.action {
            Action::Delete => self.delete(dir, name, &about, size),
            Action::Gzip => self.gzip(dir, name, stat, path, &about, size)?,
        }
        Ok(())
    }

    fn delete(&mut self, dir: &OwnedFd, name: &OsStr, about: &str, size: u64) {
        if self.job.dry_run {
            tracing::info!("would delete {about}");
        } else {
            // unlinkat removes the name itself: had the file become a symlink since it was
            // examined, the link would go, never its target.
            match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) => tracing::info!("deleted {about}"),
                // Someone else removed it first; it is gone either way.
                Err(Errno::ENOENT) => return,
                Err(errno) => return self.failed(&format!("cannot delete {about}"), errno),
            }
        }
        self.tally.files += 1;
        self.tally.bytes += size;
    }

    fn gzip(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        stat: &FileStat,
        path: &Path,
        about: &str,
        size: u64,
    ) -> Result<(), Error> {
        if name.as_bytes().ends_with(b".gz") {
            return Ok(());
        }
        let mut gz_name = name.to_owned();
        gz_name.push(".gz");
        let gz_path = path.with_file_name(&gz_name);
        match fstatat(dir, gz_name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {}
            Ok(_) => {
                self.tally.errors += 1;
                tracing::error!(
                    "not gzipping {about}: {} already exists and is not overwritten",
                    gz_path.display()
                );
                return Ok(());
            }
            Err(errno) => {
                self.failed(&format!("cannot examine {}", gz_path.display()), errno);
                return Ok(());
            }
        }
        if self.job.dry_run {
            tracing::info!("would gzip {about} -> {}", gz_path.display());
            self.tally.files += 1;
            self.tally.bytes += size;
            return Ok(());
        }
        match gzip::compress(self.ctx, dir, name, &gz_name, stat) {
            Ok(compressed) => {
                tracing::info!(
                    "gzipped {about} -> {} ({}, {})",
                    gz_path.display(),
                    human_size(compressed),
                    ratio(compressed, size)
                );
                self.tally.files += 1;
                self.tally.bytes += size;
                self.tally.compressed += compressed;
            }
            // The temporary file is gone and the original untouched; the run stops here.
            Err(_) if self.ctx.is_cancelled() => return Err(Cancelled.into()),
            Err(e) => {
                self.tally.errors += 1;
                tracing::error!("cannot gzip {about}: {e}");
            }
        }
        Ok(())
    }
}

/// The names in a directory, sorted by bytes so that runs log in a stable order.
fn list(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    // A second descriptor for the listing, because `Dir` takes ownership of the one it reads;
    // the lookups go on using `dir`.
    let mut listing = Dir::from_fd(
        dir.try_clone()
            .map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?,
    )?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `12 KiB`, `3.4 MiB`: one decimal below 10 of a unit, none above.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// The compressed size as a share of the original: `9%`.
fn ratio(compressed: u64, original: u64) -> String {
    if original == 0 {
        return "empty".to_owned();
    }
    let percent = u128::from(compressed) * 100 / u128::from(original);
    format!("{percent}% of the original")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(12 * 1024 + 100), "12 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(human_size(50 << 30), "50 GiB");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(9, 100), "9% of the original");
        assert_eq!(ratio(20, 0), "empty");
    }
}
