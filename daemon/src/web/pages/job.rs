//! `/jobs/NAME`: one job: its settings, its figures over a window with durations (p50/p95)
//! and outcomes over time, `why` (its recent fires and what became of each), and its runs.

use std::sync::Arc;

use super::runs::{older_link, runs_table};
use super::{daemon_status, jobs_in_force, now_ms, ok};
use crate::control::{Request, Response, WhyInfo};
use crate::model::Status;
use crate::store::{HistoryQuery, JobStats, RunRecord, WindowRun, summarize};
use crate::time::rfc3339_ms;
use crate::units::format_duration;
use crate::web::fmt::{self, esc, url};
use crate::web::page::{Nav, Page, PageError, badge, legend, w};
use crate::web::query::Query;
use crate::web::server::Reply;
use crate::web::site::Site;
use crate::web::{svg, words};

/// Runs listed per page.
const PER_PAGE: u32 = 50;
/// Runs drawn in the charts: the newest in the window.
const CHART_RUNS: u32 = 2_000;
/// Fires `why` tells about.
const FIRES: u32 = 20;
/// Slices of the window for the p50/p95 lines and the outcome bars.
const BUCKETS: usize = 24;
const DAY: i64 = 86_400_000;

/// What the history holds for the page.
#[derive(Debug)]
struct Found {
    settings: Vec<(&'static str, String)>,
    in_window: Vec<WindowRun>,
    stats: JobStats,
    recent: Vec<RunRecord>,
    listed: Vec<RunRecord>,
}

pub(crate) async fn page(
    site: &Arc<Site>,
    name: &str,
    query: Option<&str>,
) -> Result<Reply, PageError> {
    let query = Query::parse(query, &["window", "before"])?;
    let window = query
        .duration_ms("window", 60_000, 90 * DAY)?
        .unwrap_or(7 * DAY);
    let before = query.number("before", 1..=i64::MAX)?;
    let why_request = Request::Why {
        job: name.to_owned(),
    };
    let (jobs, why, daemon) = tokio::join!(
        jobs_in_force(site),
        site.ask(why_request),
        daemon_status(site)
    );
    let info = jobs?.into_iter().find(|job| job.name == name);
    let why = match why {
        Ok(Response::Why(why)) => Some(why),
        _ => None,
    };
    let now = now_ms();
    // The charts end on the next whole minute, not at `now`, so that a refresh redraws them
    // only when a run changed or a minute passed, not under the pointer every few seconds.
    let chart_end = (now.div_euclid(60_000) + 1) * 60_000;
    let job = name.to_owned();
    let found = site
        .read(move |history, config| {
            let settings = config.job(&job).map(|j| settings(j)).unwrap_or_default();
            let in_window = history.job_window(&job, chart_end - window, chart_end, CHART_RUNS)?;
            let recent = history.runs(&HistoryQuery {
                job: Some(job.clone()),
                limit: FIRES,
                ..HistoryQuery::default()
            })?;
            let listed = history.runs(&HistoryQuery {
                job: Some(job.clone()),
                before,
                limit: PER_PAGE,
                ..HistoryQuery::default()
            })?;
            Ok(Found {
                settings,
                stats: summarize(&job, &in_window),
                in_window,
                recent,
                listed,
            })
        })
        .await?;
    if info.is_none() && found.recent.is_empty() {
        return Err(PageError::NotFound(format!(
            "no job `{name}` in the config in force, and no runs of it in the history"
        )));
    }

    let zone = &site.zone;
    let mut body = String::new();
    w!(
        body,
        "<nav class=\"crumbs\"><a href=\"/\">Jobs</a> /</nav>\
         <div class=\"title-row\"><h1>{}</h1><div class=\"chips\">",
        esc(name)
    );
    match &info {
        Some(info) => {
            if let Some(problem) = &info.problem {
                w!(
                    body,
                    "<span class=\"state problem\">{}</span>",
                    esc(problem)
                );
            } else if !info.enabled {
                body.push_str("<span class=\"state\">disabled</span>");
            } else if info.paused {
                body.push_str("<span class=\"state paused\">paused</span>");
            } else {
                body.push_str("<span class=\"state active\">active</span>");
            }
        }
        None => body.push_str("<span class=\"state\">not in the config in force</span>"),
    }
    w!(
        body,
        "<a class=\"button\" href=\"/runs?job={0}\">All runs</a>\
         <a class=\"button\" href=\"/timeline?job={0}\">Timeline</a></div></div>",
        url(name)
    );

    body.push_str(
        "<div class=\"grid2\"><section class=\"panel\"><h2>Schedule</h2><dl class=\"facts\">",
    );
    if let Some(info) = &info {
        match &info.schedule {
            Some(schedule) => {
                w!(
                    body,
                    "<dt>When</dt><dd>{}</dd><dt>Cron</dt><dd><code>{}</code> · {}</dd>",
                    esc(&words::describe(schedule).unwrap_or_else(|| schedule.clone())),
                    esc(schedule),
                    esc(&info.timezone)
                );
            }
            None => body.push_str("<dt>When</dt><dd>only when triggered (manual, chained)</dd>"),
        }
        let next = why
            .as_ref()
            .and_then(|why| why.next_fire)
            .or(info.next_fire);
        w!(
            body,
            "<dt>Next fire</dt><dd id=\"next\" data-live>{}</dd><dt>Plugin</dt><dd>{}</dd>",
            match next {
                Some(at) if info.enabled && !info.paused => format!(
                    "{} <span class=\"muted\">({})</span>",
                    fmt::when(at, zone),
                    fmt::relative(at, now)
                ),
                _ if info.paused => format!(
                    "none while paused (<code>pacer resume {}</code>)",
                    esc(name)
                ),
                _ => "–".to_owned(),
            },
            esc(&info.plugin)
        );
    }
    for (label, value) in &found.settings {
        w!(body, "<dt>{label}</dt><dd>{value}</dd>");
    }
    body.push_str("</dl></section>");

    stats_panel(&mut body, &found.stats, window, found.in_window.len());
    body.push_str("</div>");

    w!(
        body,
        "<section class=\"panel\" id=\"charts\" data-live><div class=\"panel-head\">\
         <h2>Durations over the last {}</h2>{}</div>",
        fmt::span(window),
        windows(name, window)
    );
    if found.in_window.is_empty() {
        body.push_str("<p class=\"empty-note\">No runs in this window.</p>");
    } else {
        w!(
            body,
            "<p class=\"hint\">Each dot is a run (click it); lines: \
             <span class=\"key p50\">p50</span> and <span class=\"key p95\">p95</span> \
             per slice.{}</p>{}<h3>Outcomes</h3>{}",
            if found.in_window.len() == CHART_RUNS as usize {
                format!(" The newest {CHART_RUNS} runs are drawn.")
            } else {
                String::new()
            },
            svg::durations(
                &found.in_window,
                chart_end - window,
                chart_end,
                BUCKETS,
                zone
            ),
            svg::outcomes(
                &found.in_window,
                chart_end - window,
                chart_end,
                BUCKETS,
                zone
            )
        );
        body.push_str(&legend());
        if let Some(oldest) = found.in_window.last()
            && found.in_window.len() == CHART_RUNS as usize
        {
            older_slices(&mut body, name, chart_end - window, oldest, window, zone);
        }
    }
    body.push_str("</section>");

    why_panel(&mut body, name, why.as_ref(), &found.recent, now, site);

    body.push_str("<section class=\"panel\" id=\"runs\" data-live><h2>Runs</h2>");
    runs_table(&mut body, &found.listed, false, now, zone);
    if let Some(link) = older_link(&found.listed, PER_PAGE, |before| {
        format!(
            "/jobs/{}?window={}&amp;before={before}",
            url(name),
            fmt::span(window)
        )
    }) {
        body.push_str(&link);
    }
    body.push_str("</section>");
    ok(&Page {
        title: name.to_owned(),
        nav: Nav::Jobs,
        body,
        live: before.is_none(),
        daemon,
        cluster: site.is_cluster(),
    })
}

/// Links to the runs of the window the charts could not draw (those due before `oldest`, the
/// oldest drawn), one per slice of the charts, each listing the slice's runs on one page: any
/// run of the window is then two clicks from the job's page, its dot or its slice and then it.
fn older_slices(
    body: &mut String,
    name: &str,
    from: i64,
    oldest: &WindowRun,
    window: i64,
    zone: &jiff::tz::TimeZone,
) {
    let slice = (window / BUCKETS as i64).max(1);
    // Runs due on the oldest drawn one's instant may be cut too: the last slice takes them in.
    let cut = oldest.scheduled_at + 1;
    w!(
        body,
        "<p class=\"hint older-slices\">Runs due before {} are not drawn; they are listed by \
         slice: ",
        fmt::short_when(oldest.scheduled_at, zone)
    );
    let mut since = from;
    let mut links = Vec::new();
    while since < cut {
        let until = (since + slice).min(cut);
        links.push(format!(
            "<a href=\"/runs?job={}&amp;since={}&amp;until={}&amp;limit={}\">{}</a>",
            url(name),
            url(&rfc3339_ms(since)),
            url(&rfc3339_ms(until)),
            super::runs::MAX_LIMIT,
            fmt::short_when(since, zone)
        ));
        since = until;
    }
    body.push_str(&links.join(" · "));
    body.push_str("</p>");
}

/// The job's settings that explain its runs.
fn settings(job: &crate::config::Job) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Pool", esc(&job.pool).into_owned()),
        ("Overlap", format!("{:?}", job.overlap).to_lowercase()),
        (
            "Timeout",
            job.timeout
                .map_or_else(|| "none".to_owned(), format_duration),
        ),
    ];
    if job.retries > 0 {
        out.push((
            "Retries",
            format!(
                "{} (back-off {}, at most {})",
                job.retries,
                format_duration(job.retry_backoff),
                format_duration(job.retry_backoff_max)
            ),
        ));
    }
    if let Some(jitter) = job.jitter {
        out.push((
            "Jitter",
            format!(
                "+{} of up to {}",
                format_duration(job.jitter_offset),
                format_duration(jitter)
            ),
        ));
    }
    if job.priority != 0 {
        out.push(("Priority", job.priority.to_string()));
    }
    for (label, targets) in [
        ("On success", &job.on_success),
        ("On failure", &job.on_failure),
    ] {
        if !targets.is_empty() {
            let links: Vec<String> = targets
                .iter()
                .map(|t| format!("<a href=\"/jobs/{}\">{}</a>", url(t), esc(t)))
                .collect();
            out.push((label, links.join(", ")));
        }
    }
    out.push((
        "Defined in",
        format!(
            "<code>{}:{}</code>",
            esc(&job.source.display().to_string()),
            job.line
        ),
    ));
    out
}

fn windows(name: &str, window: i64) -> String {
    let mut out = String::from("<span class=\"segmented\">");
    for choice in super::jobs::WINDOWS {
        let current = if choice == fmt::span(window) {
            " class=\"on\""
        } else {
            ""
        };
        w!(
            out,
            "<a{current} href=\"/jobs/{}?window={choice}\">{choice}</a>",
            url(name)
        );
    }
    out.push_str("</span>");
    out
}

fn stats_panel(body: &mut String, stats: &JobStats, window: i64, drawn: usize) {
    w!(
        body,
        "<section class=\"panel\" id=\"stats\" data-live><h2>Over the last {}</h2>\
         <div class=\"figures\">",
        fmt::span(window)
    );
    let figures = [
        ("Runs", stats.runs.to_string()),
        (
            "Success rate",
            if stats.runs > 0 {
                fmt::percent(stats.success_rate)
            } else {
                "–".to_owned()
            },
        ),
        ("Failed", stats.failed.to_string()),
        ("p50 duration", fmt::maybe_duration(stats.p50_ms)),
        ("p95 duration", fmt::maybe_duration(stats.p95_ms)),
        ("Longest", fmt::maybe_duration(stats.max_ms)),
        (
            "Mean queue wait",
            fmt::maybe_duration(stats.mean_queue_ms.map(|q| q.round() as i64)),
        ),
        ("Lateness p50", fmt::maybe_duration(stats.p50_late_ms)),
        ("Lateness p95", fmt::maybe_duration(stats.p95_late_ms)),
        ("Lateness max", fmt::maybe_duration(stats.max_late_ms)),
    ];
    for (label, value) in figures {
        w!(
            body,
            "<div class=\"figure\"><span class=\"value\">{value}</span>\
             <span class=\"label\">{label}</span></div>"
        );
    }
    body.push_str("</div>");
    if drawn == CHART_RUNS as usize {
        w!(
            body,
            "<p class=\"hint\">Over its newest {CHART_RUNS} runs in the window.</p>"
        );
    }
    body.push_str(
        "<p class=\"hint\">Runs that started and ended count; lateness is start minus due \
         time.</p></section>",
    );
}

/// One fire and what became of it, as `pacer why` lists them.
#[derive(Debug)]
struct Fire {
    due: i64,
    outcome: String,
    run: Option<i64>,
    reason: Option<String>,
}

fn why_panel(
    body: &mut String,
    name: &str,
    why: Option<&WhyInfo>,
    recent: &[RunRecord],
    now: i64,
    site: &Site,
) {
    // A fire waiting for a slot is both a `queued` record and one of the daemon's waiting
    // fires: it is listed once, with the daemon's word on what holds it.
    let waiting = why.map_or(&[][..], |why| why.waiting.as_slice());
    let mut fires: Vec<Fire> = recent
        .iter()
        .map(|run| {
            let mut reasons = Vec::new();
            match run.status {
                Status::Running => reasons.push(format!(
                    "running for {}",
                    fmt::maybe_duration(run.started_at.map(|s| now - s))
                )),
                Status::Queued => {
                    let held = waiting.iter().find(|w| w.run_id == Some(run.id));
                    let since = held.map_or(run.scheduled_at, |w| w.since);
                    let reason = held.map(|w| w.reason.clone()).or_else(|| run.error.clone());
                    reasons.push(format!(
                        "{}; {} so far",
                        reason.as_deref().unwrap_or("waiting for a slot"),
                        fmt::duration((now - since).max(0))
                    ));
                }
                Status::Succeeded => {}
                _ => reasons.extend(run.error.clone()),
            }
            if let Some(wait) = run.queue_ms.filter(|wait| *wait >= 1_000) {
                reasons.push(format!("waited {} for a slot", fmt::duration(wait)));
            }
            Fire {
                due: run.scheduled_at,
                outcome: run.status.as_str().to_owned(),
                run: Some(run.id),
                reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            }
        })
        .collect();
    if let Some(why) = why {
        fires.extend(why.paused_fires.iter().map(|at| Fire {
            due: *at,
            outcome: "paused".to_owned(),
            run: None,
            reason: Some(format!("the job was paused (pacer resume {name})")),
        }));
        let listed = |id: Option<i64>| id.is_some_and(|id| recent.iter().any(|r| r.id == id));
        fires.extend(
            why.waiting
                .iter()
                .filter(|w| !listed(w.run_id))
                .map(|waiting| Fire {
                    due: waiting.scheduled_at,
                    outcome: "queued".to_owned(),
                    run: waiting.run_id,
                    reason: Some(format!(
                        "{} for {} so far",
                        waiting.reason,
                        fmt::duration(now - waiting.since)
                    )),
                }),
        );
    }
    fires.sort_by(|a, b| b.due.cmp(&a.due).then(b.run.cmp(&a.run)));
    fires.truncate(FIRES as usize);
    body.push_str("<section class=\"panel\" id=\"why\" data-live><h2>Why: its recent fires</h2>");
    if why.is_none() {
        body.push_str(
            "<p class=\"hint\">pacerd did not answer: fires of a paused job and fires waiting \
             for a slot are not listed.</p>",
        );
    }
    if fires.is_empty() {
        body.push_str("<p class=\"empty-note\">No fires recorded yet.</p></section>");
        return;
    }
    body.push_str(
        "<table class=\"cards\"><thead><tr><th>Due</th><th>Outcome</th><th>Run</th>\
         <th>Why</th></tr></thead><tbody>",
    );
    for fire in &fires {
        w!(
            body,
            "<tr><td data-label=\"Due\">{}<div class=\"sub\">{}</div></td>\
             <td data-label=\"Outcome\">{}</td><td data-label=\"Run\">{}</td>\
             <td data-label=\"Why\" class=\"reason\">{}</td></tr>",
            fmt::short_when(fire.due, &site.zone),
            fmt::relative(fire.due, now),
            badge(&fire.outcome),
            fire.run.map_or_else(
                || "–".to_owned(),
                |id| format!("<a href=\"/runs/{id}\">#{id}</a>")
            ),
            esc(fire.reason.as_deref().unwrap_or_default())
        );
    }
    body.push_str("</tbody></table></section>");
}
