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

/// The `@reboot` jobs that have not run in this boot; records them as run.
pub fn take_due(runtime_dir: &Path, jobs: &[Arc<Job>]) -> Vec<Arc<Job>> {
    if !jobs.iter().any(|job| job.enabled && job.is_reboot()) {
        return Vec::new();
    }
    let Some(boot_id) = boot_id() else {
        tracing::warn!("cannot read the boot id; @reboot jobs are not run");
        return Vec::new();
    };
    take_due_in_boot(runtime_dir, jobs, &boot_id)
}

/// [`take_due`] for the boot called `boot_id`.
fn take_due_in_boot(runtime_dir: &Path, jobs: &[Arc<Job>], boot_id: &str) -> Vec<Arc<Job>> {
    let reboot_jobs: Vec<&Arc<Job>> = jobs
        .iter()
        .filter(|job| job.enabled && job.is_reboot())
        .collect();
    let marker = runtime_dir.join(MARKER);
    let already: Vec<String> = match std::fs::read_to_string(&marker) {
        Ok(text) if text.lines().next() == Some(boot_id) => {
            text.lines().skip(1).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    };
    let due: Vec<Arc<Job>> = reboot_jobs
        .iter()
        .filter(|job| !already.contains(&job.name))
        .map(|job| Arc::clone(job))
        .collect();
    if !due.is_empty() {
        let mut text = format!("{boot_id}\n");
        for name in already.iter().chain(due.iter().map(|job| &job.name)) {
            text.push_str(name);
            text.push('\n');
        }
        if let Err(e) = write_atomically(&marker, &text) {
            tracing::warn!(path = %marker.display(), "cannot record @reboot runs: {e}");
        }
    }
    due
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
    use crate::config::load_text;

    fn jobs(names: &[&str]) -> (tempfile::TempDir, Vec<Arc<Job>>) {
        let mut text = String::from(
            "[[jobs]]\nname = \"hourly\"\nschedule = \"@hourly\"\nplugin = \"exec\"\n",
        );
        for name in names {
            text.push_str(&format!(
                "[[jobs]]\nname = \"{name}\"\nschedule = \"@reboot\"\nplugin = \"exec\"\n"
            ));
        }
        let (dir, config) = load_text(&text);
        (dir, config.jobs.iter().cloned().collect())
    }

    fn names(jobs: &[Arc<Job>]) -> Vec<&str> {
        jobs.iter().map(|job| job.name.as_str()).collect()
    }

    #[test]
    fn each_reboot_job_runs_once_per_boot() {
        let runtime_dir = tempfile::tempdir().unwrap();
        let runtime = runtime_dir.path();
        let (_dir, first) = jobs(&["warm"]);
        assert_eq!(
            names(&take_due_in_boot(runtime, &first, "boot-a")),
            ["warm"]
        );
        assert!(
            take_due_in_boot(runtime, &first, "boot-a").is_empty(),
            "a daemon restart in the same boot does not run it again"
        );

        let (_dir, more) = jobs(&["warm", "added"]);
        assert_eq!(
            names(&take_due_in_boot(runtime, &more, "boot-a")),
            ["added"],
            "a job added later in the boot runs once too"
        );
        assert!(take_due_in_boot(runtime, &more, "boot-a").is_empty());

        assert_eq!(
            names(&take_due_in_boot(runtime, &more, "boot-b")),
            ["warm", "added"],
            "a new boot id is a new boot, even where the marker survived"
        );
    }
}
