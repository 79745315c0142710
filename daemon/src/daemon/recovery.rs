//! What a daemon that died leaves behind: runs still marked `running`, and their processes.

use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::store::OrphanedRun;
use crate::worker::is_spawned_as;

/// Kills the processes of runs a previous daemon abandoned.
///
/// A run's worker is recognized by its recorded pid and spawn time (a reused pid has another
/// start time). The worker dies with the daemon (its parent-death signal), but what it started
/// stays in its process group; those processes are recognized by that group id *and* the run's
/// `PACER_RUN_ID` in their environment, which no unrelated process carries.
pub fn kill_leftovers(orphans: &[OrphanedRun]) -> usize {
    let mut killed = 0;
    for orphan in orphans {
        let Some((worker_pid, spawned_after)) = orphan.process else {
            continue;
        };
        if is_spawned_as(worker_pid, spawned_after) && kill_one(worker_pid) {
            killed += 1;
        }
        let marker = format!("PACER_RUN_ID={}", orphan.id);
        for pid in processes_in_group(worker_pid) {
            if environment_has(pid, &marker) && kill_one(pid) {
                killed += 1;
            }
        }
    }
    killed
}

fn kill_one(pid: i32) -> bool {
    kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
}

/// Every process whose process group is `pgid`.
fn processes_in_group(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| process_group(*pid) == Some(pgid))
        .collect()
}

/// Field 5 of `/proc/PID/stat`.
fn process_group(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(2)?.parse().ok()
}

fn environment_has(pid: i32, entry: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == entry.as_bytes()))
}
