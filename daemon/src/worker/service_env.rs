//! The variables systemd gives the daemon's service, which a run must not see. The daemon
//! hands its environment to each worker unchanged (see [`super::Launcher`]), and the worker
//! drops these before it loads a plugin.

use std::ffi::OsStr;

use crate::sys;

/// The variables systemd sets for a service (systemd.exec(5), "Environment variables in spawned
/// processes") describe the daemon's own service; a run must not see them. A worker that wrote
/// to `NOTIFY_SOCKET` would speak for the daemon, `JOURNAL_STREAM` would claim its stderr goes to
/// the journal when it goes to the run's output, and the `*_DIRECTORY` ones name the service's
/// private directories, which are not the job's. Kept: `PATH`, `LANG`, the login variables
/// (`USER`, `HOME`, ...; a run under another `user` gets that user's), and `TERM`.
const SERVICE_VARIABLES: [&str; 20] = [
    "NOTIFY_SOCKET",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "MAINPID",
    "MANAGERPID",
    "LOG_NAMESPACE",
    "SERVICE_RESULT",
    "EXIT_CODE",
    "EXIT_STATUS",
    "PIDFILE",
    "FDSTORE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
];

/// Prefixes of systemd's families of variables (`WATCHDOG_USEC`, `LISTEN_FDS`,
/// `MONITOR_UNIT`, `TRIGGER_UNIT`, `MEMORY_PRESSURE_WATCH`, ...), all kept from runs, those
/// systemd may add to a family later included.
const SERVICE_PREFIXES: [&str; 5] = [
    "WATCHDOG_",
    "LISTEN_",
    "MONITOR_",
    "TRIGGER_",
    "MEMORY_PRESSURE_",
];

/// Whether `name` is one of the service's own variables.
fn is_service_variable(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    SERVICE_VARIABLES.iter().any(|v| name == v.as_bytes())
        || SERVICE_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix.as_bytes()))
}

/// Removes the service's variables from this worker's environment.
///
/// Called first thing in a worker, while it has a single thread (see [`sys::remove_env`]).
pub(super) fn drop_service_variables() {
    for (name, _) in std::env::vars_os() {
        if is_service_variable(&name) {
            sys::remove_env(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_variables_and_families_are_the_services_and_others_are_kept() {
        for name in [
            "NOTIFY_SOCKET",
            "INVOCATION_ID",
            "WATCHDOG_USEC",
            "LISTEN_FDNAMES",
        ] {
            assert!(is_service_variable(OsStr::new(name)), "{name}");
        }
        for name in ["PATH", "HOME", "LANG", "NOTIFY", "MY_LISTEN_PORT"] {
            assert!(!is_service_variable(OsStr::new(name)), "{name}");
        }
    }
}
