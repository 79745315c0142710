//! Compresses one file into `NAME.gz` so that no crash, cancellation or race loses data.
//!
//! The order of steps is the guarantee: stream into a temporary file in the same directory,
//! fsync it, give it its final name only if that name is still free, fsync the directory, and
//! only then remove the original, and only if it is still the file that was compressed.

use std::ffi::{OsStr, OsString};
use std::fs::{File, FileTimes, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use flate2::{Compression, GzBuilder};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, fstatat};
use nix::unistd::{UnlinkatFlags, fsync, linkat, unlinkat};
use pacer_plugin_api::{Context, Error, ResultExt, bail};

/// Read and compress in pieces of this size: memory stays constant whatever the file's size,
/// and cancellation is noticed after at most one piece.
const CHUNK: usize = 256 * 1024;

/// Compresses `name` (whose `fstatat` is `seen`) in `dir` into `gz_name` and removes it.
/// Returns the compressed size. On any error, or when the run is cancelled, the temporary
/// file is removed and the original is left as it was.
pub fn compress(
    ctx: &Context,
    dir: &OwnedFd,
    name: &OsStr,
    gz_name: &OsStr,
    seen: &FileStat,
) -> Result<u64, Error> {
    // O_NONBLOCK: should a pipe have replaced the file since it was examined, the open must
    // not wait for a writer; the type check below then refuses it.
    let source = File::from(
        openat(
            dir,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .context("cannot open it")?,
    );
    let before = source.metadata().context("cannot examine it")?;
    if !before.is_file() || before.dev() != seen.st_dev || before.ino() != seen.st_ino {
        bail!("it was replaced while being examined; left as it is");
    }

    let mut temp_name = OsString::from(".");
    temp_name.push(gz_name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = Temp::create(dir, temp_name)?;

    let mut encoder = GzBuilder::new()
        .filename(name.as_bytes())
        .mtime(u32::try_from(before.mtime()).unwrap_or(0))
        .write(&temp.file, Compression::default());
    let mut buffer = vec![0; CHUNK];
    let mut read: u64 = 0;
    let mut reader = &source;
    loop {
        if ctx.is_cancelled() {
            bail!("cancelled");
        }
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot read it"),
        };
        encoder
            .write_all(&buffer[..n])
            .context("cannot write the compressed file")?;
        read += n as u64;
    }
    encoder
        .try_finish()
        .context("cannot write the compressed file")?;
    drop(encoder);

    // A file still being written would lose whatever came after the part compressed.
    let after = source.metadata().context("cannot examine it")?;
    if after.len() != read || after.modified().ok() != before.modified().ok() {
        bail!("it changed while being compressed; left as it is");
    }

    // The owner can only be kept by root; for anyone else the `.gz` is theirs, which is what
    // `gzip` does too.
    let _ = std::os::unix::fs::fchown(&temp.file, Some(before.uid()), Some(before.gid()));
    temp.file
        .set_permissions(Permissions::from_mode(before.mode() & 0o777))
        .context("cannot set the compressed file's permissions")?;
    let mut times = FileTimes::new();
    if let Ok(accessed) = before.accessed() {
        times = times.set_accessed(accessed);
    }
    if let Ok(modified) = before.modified() {
        times = times.set_modified(modified);
    }
    temp.file
        .set_times(times)
        .context("cannot set the compressed file's times")?;
    temp.file
        .sync_all()
        .context("cannot flush the compressed file to disk")?;
    let compressed = temp.file.metadata().map_or(0, |m| m.len());

    temp.persist(gz_name)?;
    fsync(dir)
        .map_err(std::io::Error::from)
        .context("cannot flush the directory to disk")?;

    // Only the file that was compressed goes: not one that took its name meanwhile.
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(now) if now.st_dev == seen.st_dev && now.st_ino == seen.st_ino => {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
                .map_err(std::io::Error::from)
                .context("compressed, but cannot remove the original")?;
            fsync(dir)
                .map_err(std::io::Error::from)
                .context("cannot flush the directory to disk")?;
        }
        Ok(_) => bail!("compressed, but the original was replaced meanwhile and is kept"),
        Err(Errno::ENOENT) => {}
        Err(errno) => {
            return Err(std::io::Error::from(errno))
                .context("compressed, but cannot examine the original");
        }
    }
    Ok(compressed)
}

/// The temporary file, removed when dropped: after [`Temp::persist`] gave it its final name as
/// a second link, and on every early return before.
struct Temp<'a> {
    dir: &'a OwnedFd,
    name: OsString,
    file: File,
}

impl<'a> Temp<'a> {
    fn create(dir: &'a OwnedFd, name: OsString) -> Result<Self, Error> {
        let fd = openat(
            dir,
            name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot create {}", name.to_string_lossy()))?;
        Ok(Self {
            dir,
            name,
            file: File::from(fd),
        })
    }

    /// Links the file under `final_name`, which fails rather than replace an existing file.
    fn persist(&self, final_name: &OsStr) -> Result<(), Error> {
        let taken = || {
            Error::msg(format_args!(
                "{} appeared meanwhile and is not overwritten",
                final_name.to_string_lossy()
            ))
        };
        match linkat(
            self.dir,
            self.name.as_os_str(),
            self.dir,
            final_name,
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => Err(taken()),
            // A file system without hard links: check, then rename, which leaves only a
            // moment for another process to take the name.
            Err(Errno::EPERM | Errno::EOPNOTSUPP | Errno::EMLINK) => {
                match fstatat(self.dir, final_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Err(Errno::ENOENT) => {}
                    _ => return Err(taken()),
                }
                renameat(self.dir, self.name.as_os_str(), self.dir, final_name)
                    .map_err(std::io::Error::from)
                    .with_context(|| {
                        format!("cannot rename it to {}", final_name.to_string_lossy())
                    })
            }
            Err(errno) => Err(std::io::Error::from(errno))
                .with_context(|| format!("cannot name it {}", final_name.to_string_lossy())),
        }
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        // Already gone after a rename; any other failure leaves a dot-file that names this
        // process, which is all that can be done here.
        let _ = unlinkat(self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
}
