//! `/runs`: the history with the filters of `pacer history` (job, status, trigger, since,
//! until, before, limit), newest first, paged by id.

use std::sync::Arc;

use jiff::tz::TimeZone;

use super::{daemon_status, jobs_in_force, now_ms, ok};
use crate::model::{Status, Trigger};
use crate::store::{HistoryQuery, RunRecord};
use crate::time::from_ms;
use crate::web::fmt::{self, esc, url};
use crate::web::page::{Nav, Page, PageError, badge, w};
use crate::web::query::Query;
use crate::web::server::Reply;
use crate::web::site::Site;

/// Runs per page without `limit`, as `pacer history`.
const DEFAULT_LIMIT: u32 = 50;
/// The most runs one page lists.
pub(super) const MAX_LIMIT: i64 = 1_000;

pub(crate) async fn page(site: &Arc<Site>, query: Option<&str>) -> Result<Reply, PageError> {
    let query = Query::parse(
        query,
        &[
            "job", "status", "trigger", "since", "until", "before", "limit",
        ],
    )?;
    let now = now_ms();
    let now_ts = from_ms(now);
    let filters = HistoryQuery {
        job: query.text("job").map(str::to_owned),
        status: query.parsed::<Status>("status")?,
        trigger: query.parsed::<Trigger>("trigger")?,
        since: query.instant("since", now_ts, &site.zone)?,
        until: query.instant("until", now_ts, &site.zone)?,
        before: query.number("before", 1..=i64::MAX)?,
        after: None,
        limit: query
            .number("limit", 1..=MAX_LIMIT)?
            .map_or(DEFAULT_LIMIT, |n| u32::try_from(n).unwrap_or(DEFAULT_LIMIT)),
    };
    if let (Some(since), Some(until)) = (filters.since, filters.until)
        && since >= until
    {
        return Err(PageError::BadRequest(
            "parameter `since` must be before `until`".to_owned(),
        ));
    }
    let (jobs, daemon) = tokio::join!(jobs_in_force(site), daemon_status(site));
    let job_names: Vec<String> = jobs.map(|jobs| jobs.into_iter().map(|j| j.name).collect())?;
    let limit = filters.limit;
    let wanted = filters.clone();
    let runs = site.read(move |history, _| history.runs(&wanted)).await?;

    let mut body = String::from("<div class=\"title-row\"><h1>Runs</h1></div>");
    form(&mut body, &query, &job_names);
    w!(body, "<section class=\"panel\" id=\"runs\" data-live>");
    if runs.is_empty() {
        body.push_str("<p class=\"empty-note\">No runs match.</p>");
    } else {
        runs_table(&mut body, &runs, true, now, &site.zone);
    }
    let link = older_link(&runs, limit, |before| {
        let mut href = String::from("/runs?");
        for key in ["job", "status", "trigger", "since", "until", "limit"] {
            if let Some(value) = query.text(key) {
                w!(href, "{key}={}&amp;", url(value));
            }
        }
        w!(href, "before={before}");
        href
    });
    body.push_str("<nav class=\"pager\">");
    if filters.before.is_some() {
        let mut href = String::from("/runs?");
        for key in ["job", "status", "trigger", "since", "until", "limit"] {
            if let Some(value) = query.text(key) {
                w!(href, "{key}={}&amp;", url(value));
            }
        }
        w!(
            body,
            "<a href=\"{}\">⇤ Newest</a>",
            href.trim_end_matches("&amp;").trim_end_matches('?')
        );
    }
    w!(
        body,
        "<span>{} runs{}</span>",
        runs.len(),
        match filters.before {
            Some(before) => format!(" older than #{before}"),
            None => String::new(),
        }
    );
    if let Some(link) = link {
        body.push_str(&link);
    }
    body.push_str("</nav></section>");
    ok(&Page {
        title: "Runs".to_owned(),
        nav: Nav::Runs,
        body,
        live: filters.before.is_none(),
        daemon,
        cluster: site.is_cluster(),
    })
}

/// The filter form, filled with the query's values.
fn form(body: &mut String, query: &Query, jobs: &[String]) {
    let value = |key: &str| esc(query.text(key).unwrap_or_default()).into_owned();
    w!(
        body,
        "<form class=\"filters panel\" method=\"get\" action=\"/runs\">\
         <label>Job<input name=\"job\" list=\"job-names\" value=\"{}\" placeholder=\"any\" \
         autocomplete=\"off\"></label><datalist id=\"job-names\">",
        value("job")
    );
    for job in jobs {
        w!(body, "<option value=\"{}\">", esc(job));
    }
    body.push_str(
        "</datalist><label>Status<select name=\"status\"><option value=\"\">any</option>",
    );
    for status in super::super::page::legend_statuses() {
        if status.parse::<Status>().is_err() {
            continue;
        }
        let selected = if query.text("status") == Some(status) {
            " selected"
        } else {
            ""
        };
        w!(
            body,
            "<option value=\"{status}\"{selected}>{}</option>",
            status.replace('_', " ")
        );
    }
    body.push_str(
        "</select></label><label>Trigger<select name=\"trigger\"><option value=\"\">any</option>",
    );
    for trigger in Trigger::ALL {
        let name = trigger.as_str();
        let selected = if query.text("trigger") == Some(name) {
            " selected"
        } else {
            ""
        };
        w!(
            body,
            "<option value=\"{name}\"{selected}>{}</option>",
            name.replace('_', " ")
        );
    }
    w!(
        body,
        "</select></label>\
         <label>Since<input name=\"since\" value=\"{}\" placeholder=\"2h, 7d or a date\"></label>\
         <label>Until<input name=\"until\" value=\"{}\" placeholder=\"1h or a date\"></label>\
         <label class=\"narrow\">Limit<input name=\"limit\" inputmode=\"numeric\" value=\"{}\" \
         placeholder=\"{DEFAULT_LIMIT}\"></label>\
         <div class=\"actions\"><button type=\"submit\">Show runs</button>\
         <a class=\"button plain\" href=\"/runs\">Clear</a></div></form>",
        value("since"),
        value("until"),
        value("limit")
    );
}

/// Runs as a table: id, job (when `with_job`), status, trigger, due, duration, queue wait
/// (so far, for a fire still waiting), the node that ran it (a cluster's runs), and the error,
/// or why it was skipped or waits. Each row links to its run.
pub(super) fn runs_table(
    body: &mut String,
    runs: &[RunRecord],
    with_job: bool,
    now: i64,
    zone: &TimeZone,
) {
    if runs.is_empty() {
        body.push_str("<p class=\"empty-note\">No runs yet.</p>");
        return;
    }
    let with_node = runs.iter().any(|run| run.node.is_some());
    body.push_str("<table class=\"runs cards\"><thead><tr><th>Run</th>");
    if with_job {
        body.push_str("<th>Job</th>");
    }
    body.push_str(
        "<th>Status</th><th>Trigger</th><th>Due</th><th class=\"num\">Duration</th>\
         <th class=\"num\">Queue wait</th>",
    );
    if with_node {
        body.push_str("<th>Node</th>");
    }
    body.push_str("<th>Error or reason</th></tr></thead><tbody>");
    for run in runs {
        w!(
            body,
            "<tr><td data-label=\"Run\"><a class=\"id\" href=\"/runs/{0}\">#{0}</a></td>",
            run.id
        );
        if with_job {
            w!(
                body,
                "<td data-label=\"Job\"><a href=\"/jobs/{}\">{}</a></td>",
                url(&run.job),
                esc(&run.job)
            );
        }
        let attempt = if run.attempt > 1 {
            format!(" #{}", run.attempt)
        } else {
            String::new()
        };
        w!(
            body,
            "<td data-label=\"Status\">{}</td><td data-label=\"Trigger\">{}{attempt}</td>\
             <td data-label=\"Due\">{}<div class=\"sub\">{}</div></td>\
             <td class=\"num\" data-label=\"Duration\">{}</td>\
             <td class=\"num\" data-label=\"Queue wait\">{}</td>",
            badge(run.status.as_str()),
            run.trigger.as_str().replace('_', " "),
            fmt::short_when(run.scheduled_at, zone),
            fmt::relative(run.scheduled_at, now),
            fmt::maybe_duration(run.duration_ms),
            queue_wait(run, now)
        );
        if with_node {
            w!(
                body,
                "<td data-label=\"Node\">{}</td>",
                node_link(run.node.as_ref().and_then(Option::as_deref))
            );
        }
        // A failure's error; a skipped or waiting fire's reason, which is no error.
        let class = match run.status {
            Status::Queued | Status::Skipped => "reason",
            _ => "error",
        };
        w!(
            body,
            "<td class=\"{class}\" data-label=\"Error\">{}</td></tr>",
            esc(&run
                .error
                .as_deref()
                .map(|e| fmt::first_line(e, 90))
                .unwrap_or_default())
        );
    }
    body.push_str("</tbody></table>");
}

/// How long a run waited for a slot; for a fire still waiting, how long so far (or, for a
/// retry waiting for its back-off, when it is due).
pub(super) fn queue_wait(run: &RunRecord, now: i64) -> String {
    if run.status != Status::Queued {
        return fmt::maybe_duration(run.queue_ms);
    }
    if run.scheduled_at > now {
        format!("due {}", fmt::relative(run.scheduled_at, now))
    } else {
        format!("{} so far", fmt::duration(now - run.scheduled_at))
    }
}

/// A node's name linking to the nodes page; `–` for a run no node took.
pub(super) fn node_link(node: Option<&str>) -> String {
    node.map_or_else(
        || "<span class=\"muted\">–</span>".to_owned(),
        |node| format!("<a href=\"/nodes#node-{}\">{}</a>", url(node), esc(node)),
    )
}

/// The "older" link of a full page: the same filters, before its oldest run.
pub(super) fn older_link(
    runs: &[RunRecord],
    limit: u32,
    href: impl Fn(i64) -> String,
) -> Option<String> {
    let oldest = runs.last()?;
    (runs.len() == limit as usize && oldest.id > 1).then(|| {
        format!(
            "<a class=\"older\" href=\"{}\">Older →</a>",
            href(oldest.id)
        )
    })
}
