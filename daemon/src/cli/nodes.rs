//! `pacer nodes`: with `[cluster]`, every node of the cluster as the shared database knows it.

use std::process::ExitCode;

use anyhow::bail;

use super::source::Source;
use super::table::{Table, millis, when};
use super::{Context, print_json};

pub fn run(context: &Context) -> anyhow::Result<ExitCode> {
    let nodes = match Source::open(context)?
        .map(|source| source.nodes())
        .transpose()?
    {
        Some(Some(nodes)) => nodes,
        _ => bail!(
            "{} has no [cluster] table: this pacerd runs alone, and `pacer status` tells about it",
            context.config.display()
        ),
    };
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
