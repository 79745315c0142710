//! `@reboot` jobs run once per boot of the machine, not once per start of the daemon.
//!
//! Like Debian's cron (`/run/crond.reboot`), the daemon remembers under its runtime directory
//! (the control socket's directory) which `@reboot` jobs ran, with the kernel's boot id: a
//! different boot id means the machine rebooted, so the record is stale even where the
//! directory is not a tmpfs that a reboot clears.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Job;

/// The marker's file name in the runtime directory.
const MARKER: &str = "pacer-reboot";

/// The `@reboot` jobs among `jobs` that have not fired in this boot, by the marker. (The
/// history is asked too: a fire recorded just before a crash, whose mark was not written yet,
/// must not fire again.)
pub fn unmarked(runtime_dir: &Path, jobs: Vec<Arc<Job>>) -> Vec<Arc<Job>> {
    let Some(boot_id) = boot_id() else {
        tracing::warn!("cannot read the boot id; @reboot jobs are not run");
        return Vec::new();
    };
    let already = marked(runtime_dir, &boot_id);
    jobs.into_iter()
        .filter(|job| !already.contains(&job.name))
        .collect()
}

/// Remembers that `job` fired in this boot.
pub fn mark(runtime_dir: &Path, job: &str) {
    let Some(boot_id) = boot_id() else {
        return;
    };
    mark_in_boot(runtime_dir, job, &boot_id);
}

/// When this boot began, Unix ms (`btime` in `/proc/stat`, whole seconds, rounded down).
pub fn boot_started_ms() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let seconds: i64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(seconds * 1_000)
}

/// The jobs the marker lists for the boot called `boot_id`.
fn marked(runtime_dir: &Path, boot_id: &str) -> Vec<String> {
    match std::fs::read_to_string(runtime_dir.join(MARKER)) {
        Ok(text) if text.lines().next() == Some(boot_id) => {
            text.lines().skip(1).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

fn mark_in_boot(runtime_dir: &Path, job: &str, boot_id: &str) {
    let mut names = marked(runtime_dir, boot_id);
    if names.iter().any(|name| name == job) {
        return;
    }
    names.push(job.to_owned());
    let mut text = format!("{boot_id}\n");
    for name in names {
        text.push_str(&name);
        text.push('\n');
    }
    let marker = runtime_dir.join(MARKER);
    if let Err(e) = write_atomically(&marker, &text) {
        tracing::warn!(path = %marker.display(), "cannot record @reboot runs: {e}");
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temp = PathBuf::from(path);
    temp.set_extension("tmp");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reboot_job_is_marked_once_per_boot() {
        let runtime_dir = tempfile::tempdir().unwrap();
        let runtime = runtime_dir.path();
        assert!(marked(runtime, "boot-a").is_empty());
        mark_in_boot(runtime, "warm", "boot-a");
        mark_in_boot(runtime, "warm", "boot-a");
        mark_in_boot(runtime, "added", "boot-a");
        assert_eq!(marked(runtime, "boot-a"), ["warm", "added"]);
        assert!(
            marked(runtime, "boot-b").is_empty(),
            "a new boot id is a new boot, even where the marker survived"
        );
        mark_in_boot(runtime, "added", "boot-b");
        assert_eq!(marked(runtime, "boot-b"), ["added"]);
    }

    #[test]
    fn the_boot_began_before_now() {
        let began = boot_started_ms().unwrap();
        assert!(began > 0 && began <= crate::time::to_ms(jiff::Timestamp::now()));
    }
}
