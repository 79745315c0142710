//! What this process may do about users: run jobs as another user, and keep its own powers
//! away from plugin code.
//!
//! `pacerd` may run as root, or (as the packaged systemd unit runs it) as an unprivileged user
//! holding only `CAP_SETUID`, `CAP_SETGID` and `CAP_KILL`. Either way it can switch a run to
//! another user. The capabilities it holds are its own: a run keeps none of them, except what a
//! run as root is entitled to (see [`confine_run`]).

use std::io;

use caps::{CapSet, Capability, CapsHashSet};

/// What `user = "root"` gives a run when pacerd is not root itself: root's power over files
/// (read and write any, change their owner and mode). The packaged service holds these only
/// when a drop-in grants them (docs/operations.md, "Jobs as root"); without them a run as root
/// would be root in name only, so such a job is refused.
pub const ROOT_RUN_CAPABILITIES: [Capability; 3] = [
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_CHOWN,
    Capability::CAP_FOWNER,
];

/// Who a process is, as far as running jobs goes: its effective user and capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// Whether its effective user is root.
    root: bool,
    /// Its effective capabilities, one bit per capability number.
    effective: u64,
}

impl Privileges {
    /// This process's privileges.
    pub fn of_this_process() -> Privileges {
        let effective = caps::read(None, CapSet::Effective)
            .unwrap_or_default()
            .iter()
            .fold(0, |mask, cap| mask | cap.bitmask());
        Privileges {
            root: nix::unistd::geteuid().is_root(),
            effective,
        }
    }

    /// The privileges of process `pid`, from `/proc/PID/status` (readable by anyone for any
    /// process, unless `/proc` is mounted with `hidepid`).
    pub fn of_process(pid: u32) -> io::Result<Privileges> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Privileges::from_status(&status).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/status lacks its Uid or CapEff line"),
            )
        })
    }

    /// Reads the `Uid:` (real, effective, ...) and `CapEff:` (hex) lines of a status file.
    fn from_status(status: &str) -> Option<Privileges> {
        let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name));
        let euid: u32 = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
        let effective = u64::from_str_radix(field("CapEff:")?.trim(), 16).ok()?;
        Some(Privileges {
            root: euid == 0,
            effective,
        })
    }

    fn holds(self, capabilities: &[Capability]) -> bool {
        capabilities
            .iter()
            .all(|cap| self.effective & cap.bitmask() != 0)
    }

    /// Whether runs can be switched to another user: root, or `CAP_SETUID` and `CAP_SETGID`.
    pub fn can_switch_users(self) -> bool {
        self.root || self.holds(&[Capability::CAP_SETUID, Capability::CAP_SETGID])
    }

    /// Whether a run as root would have root's power over files: root itself, or a process
    /// holding [`ROOT_RUN_CAPABILITIES`].
    pub fn can_run_as_root(self) -> bool {
        self.root || self.holds(&ROOT_RUN_CAPABILITIES)
    }
}

/// Leaves a worker, after its switch to the run's user, with what that run is entitled to, and
/// nothing else of what pacerd holds. `daemon_was_root` says whether the worker started as root.
///
/// - A run as any user but root: no capability at all.
/// - A run as root under a root pacerd: root's powers, as cron gives them (running pacerd as
///   root is what grants them).
/// - A run as root under a pacerd that is not root: [`ROOT_RUN_CAPABILITIES`], if pacerd holds
///   them, and nothing else, with "no new privileges" set: a process of user 0 that runs a
///   program would otherwise gain every capability of its bounding set (here pacerd's own,
///   such as `CAP_SETUID`), and the kernel already raised its effective set to all it
///   permits when it switched to user 0.
pub fn confine_run(daemon_was_root: bool) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return keep_only(&CapsHashSet::new());
    }
    if daemon_was_root {
        return Ok(());
    }
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| format!("cannot set no_new_privs for a run as root: {e}"))?;
    keep_only(&ROOT_RUN_CAPABILITIES.into_iter().collect())
}

/// Drops every capability but those in `keep` that the process has: ambient and inheritable
/// entirely, effective and permitted down to `keep`.
fn keep_only(keep: &CapsHashSet) -> Result<(), String> {
    let failed = |what: &str, e: caps::errors::CapsError| format!("cannot drop {what}: {e}");
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|e| failed("capabilities (read)", e))?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(|e| failed("ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| failed("inheritable capabilities", e))?;
    // Effective first: it must stay within the permitted set at every step.
    caps::set(None, CapSet::Effective, &kept).map_err(|e| failed("effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| failed("permitted capabilities", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(uid: &str, cap_eff: &str) -> String {
        format!(
            "Name:\tpacerd\nUid:\t{uid}\nGid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\n"
        )
    }

    #[test]
    fn the_packaged_service_can_switch_users_but_not_run_as_root() {
        // `pacer` with CAP_SETUID, CAP_SETGID and CAP_KILL, as the unit starts it.
        let unit =
            Privileges::from_status(&status("998\t998\t998\t998", "00000000000000e0")).unwrap();
        assert!(unit.can_switch_users());
        assert!(!unit.can_run_as_root());
        // With the drop-in of "Jobs as root": DAC_OVERRIDE (1), CHOWN (0), FOWNER (3) too.
        let granted =
            Privileges::from_status(&status("998\t998\t998\t998", "00000000000000eb")).unwrap();
        assert!(granted.can_run_as_root());
    }

    #[test]
    fn root_can_do_both_and_a_plain_user_neither() {
        let root = Privileges::from_status(&status("0\t0\t0\t0", "000001ffffffffff")).unwrap();
        assert!(root.can_switch_users() && root.can_run_as_root());
        let user =
            Privileges::from_status(&status("1000\t1000\t1000\t1000", "0000000000000000")).unwrap();
        assert!(!user.can_switch_users() && !user.can_run_as_root());
        // The effective user decides, not the real one.
        let setuid = Privileges::from_status(&status("1000\t0\t0\t0", "0000000000000000")).unwrap();
        assert!(setuid.can_run_as_root());
    }

    #[test]
    fn a_status_without_its_lines_is_not_read_as_unprivileged() {
        assert_eq!(Privileges::from_status("Name:\tx\n"), None);
        assert_eq!(
            Privileges::from_status(&status("0\t0\t0\t0", "not hex")),
            None
        );
    }

    #[test]
    fn this_process_reads_the_same_as_its_status_file() {
        assert_eq!(
            Privileges::of_process(std::process::id()).unwrap(),
            Privileges::of_this_process()
        );
    }
}
