//! `/runs/ID`: one run as `pacer show` tells it: every field, its queue wait drawn against
//! its run time, the chain it belongs to (the upstream runs that caused it and the runs it
//! caused), its params (secrets masked when stored), and its output when
//! `web_show_output = true`, cut to a tail that a browser renders at once.

use std::sync::Arc;

use super::runs::{node_link, queue_wait};
use super::{daemon_status, now_ms, ok};
use crate::model::{Status, Trigger};
use crate::store::{CappedRun, RunRecord};
use crate::time::rfc3339_ms;
use crate::web::fmt::{self, esc, url};
use crate::web::page::{Nav, Page, PageError, badge, w};
use crate::web::query::Query;
use crate::web::server::Reply;
use crate::web::site::Site;

/// The most output a page carries: the tail, as `output_limit` keeps the tail.
pub(crate) const OUTPUT_SHOWN: u64 = 256 * 1024;
/// Upstream runs followed, nearest first.
const CHAIN_DEPTH: usize = 8;
/// How long after its upstream ended a chained run may be due and still be found.
const CHAIN_WINDOW_MS: i64 = 600_000;

/// What the history holds for the page.
#[derive(Debug)]
struct Found {
    run: CappedRun,
    upstream: Vec<RunRecord>,
    downstream: Vec<RunRecord>,
    show_output: bool,
}

pub(crate) async fn page(
    site: &Arc<Site>,
    id: i64,
    query: Option<&str>,
) -> Result<Reply, PageError> {
    Query::parse(query, &[])?;
    let daemon = daemon_status(site).await;
    let found = site
        .read(move |history, config| {
            let show_output = config.daemon.web_show_output;
            let limit = if show_output { OUTPUT_SHOWN } else { 0 };
            let Some(run) = history.run_capped(id, limit)? else {
                return Err(PageError::NotFound(format!(
                    "no run with id {id} (the runs page lists them; old runs are pruned after \
                     history_retention)"
                )));
            };
            let mut upstream = Vec::new();
            let mut next = upstream_id(&run.detail.params, run.detail.record.trigger);
            while let Some(up) = next.filter(|_| upstream.len() < CHAIN_DEPTH) {
                let Some(found) = history.run_capped(up, 0)? else {
                    break;
                };
                next = upstream_id(&found.detail.params, found.detail.record.trigger);
                upstream.push(found.detail.record);
            }
            let downstream = history.downstream(&run.detail.record, CHAIN_WINDOW_MS)?;
            Ok(Found {
                run,
                upstream,
                downstream,
                show_output,
            })
        })
        .await?;
    let now = now_ms();
    let zone = &site.zone;
    let detail = &found.run.detail;
    let run = &detail.record;
    let mut body = String::new();
    w!(
        body,
        "<nav class=\"crumbs\"><a href=\"/runs\">Runs</a> / <a href=\"/jobs/{}\">{}</a> /</nav>\
         <div id=\"state\" data-live><div class=\"title-row\"><h1>Run #{}</h1><div class=\"chips\">{}\
         <a class=\"button\" href=\"/timeline?end={}&amp;span=1h&amp;job={}\">On the timeline</a>\
         </div></div>",
        url(&run.job),
        esc(&run.job),
        run.id,
        badge(run.status.as_str()),
        url(&rfc3339_ms(
            run.finished_at.unwrap_or(now).max(run.scheduled_at) + 1_800_000
        )),
        url(&run.job)
    );
    let waiting_since = (run.status == Status::Queued).then(|| {
        found
            .run
            .queued_at
            .map_or(run.scheduled_at, |at| at.max(run.scheduled_at))
    });
    match (&run.error, waiting_since) {
        (reason, Some(since)) => w!(
            body,
            "<div class=\"wait-box\">{}; {} so far</div>",
            esc(reason.as_deref().unwrap_or("waiting for a slot")),
            fmt::duration((now - since).max(0))
        ),
        (Some(error), None) => w!(body, "<div class=\"error-box\">{}</div>", esc(error)),
        (None, None) => {}
    }
    body.push_str("</div>");
    body.push_str("<div class=\"grid2\"><section class=\"panel\" id=\"fields\" data-live><h2>Record</h2><dl class=\"facts\">");
    let time = |ms: Option<i64>| {
        ms.map_or_else(
            || "–".to_owned(),
            |ms| {
                format!(
                    "{} <span class=\"muted\">({})</span>",
                    fmt::when(ms, zone),
                    fmt::relative(ms, now)
                )
            },
        )
    };
    let fields = [
        ("id", run.id.to_string()),
        (
            "job",
            format!("<a href=\"/jobs/{}\">{}</a>", url(&run.job), esc(&run.job)),
        ),
        ("plugin", esc(&run.plugin).into_owned()),
        ("status", badge(run.status.as_str())),
        ("trigger", run.trigger.as_str().replace('_', " ")),
        ("attempt", run.attempt.to_string()),
        ("scheduled", time(Some(run.scheduled_at))),
        ("accepted", time(found.run.queued_at)),
        ("started", time(run.started_at)),
        ("finished", time(run.finished_at)),
        ("duration", fmt::maybe_duration(run.duration_ms)),
        ("queue wait", queue_wait(run, now)),
        (
            "lateness",
            fmt::maybe_duration(run.started_at.map(|s| s - run.scheduled_at)),
        ),
    ];
    for (label, value) in fields {
        w!(body, "<dt>{label}</dt><dd>{value}</dd>");
    }
    if let Some(node) = &run.node {
        w!(body, "<dt>node</dt><dd>{}</dd>", node_link(node.as_deref()));
    }
    // Fields the record gains later (a cluster's `node`) are shown as they come.
    if let Ok(serde_json::Value::Object(all)) = serde_json::to_value(run) {
        for (key, value) in all {
            if !KNOWN.contains(&key.as_str()) {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => "–".to_owned(),
                    other => other.to_string(),
                };
                w!(body, "<dt>{}</dt><dd>{}</dd>", esc(&key), esc(&text));
            }
        }
    }
    body.push_str("</dl>");
    body.push_str(&phases(run, waiting_since, now));
    body.push_str("</section><section class=\"panel\"><h2>Chain</h2>");
    chain(&mut body, run, &found.upstream, &found.downstream);
    w!(
        body,
        "<h2>Params</h2><pre class=\"params\">{}</pre></section></div>",
        esc(&serde_json::to_string_pretty(&detail.params).unwrap_or_default())
    );
    output(&mut body, &found);
    ok(&Page {
        title: format!("Run #{} · {}", run.id, run.job),
        nav: Nav::Runs,
        body,
        live: run.finished_at.is_none(),
        daemon,
        cluster: site.is_cluster(),
    })
}

/// The fields of a record the page shows on its own.
const KNOWN: [&str; 13] = [
    "id",
    "job",
    "plugin",
    "status",
    "trigger",
    "attempt",
    "scheduled_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "queue_ms",
    "error",
    "node",
];

/// The id in a chained run's `upstream` object.
fn upstream_id(params: &serde_json::Value, trigger: Trigger) -> Option<i64> {
    if trigger != Trigger::Chained && trigger != Trigger::Retry {
        return None;
    }
    params.get("upstream")?.get("id")?.as_i64()
}

/// The run's life as a bar: waiting for a slot, then running; a fire still waiting (since
/// `waiting_since`) is all wait, up to now.
fn phases(run: &RunRecord, waiting_since: Option<i64>, now: i64) -> String {
    let (waited, ran) = match (run.started_at, waiting_since) {
        (Some(started), _) => (
            run.queue_ms.unwrap_or(0).max(0),
            Some(run.finished_at.unwrap_or(now) - started),
        ),
        (None, Some(since)) => ((now - since).max(0), None),
        (None, None) => return String::new(),
    };
    let total = (waited + ran.unwrap_or(0)).max(1) as f64;
    let wait_w = 600.0 * waited as f64 / total;
    let mut out = String::from(
        "<svg class=\"phases\" viewBox=\"0 0 600 22\" role=\"img\" \
         aria-label=\"queue wait then run time\">",
    );
    if wait_w > 0.0 {
        w!(
            out,
            "<rect class=\"wait\" x=\"0\" y=\"4\" width=\"{wait_w:.1}\" height=\"14\">\
             <title>waited {}</title></rect>",
            fmt::duration(waited)
        );
    }
    match ran {
        Some(ran) => w!(
            out,
            "<rect class=\"st-{}\" x=\"{wait_w:.1}\" y=\"4\" width=\"{:.1}\" height=\"14\">\
             <title>ran {}</title></rect></svg><div class=\"phase-labels\">\
             <span>queue wait {}</span><span>ran {}</span></div>",
            run.status.as_str(),
            (600.0 - wait_w).max(1.0),
            fmt::duration(ran),
            fmt::duration(waited),
            fmt::duration(ran)
        ),
        None => w!(
            out,
            "</svg><div class=\"phase-labels\"><span>queue wait {} so far</span>\
             <span>not started</span></div>",
            fmt::duration(waited)
        ),
    }
    out
}

fn chain(body: &mut String, run: &RunRecord, upstream: &[RunRecord], downstream: &[RunRecord]) {
    if upstream.is_empty() && downstream.is_empty() {
        body.push_str(
            "<p class=\"muted\">Not part of a chain: no run caused it, and it caused none.</p>",
        );
        return;
    }
    body.push_str("<ol class=\"chain\">");
    let item = |body: &mut String, r: &RunRecord, current: bool| {
        let class = if current { " class=\"current\"" } else { "" };
        w!(
            body,
            "<li{class}><a href=\"/runs/{0}\">#{0}</a> <a href=\"/jobs/{1}\">{2}</a> {3}</li>",
            r.id,
            url(&r.job),
            esc(&r.job),
            badge(r.status.as_str())
        );
    };
    for up in upstream.iter().rev() {
        item(body, up, false);
    }
    item(body, run, true);
    if !downstream.is_empty() {
        body.push_str("<li class=\"fan\"><ol>");
        for down in downstream {
            item(body, down, false);
        }
        body.push_str("</ol></li>");
    }
    body.push_str("</ol>");
}

fn output(body: &mut String, found: &Found) {
    body.push_str("<section class=\"panel\" id=\"output\" data-live><h2>Output</h2>");
    if !found.show_output {
        body.push_str(
            "<p class=\"muted\">Captured output is not shown here: it can hold secrets. Set \
             <code>web_show_output = true</code> in <code>[daemon]</code> to show it, or read it \
             with <code>pacer show</code>.</p></section>",
        );
        return;
    }
    let detail = &found.run.detail;
    let shown = detail.output.len() as u64;
    let hidden = found.run.stored_output.saturating_sub(shown);
    if detail.output_dropped > 0 {
        w!(
            body,
            "<p class=\"hint\">{} earlier bytes were dropped when the run was recorded \
             (output_limit keeps the tail).</p>",
            detail.output_dropped
        );
    }
    if hidden > 0 {
        w!(
            body,
            "<p class=\"hint cut\">Output cut: the last {} KiB of {} KiB are shown; \
             <code>pacer show {}</code> prints all of it.</p>",
            OUTPUT_SHOWN / 1024,
            found.run.stored_output.div_ceil(1024),
            detail.record.id
        );
    }
    // A cut tail starts at its first whole line.
    let text = match detail.output.find('\n') {
        Some(newline) if hidden > 0 && newline < 4_096 => &detail.output[newline + 1..],
        _ => detail.output.as_str(),
    };
    if text.is_empty() {
        body.push_str("<p class=\"muted\">No output.</p>");
    } else {
        w!(body, "<pre class=\"output\">{}</pre>", esc(text));
    }
    body.push_str("</section>");
}
