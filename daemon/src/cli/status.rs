//! `pacer status`: whether pacerd runs, and how loaded it is.

use std::process::ExitCode;

use anyhow::bail;

use super::{Context, print_json};
use crate::control::client::{ClientError, ask};
use crate::control::{Request, Response};

pub fn run(context: &Context) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let status = match ask(&settings.socket, &Request::Status) {
        Ok(Response::Status(status)) => status,
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer from pacerd: {other:?}"),
        Err(ClientError::NotRunning(_)) => {
            if context.json {
                print_json(&serde_json::json!({
                    "running": false,
                    "pid": null,
                    "uptime_s": null,
                    "in_flight": null,
                    "queued": null,
                    "pools": null,
                }))?;
            } else {
                println!("pacerd is not running");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if context.json {
        print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pacerd is {} (pid {}, up {})",
        if status.stopping {
            "stopping: it starts nothing more, and waits for its runs to end and be recorded"
        } else {
            "running"
        },
        status.pid,
        uptime(status.uptime_s)
    );
    println!(
        "runs in flight: {}, queued: {}",
        status.in_flight, status.queued
    );
    if let (Some(node), Some(database)) = (&status.node, &status.database) {
        println!("node {node} of the cluster on {database} (pacer nodes lists them all)");
    }
    if let Some(reason) = &status.history_error {
        if status.node.is_some() {
            println!("{reason}; fires wait until it can be reached again");
        } else {
            println!("{reason}; fires wait until it can be written again");
        }
    }
    if let Some(reason) = &status.waiting_on {
        println!("new starts wait: {reason}");
    }
    for (pool, load) in &status.pools {
        println!(
            "  pool {pool}: {} in flight, {} queued",
            load.in_flight, load.queued
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An uptime as people say it: the two largest units, such as `2h 5m` or `3d 4h`.
fn uptime(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {}s", seconds % 60),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::uptime;

    #[test]
    fn uptimes_read_as_people_say_them() {
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(137), "2m 17s");
        assert_eq!(uptime(2 * 3_600 + 5 * 60 + 9), "2h 5m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3_600 + 59), "3d 4h");
    }
}
