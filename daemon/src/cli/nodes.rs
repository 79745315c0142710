//! `pacer nodes`: with `[cluster]`, every node of the cluster as the shared database knows it.

use std::process::ExitCode;

use anyhow::bail;

use super::source::Source;
use super::table::{Table, millis, when};
use super::{Context, print_json};
use crate::config::load_cluster_settings;

pub fn run(context: &Context) -> anyhow::Result<ExitCode> {
    let Some(settings) = load_cluster_settings(&context.config).ok().flatten() else {
        bail!(
            "{} has no [cluster] table: this pacerd runs alone, and `pacer status` tells about it",
            context.config.display()
        );
    };
    let mut nodes = match Source::open(context)? {
        Some(source) => source.nodes()?.unwrap_or_default(),
        // Before the first node started, the database has no tables yet.
        None => Vec::new(),
    };
    // A node marked alive whose heartbeat is older than a lease has not been declared dead
    // only because no live node was there to see it: say so rather than "alive".
    let lease_ms = i64::try_from(settings.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    for node in &mut nodes {
        if node.state == "alive" && node.last_heartbeat_ago_ms > lease_ms {
            "silent".clone_into(&mut node.state);
        }
    }
    if context.json {
        print_json(&nodes)?;
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        println!("no node has joined the cluster yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec![
        "NODE",
        "STATE",
        "HOST",
        "PID",
        "LAST HEARTBEAT",
        "AGO",
        "CLOCK OFFSET",
        "IN FLIGHT",
        "DRIFT",
    ]);
    for node in &nodes {
        table.row(vec![
            node.node.clone(),
            node.state.clone(),
            node.host.clone(),
            node.pid.to_string(),
            when(Some(node.last_heartbeat)),
            millis(Some(node.last_heartbeat_ago_ms)),
            format!("{} ms", node.clock_offset_ms),
            node.in_flight.to_string(),
            if node.drift.is_empty() {
                "-".to_owned()
            } else {
                node.drift.join(", ")
            },
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
