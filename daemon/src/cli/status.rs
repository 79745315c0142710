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
        "pacerd is running (pid {}, up {}s)",
        status.pid, status.uptime_s
    );
    println!(
        "runs in flight: {}, queued: {}",
        status.in_flight, status.queued
    );
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
