//! The `files` plugin: deletes or gzips the old files in a directory, as a log cleanup does.
//!
//! # Params
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | required | the directory to clean; a relative path is taken from the directory of the job's config file |
//! | `pattern` | string | `"*"` | a glob matched against file names (not paths): `*`, `?`, `[abc]`, `[!abc]`; like the shell's, `*` and `?` do not match a leading `.` |
//! | `older_than` | string | `"7d"` | only files last modified at least this long ago: `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d`, `w`, such as `12h` or `1d12h` |
//! | `action` | string | required | `"delete"`, or `"gzip"`: compress `NAME` into `NAME.gz` and remove `NAME` |
//! | `recursive` | boolean | `false` | also clean subdirectories (directories themselves are never removed) |
//! | `dry_run` | boolean | `false` | only log what would be done |
//!
//! Any other key is an error, except `upstream`, which `pacerd` adds to chained runs.
//!
//! # What it does
//!
//! Each regular file whose name matches `pattern` and whose modification time is older than
//! `older_than` is deleted or compressed, in name order, directory by directory. Each one is
//! logged, then a summary, which is also the run's message:
//!
//! ```text
//! deleted logs/app.log.3 (12 KiB, modified 2027-01-01)
//! gzipped logs/app.log.1 (48 MiB, modified 2027-01-06) -> logs/app.log.1.gz (3.1 MiB, 6% of the original)
//! would delete logs/old.log (1.0 KiB, modified 2026-12-24)
//! deleted 2 files (13 KiB) in logs
//! ```
//!
//! With `gzip`, files already ending in `.gz` are left alone, and a file whose `NAME.gz`
//! exists is not compressed (the existing file is never overwritten): that is logged as an
//! error. A file that cannot be handled (permissions, a full disk, a conflict) is logged and
//! the run goes on with the others; the run then fails with the number of errors. A `path`
//! that is missing or not a directory fails the run before anything is touched.
//!
//! # Safety
//!
//! - Symlinks are never followed: a symlink to a file is neither deleted nor compressed, and a
//!   symlink to a directory is not entered, so nothing outside `path` is ever touched. (`path`
//!   itself may be a symlink: it is what the job names.) Every lookup is relative to a directory
//!   already open, so swapping a directory for a symlink mid-run does not lead outside either.
//! - Sockets, pipes and devices are skipped.
//! - `gzip` streams through fixed buffers (constant memory for files of any size) into
//!   `.NAME.gz.tmp-<pid>` next to the file, fsyncs it, links it as `NAME.gz` only if that name is
//!   still free, fsyncs the directory, and only then removes the original. The `.gz` keeps the
//!   original's permission bits, modification and access times, and (when run as root) its
//!   owner. A file that changed while it was compressed is kept and the `.gz` discarded.
//! - A cancelled or timed-out run stops between files, or between two pieces of a file being
//!   compressed, and leaves no temporary file behind.
//!
//! # Example
//!
//! ```toml
//! [[jobs]]
//! name = "compress-logs"
//! schedule = "15 2 * * *"
//! plugin = "files"
//! [jobs.params]
//! path = "/var/log/myapp"
//! pattern = "*.log.[0-9]*"
//! older_than = "1d"
//! action = "gzip"
//! recursive = true
//!
//! [[jobs]]
//! name = "expire-logs"
//! schedule = "45 2 * * *"
//! plugin = "files"
//! [jobs.params]
//! path = "/var/log/myapp"
//! pattern = "*.gz"
//! older_than = "30d"
//! action = "delete"
//! recursive = true
//! ```

mod gzip;
mod params;
mod sweep;
#[cfg(test)]
mod tests;

use pacer_plugin_api::{Context, Error, Plugin, bail, export_plugin};

use crate::params::{Action, Job, Params};
use crate::sweep::{Tally, human_size};

#[derive(Debug, Default)]
struct Files;

impl Plugin for Files {
    const NAME: &'static str = "files";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Params = Params;

    fn validate(&self, params: &Params) -> Result<(), Error> {
        Job::from_params(params)?;
        Ok(())
    }

    fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
        let job = Job::from_params(&params)?;
        let tally = sweep::sweep(ctx, &job)?;
        let summary = summary(&job, &tally);
        tracing::info!("{summary}");
        match tally.errors {
            0 => {
                ctx.set_message(&summary);
                Ok(())
            }
            1 => bail!("1 error (see the run's output); {summary}"),
            n => bail!("{n} errors (see the run's output); {summary}"),
        }
    }
}

export_plugin!(Files);

/// `deleted 3 files (1.2 MiB) in logs`, and the like for the other actions.
fn summary(job: &Job, tally: &Tally) -> String {
    let files = match tally.files {
        1 => "1 file".to_owned(),
        n => format!("{n} files"),
    };
    let dir = job.dir.display();
    let size = human_size(tally.bytes);
    match (job.action, job.dry_run) {
        (Action::Delete, false) => format!("deleted {files} ({size}) in {dir}"),
        (Action::Delete, true) => format!("would delete {files} ({size}) in {dir} (dry run)"),
        (Action::Gzip, false) => format!(
            "gzipped {files} in {dir}: {size} -> {}",
            human_size(tally.compressed)
        ),
        (Action::Gzip, true) => format!("would gzip {files} ({size}) in {dir} (dry run)"),
    }
}
