//! File descriptors are a budget like memory: under systemd's default soft limit (1024) a few
//! hundred runs in flight, or a thousand idle control-socket clients, left none for the next
//! run, which failed "Too many open files". The daemon raises its soft limit to the hard one at
//! start, hands runs the limit it started with, and keeps descriptors in reserve for runs.

use std::sync::OnceLock;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors the daemon holds per run in flight, measured: the worker's channel, its output
/// pipe and its pidfd. Spawning holds three more (the worker's ends) until the spawn returns.
pub(crate) const PER_RUN: u64 = 3;

/// Descriptors kept free beyond [`PER_RUN`] for each run slot: a spawn in progress, plugin
/// inspections after a rescan, a metrics scrape, the log.
const SLACK: u64 = 32;

/// The soft limit the daemon was started with, when it raised it.
static STARTED_WITH: OnceLock<u64> = OnceLock::new();

/// What [`raise_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit before.
    pub from: u64,
    /// The soft limit now (the hard limit).
    pub to: u64,
}

/// Raises the soft limit on open descriptors to the hard limit, remembering the old one for
/// runs (see [`limit_for_runs`]).
pub fn raise_limit() -> std::io::Result<Raised> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        let _ = STARTED_WITH.set(soft);
    }
    Ok(Raised {
        from: soft,
        to: hard.max(soft),
    })
}

/// The soft limit a run's process gets: the one the daemon was started with. Programs that
/// loop over every possible descriptor, or use `select`, misbehave with a limit of a million,
/// which is why systemd too starts services with 1024 and lets them raise it themselves.
pub(crate) fn limit_for_runs() -> Option<u64> {
    STARTED_WITH.get().copied()
}

/// Sets the soft limit of this process (a worker) back to `soft`.
pub(crate) fn restore_limit(soft: u64) -> std::io::Result<()> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)?;
    Ok(())
}

/// Descriptors to keep free for runs when up to `max_concurrency` may be in flight.
pub(crate) fn reserve_for_runs(max_concurrency: u32) -> u64 {
    u64::from(max_concurrency)
        .saturating_mul(PER_RUN)
        .saturating_add(SLACK)
}

/// How many more descriptors this process may open, or `None` when that cannot be told (no
/// `/proc`, or no descriptor left even to list them, which counts as none by the caller).
pub(crate) fn free() -> Option<u64> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // The listing's own descriptor is counted too: one more than what stays open.
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(soft.saturating_sub(open))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_descriptors_go_down_as_files_are_opened() {
        let before = free().expect("/proc/self/fd is readable");
        let files: Vec<std::fs::File> = (0..200)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let after = free().unwrap();
        // Other tests open and close a few files meanwhile; two hundred of ours show.
        assert!(
            after + 100 <= before,
            "{before} free, then {after} with 200 more open"
        );
        drop(files);
    }

    #[test]
    fn the_reserve_grows_with_the_slots() {
        assert_eq!(reserve_for_runs(0), SLACK);
        assert_eq!(reserve_for_runs(100), 100 * PER_RUN + SLACK);
        assert_eq!(
            reserve_for_runs(u32::MAX),
            u64::from(u32::MAX) * PER_RUN + SLACK
        );
    }
}
