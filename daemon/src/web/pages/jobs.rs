//! `/`: every job at a glance: its schedule in words and as written, next fire, last status,
//! success rate and p95 duration over a chosen window, state, and a strip of its last runs.

use std::sync::Arc;

use super::{daemon_status, jobs_in_force, now_ms, ok};
use crate::control::JobInfo;
use crate::store::{JobStats, RunRecord};
use crate::web::fmt::{self, esc, url};
use crate::web::page::{Nav, Page, PageError, badge, legend, w};
use crate::web::query::Query;
use crate::web::server::Reply;
use crate::web::site::Site;
use crate::web::{svg, words};

/// Jobs per page.
const PER_PAGE: usize = 50;
/// Runs in a job's strip.
const STRIP: u32 = 24;
/// A job's figures cover at most its newest runs in the window, so a job that fires every
/// second costs a page no more than a daily one.
const STATS_RUNS: u32 = 2_000;
/// The windows offered; any duration from a minute to 90 days is accepted.
pub(crate) const WINDOWS: [&str; 4] = ["1h", "24h", "7d", "30d"];
const DAY: i64 = 86_400_000;

/// One job's row.
#[derive(Debug)]
struct Row {
    job: JobInfo,
    pool: Option<String>,
    recent: Vec<RunRecord>,
    stats: JobStats,
    capped: bool,
}

pub(crate) async fn page(site: &Arc<Site>, query: Option<&str>) -> Result<Reply, PageError> {
    let query = Query::parse(query, &["window", "q", "page"])?;
    let window = query
        .duration_ms("window", 60_000, 90 * DAY)?
        .unwrap_or(DAY);
    let filter = query.text("q").map(str::to_lowercase);
    let page_no = usize::try_from(query.number("page", 1..=1_000_000)?.unwrap_or(1)).unwrap_or(1);
    let (jobs, daemon) = tokio::join!(jobs_in_force(site), daemon_status(site));
    let jobs = jobs?;
    let total = jobs.len();
    let mut matching: Vec<JobInfo> = jobs
        .into_iter()
        .filter(|job| {
            filter
                .as_deref()
                .is_none_or(|f| job.name.to_lowercase().contains(f))
        })
        .collect();
    let pages = matching.len().div_ceil(PER_PAGE).max(1);
    if page_no > pages {
        return Err(PageError::NotFound(format!(
            "page {page_no} is past the last page ({pages})"
        )));
    }
    let shown: Vec<String> = matching
        .iter()
        .skip((page_no - 1) * PER_PAGE)
        .take(PER_PAGE)
        .map(|job| job.name.clone())
        .collect();
    let now = now_ms();
    let (overview, pools) = site
        .read(move |history, config| {
            let pools: Vec<Option<String>> = shown
                .iter()
                .map(|name| config.job(name).map(|job| job.pool.clone()))
                .collect();
            let overview = history.overview(&shown, STRIP, now - window, now + 1, STATS_RUNS)?;
            Ok((overview, pools))
        })
        .await?;
    if let Some(statuses) = &overview.statuses {
        // A node's engine knows the last status of the runs it ran; the cluster's database
        // knows every node's.
        for job in &mut matching {
            job.last_status = statuses.get(&job.name).copied();
        }
    }
    let failing = matching
        .iter()
        .filter(|job| {
            job.last_status
                .is_some_and(crate::model::Status::is_failure)
        })
        .count();
    let paused = matching.iter().filter(|job| job.paused).count();
    let rows: Vec<Row> = matching
        .into_iter()
        .skip((page_no - 1) * PER_PAGE)
        .take(PER_PAGE)
        .zip(pools)
        .zip(overview.recent.into_iter().zip(overview.figures))
        .map(|((job, pool), (recent, (stats, read)))| Row {
            pool,
            stats,
            capped: read == STATS_RUNS as usize,
            recent,
            job,
        })
        .collect();

    let window_text = fmt::span(window);
    let mut body = String::new();
    w!(
        body,
        "<div class=\"title-row\"><h1>Jobs</h1><div class=\"chips\" id=\"summary\" data-live>\
         <span class=\"chip\">{total} jobs</span>"
    );
    if let Some(status) = daemon.status() {
        w!(
            body,
            "<span class=\"chip run\">{} running</span>",
            status.in_flight
        );
    }
    if failing > 0 {
        w!(
            body,
            "<a class=\"chip bad\" href=\"/runs?status=failed\">{failing} failing</a>"
        );
    }
    if paused > 0 {
        w!(body, "<span class=\"chip\">{paused} paused</span>");
    }
    body.push_str("</div></div>");
    w!(
        body,
        "<form class=\"toolbar\" method=\"get\" action=\"/\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"Filter jobs by name\" \
         aria-label=\"Filter jobs by name\">\
         <input type=\"hidden\" name=\"window\" value=\"{window_text}\">\
         <button type=\"submit\">Filter</button><span class=\"spacer\"></span>\
         <span class=\"label\">Figures over</span><span class=\"segmented\">",
        esc(query.text("q").unwrap_or_default())
    );
    for choice in WINDOWS {
        let current = if choice == window_text {
            " class=\"on\""
        } else {
            ""
        };
        w!(
            body,
            "<a{current} href=\"/?window={choice}{}\">{choice}</a>",
            query
                .text("q")
                .map(|q| format!("&amp;q={}", url(q)))
                .unwrap_or_default()
        );
    }
    body.push_str("</span></form>");
    if rows.is_empty() {
        body.push_str("<p class=\"empty-note\">No jobs match.</p>");
    } else {
        table(&mut body, &rows, &window_text, now, site);
    }
    pager(&mut body, page_no, pages, &window_text, query.text("q"));
    body.push_str(&legend());
    ok(&Page {
        title: "Jobs".to_owned(),
        nav: Nav::Jobs,
        body,
        live: true,
        daemon,
        cluster: site.is_cluster(),
    })
}

fn table(body: &mut String, rows: &[Row], window: &str, now: i64, site: &Site) {
    w!(
        body,
        "<div class=\"panel\" id=\"jobs\" data-live><table class=\"jobs cards\"><thead><tr>\
         <th>Job</th><th>Schedule</th><th>Next fire</th><th>Last</th>\
         <th class=\"num\">Success <small>{window}</small></th>\
         <th class=\"num\">p95 <small>{window}</small></th><th>Recent runs</th></tr></thead><tbody>"
    );
    for row in rows {
        let job = &row.job;
        let name = esc(&job.name);
        w!(
            body,
            "<tr><td data-label=\"Job\"><a class=\"job\" href=\"/jobs/{}\">{name}</a>\
             <div class=\"sub\">{}{}</div>",
            url(&job.name),
            esc(&job.plugin),
            row.pool
                .as_deref()
                .filter(|pool| *pool != crate::config::defaults::POOL)
                .map(|pool| format!(" · pool {}", esc(pool)))
                .unwrap_or_default()
        );
        if let Some(problem) = &job.problem {
            w!(
                body,
                "<span class=\"state problem\">{}</span>",
                esc(problem)
            );
        } else if !job.enabled {
            body.push_str("<span class=\"state\">disabled</span>");
        } else if job.paused {
            body.push_str("<span class=\"state paused\">paused</span>");
        }
        body.push_str("</td><td data-label=\"Schedule\">");
        match &job.schedule {
            Some(schedule) => {
                match words::describe(schedule) {
                    Some(words) => w!(body, "{}", esc(&words)),
                    None => w!(body, "<code>{}</code>", esc(schedule)),
                }
                w!(
                    body,
                    "<div class=\"sub\"><code>{}</code> · {}</div>",
                    esc(schedule),
                    esc(&job.timezone)
                );
            }
            None => body.push_str("<span class=\"muted\">only when triggered</span>"),
        }
        body.push_str("</td><td data-label=\"Next fire\">");
        match job.next_fire {
            Some(at) if job.enabled && !job.paused => w!(
                body,
                "{}<div class=\"sub\">{}</div>",
                fmt::relative(at, now),
                fmt::short_when(at, &site.zone)
            ),
            _ => body.push_str("<span class=\"muted\">–</span>"),
        }
        body.push_str("</td><td data-label=\"Last\">");
        match job.last_status {
            Some(status) => body.push_str(&badge(status.as_str())),
            None => body.push_str("<span class=\"muted\">never ran</span>"),
        }
        let stats = &row.stats;
        let of = if row.capped { "last " } else { "" };
        if stats.runs > 0 {
            let class = if stats.success_rate < 0.9 {
                " bad"
            } else if stats.success_rate < 0.99 {
                " warn"
            } else {
                ""
            };
            w!(
                body,
                "</td><td class=\"num\" data-label=\"Success\"><span class=\"rate{class}\">{}</span>\
                 <div class=\"sub\">{of}{} run{}</div></td>\
                 <td class=\"num\" data-label=\"p95\">{}<div class=\"sub\">p50 {}</div></td>",
                fmt::percent(stats.success_rate),
                stats.runs,
                if stats.runs == 1 { "" } else { "s" },
                fmt::maybe_duration(stats.p95_ms),
                fmt::maybe_duration(stats.p50_ms)
            );
        } else {
            body.push_str(
                "</td><td class=\"num muted\" data-label=\"Success\">–</td>\
                 <td class=\"num muted\" data-label=\"p95\">–</td>",
            );
        }
        w!(
            body,
            "<td data-label=\"Recent\">{}</td></tr>",
            svg::strip(&row.recent, STRIP as usize, &site.zone)
        );
    }
    body.push_str("</tbody></table></div>");
}

fn pager(body: &mut String, page_no: usize, pages: usize, window: &str, filter: Option<&str>) {
    if pages <= 1 {
        return;
    }
    let link = |n: usize| {
        let mut href = format!("/?window={window}&amp;page={n}");
        if let Some(filter) = filter {
            w!(href, "&amp;q={}", url(filter));
        }
        href
    };
    body.push_str("<nav class=\"pager\">");
    if page_no > 1 {
        w!(body, "<a href=\"{}\">← Previous</a>", link(page_no - 1));
    }
    w!(body, "<span>page {page_no} of {pages}</span>");
    if page_no < pages {
        w!(body, "<a href=\"{}\">Next →</a>", link(page_no + 1));
    }
    body.push_str("</nav>");
}
