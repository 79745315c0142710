//! A run's own end of its node's lease, in a cluster. Peers take a dead node's runs over once
//! its lease has run out; a node that is frozen (SIGSTOP, a paused VM) cannot stop its runs
//! before that, so each worker stops itself. The daemon writes a byte on the worker's channel
//! each time the node renews its lease; a worker that hears none for a lease kills its process
//! group: itself, the plugin, and everything the plugin started.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};

/// Watches `channel` on a thread of its own: every byte renews the lease for `lease`.
pub fn watch(channel: &UnixStream, lease: Duration) -> Result<(), String> {
    let mut renewals = channel
        .try_clone()
        .map_err(|e| format!("cannot watch the lease: {e}"))?;
    renewals
        .set_read_timeout(Some(lease.max(Duration::from_millis(1))))
        .map_err(|e| format!("cannot watch the lease: {e}"))?;
    std::thread::Builder::new()
        .name("lease".to_owned())
        .spawn(move || {
            let mut bytes = [0_u8; 64];
            loop {
                match renewals.read(&mut bytes) {
                    Ok(1..) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // Timed out, or the daemon closed the channel: the lease is over.
                    Ok(0) | Err(_) => break,
                }
            }
            let _ = killpg(nix::unistd::getpgrp(), Signal::SIGKILL);
        })
        .map_err(|e| format!("cannot watch the lease: {e}"))?;
    Ok(())
}
