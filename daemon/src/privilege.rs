//! What this process may do about users: run jobs as another user, and keep that power away
//! from plugin code.
//!
//! `pacerd` may run as root, or (as the packaged systemd unit runs it) as an unprivileged user
//! holding only `CAP_SETUID`, `CAP_SETGID` and `CAP_KILL`. Either way it can switch a run to
//! another user; in the second case a worker must drop those capabilities before it loads a
//! plugin, since a non-root process keeps them across `setuid`.

use caps::{CapSet, Capability};

/// Whether runs can be switched to another user: root, or `CAP_SETUID` and `CAP_SETGID`.
pub fn can_switch_users() -> bool {
    nix::unistd::geteuid().is_root()
        || [Capability::CAP_SETUID, Capability::CAP_SETGID]
            .into_iter()
            .all(|cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false))
}

/// Drops every capability this process holds (ambient first, then inheritable, effective and
/// permitted), so what it runs next has none of them. A no-op for a process that holds none.
pub fn drop_all_capabilities() -> Result<(), String> {
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("cannot drop capabilities ({set:?}): {e}"))?;
    }
    Ok(())
}
