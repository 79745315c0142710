//! Telling systemd (`Type=notify`) where the daemon is: waiting, ready, reloading, stopping,
//! and alive.
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify the service manager: {e}");
    }
}

/// How the last reload went, for the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The new config is in force.
    Applied,
    /// The new config was invalid; the previous one stays in force.
    Refused,
}

/// Schedules are loaded and the control socket listens: `jobs` are in force, and `last_reload`
/// says how the latest reload went (none yet after a start).
pub fn ready(jobs: usize, last_reload: Option<Reload>) {
    let status = status_line(jobs, last_reload);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// What `systemctl status` shows beside the unit: it stays until the next reload, so it says
/// what is in force rather than what just happened.
fn status_line(jobs: usize, last_reload: Option<Reload>) -> String {
    let count = match jobs {
        1 => "1 job".to_owned(),
        n => format!("{n} jobs"),
    };
    match last_reload {
        None => count,
        Some(Reload::Applied) => format!("{count}; last reload applied"),
        Some(Reload::Refused) => format!(
            "{count}; last reload failed, the previous config stays in force (pacer check shows why)"
        ),
    }
}

/// Start-up waits for something (`what`), which `systemctl status` shows meanwhile.
pub fn waiting(what: &str) {
    send(&[NotifyState::Status(what)]);
}

/// A reload begins; `ready` follows when it is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The scheduler loop is alive.
pub fn alive() {
    send(&[NotifyState::Watchdog]);
}

/// How often to say so: half of `WatchdogSec`, when systemd asked for it.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_jobs_and_says_how_the_last_reload_went() {
        assert_eq!(status_line(0, None), "0 jobs");
        assert_eq!(status_line(1, None), "1 job");
        assert_eq!(
            status_line(1, Some(Reload::Applied)),
            "1 job; last reload applied"
        );
        assert_eq!(
            status_line(12, Some(Reload::Refused)),
            "12 jobs; last reload failed, the previous config stays in force (pacer check shows why)"
        );
    }
}
