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
    let reboot_jobs: Vec<&Arc<Job>> = jobs
        .iter()
        .filter(|job| job.enabled && job.is_reboot())
        .collect();
    if reboot_jobs.is_empty() {
        return Vec::new();
    }
    let Some(boot_id) = boot_id() else {
        tracing::warn!("cannot read the boot id; @reboot jobs are not run");
        return Vec::new();
    };
    let marker = runtime_dir.join(MARKER);
    let already: Vec<String> = match std::fs::read_to_string(&marker) {
        Ok(text) if text.lines().next() == Some(boot_id.as_str()) => {
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
