//! `pacer show ID`: one run in full.

use std::process::ExitCode;

use anyhow::bail;

use super::source::Source;
use super::table::{millis, when};
use super::{Context, print_json};

pub fn run(context: &Context, id: i64) -> anyhow::Result<ExitCode> {
    let Some(source) = Source::open(context)? else {
        bail!("no run with id {id}: {}", Source::missing(context));
    };
    let Some(detail) = source.run(id)? else {
        bail!("no run with id {id} (pacer history lists them)");
    };
    if context.json {
        print_json(&detail)?;
        return Ok(ExitCode::SUCCESS);
    }
    let run = &detail.record;
    let lines = [
        ("id", run.id.to_string()),
        ("job", run.job.clone()),
        ("plugin", run.plugin.clone()),
        ("status", run.status.to_string()),
        (
            "node",
            run.node.clone().map_or_else(
                || "-".to_owned(),
                |node| node.unwrap_or_else(|| "-".to_owned()),
            ),
        ),
        ("trigger", run.trigger.to_string()),
        ("attempt", run.attempt.to_string()),
        ("scheduled", when(Some(run.scheduled_at))),
        ("started", when(run.started_at)),
        ("finished", when(run.finished_at)),
        ("duration", millis(run.duration_ms)),
        ("queued", millis(run.queue_ms)),
        ("error", run.error.clone().unwrap_or_else(|| "-".to_owned())),
        (
            "message",
            run.message.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("params", detail.params.to_string()),
    ];
    for (label, value) in lines {
        if label == "node" && run.node.is_none() {
            continue;
        }
        println!("{label:<10} {value}");
    }
    println!("output:");
    if detail.output_dropped > 0 {
        println!(
            "[{} earlier bytes dropped: output_limit]",
            detail.output_dropped
        );
    }
    print!("{}", detail.output);
    if !detail.output.is_empty() && !detail.output.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
