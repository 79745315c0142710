//! `/timeline`: runs per job over a window (an hour to a week), Gantt-like: each run a bar from
//! start to end after a hatched stretch for its wait for a slot, runs that overlap on lanes of
//! their own, skipped fires as diamonds, failures marked. Under it, per pool, the runs in flight
//! and waiting against the pool's cap: what the caps made of the load.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::tz::TimeZone;

use super::{daemon_status, jobs_in_force, now_ms, ok};
use crate::config::Config;
use crate::model::Status;
use crate::store::{Span, WindowRun};
use crate::time::{from_ms, rfc3339_ms};
use crate::web::fmt::{self, Px, esc, url};
use crate::web::history::TimelineQuery;
use crate::web::page::{Nav, Page, PageError, legend, w};
use crate::web::query::Query;
use crate::web::server::Reply;
use crate::web::site::Site;
use crate::web::svg::{TimeScale, run_title, time_ticks};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// The zoom levels offered; any span from an hour to a week is accepted.
const SPANS: [&str; 7] = ["1h", "3h", "6h", "12h", "24h", "3d", "7d"];
/// Job rows per page.
const ROWS: usize = 25;
/// Runs drawn per row; a busier row says so and asks to zoom in.
const ROW_RUNS: u32 = 1_500;
/// How far ahead of now a window may end (`end=`): enough to see the fires of the coming
/// months drawn as nothing, not so far that the page shows times it cannot label.
const LATEST_END: i64 = 366 * DAY;
/// Runs due this long before the window are still drawn if they ran into it.
const LOOKBACK: i64 = DAY;
/// Runs read for the load; a busier window draws the load of its newest part.
const LOAD_RUNS: u32 = 50_000;
/// Runs due this long before the window count in its load if they ran into it (and every
/// run still going does).
const LOAD_LOOKBACK: i64 = 2 * HOUR;

const LABEL_W: f64 = 190.0;
const PLOT_W: f64 = 890.0;
const WIDTH: f64 = LABEL_W + PLOT_W + 14.0;
const AXIS_H: f64 = 26.0;
const LANE_H: f64 = 16.0;
const ROW_PAD: f64 = 6.0;
/// Lanes per row: runs that overlap beyond this share the last lane.
const MAX_LANES: usize = 4;
/// Columns the load is measured in.
const LOAD_COLUMNS: usize = 445;
const LOAD_H: f64 = 62.0;

/// One job's row.
#[derive(Debug)]
struct Row {
    job: String,
    runs: Vec<WindowRun>,
    /// Runs were cut at this instant (older ones not drawn), when the row was too busy.
    cut_at: Option<i64>,
}

/// One pool's load.
#[derive(Debug)]
struct Load {
    pool: String,
    cap: u32,
    in_flight: Vec<u32>,
    waiting: Vec<u32>,
}

/// What the history holds for the page.
#[derive(Debug)]
struct Found {
    rows: Vec<Row>,
    active: usize,
    loads: Vec<Load>,
    load_cut_at: Option<i64>,
}

pub(crate) async fn page(site: &Arc<Site>, query: Option<&str>) -> Result<Reply, PageError> {
    let query = Query::parse(query, &["span", "end", "job", "page"])?;
    let span = query.duration_ms("span", HOUR, 7 * DAY)?.unwrap_or(DAY);
    let now = now_ms();
    let end = query.instant_within("end", from_ms(now), &site.zone, (0, now + LATEST_END))?;
    let to = end.unwrap_or(now);
    let from = to - span;
    let page_no = usize::try_from(query.number("page", 1..=100_000)?.unwrap_or(1)).unwrap_or(1);
    let filter = query.text("job").map(str::to_owned);
    let (jobs, daemon) = tokio::join!(jobs_in_force(site), daemon_status(site));
    let mut names: Vec<String> = jobs?.into_iter().map(|job| job.name).collect();
    if let Some(filter) = &filter {
        if names.iter().any(|name| name == filter) {
            names.retain(|name| name == filter);
        } else {
            let needle = filter.to_lowercase();
            names.retain(|name| name.to_lowercase().contains(&needle));
        }
    }
    names.sort();
    let found = site
        .read(move |history, config| {
            let read = history.timeline(&TimelineQuery {
                jobs: &names,
                skip: (page_no - 1) * ROWS,
                take: ROWS,
                from,
                to,
                rows_from: from - LOOKBACK,
                row_runs: ROW_RUNS,
                load_lookback: LOAD_LOOKBACK,
                load_runs: LOAD_RUNS,
            })?;
            let count = read.active;
            let spans = read.spans;
            let rows = read
                .rows
                .into_iter()
                .map(|(job, mut runs)| {
                    let cut_at = (runs.len() == ROW_RUNS as usize)
                        .then(|| runs.last().map(|r| r.scheduled_at))
                        .flatten();
                    runs.retain(|run| end_of(run, now) >= from);
                    Row { job, runs, cut_at }
                })
                .collect();
            let load_cut_at = (spans.len() >= LOAD_RUNS as usize)
                .then(|| spans.iter().filter_map(|s| s.started_at).min())
                .flatten();
            Ok(Found {
                rows,
                active: count,
                loads: loads(&spans, config, from, to, now),
                load_cut_at,
            })
        })
        .await?;
    if page_no > 1 && found.rows.is_empty() {
        return Err(PageError::NotFound(format!(
            "page {page_no} is past the last page of this window"
        )));
    }

    let zone = &site.zone;
    let mut body = String::new();
    w!(
        body,
        "<div class=\"title-row\"><h1>Timeline</h1><div class=\"chips\">\
         <span class=\"chip\">{}</span></div></div>",
        fmt::window(from, to, now, zone)
    );
    controls(&mut body, &query, span, end, now);
    body.push_str("<section class=\"panel\" id=\"timeline\" data-live>");
    if found.rows.is_empty() {
        body.push_str("<p class=\"empty-note\">No runs in this window.</p>");
    } else {
        body.push_str("<div class=\"scroll\">");
        gantt(
            &mut body,
            &found.rows,
            from,
            to,
            now,
            span,
            filter.as_deref(),
            zone,
        );
        body.push_str("</div>");
    }
    let pages = found.active.div_ceil(ROWS).max(1);
    if pages > 1 {
        body.push_str("<nav class=\"pager\">");
        let link = |n: usize| {
            let mut href = base_href(&query, &["span", "end", "job"]);
            w!(href, "page={n}");
            href
        };
        if page_no > 1 {
            w!(
                body,
                "<a href=\"{}\">← Previous jobs</a>",
                link(page_no - 1)
            );
        }
        w!(
            body,
            "<span>jobs {}–{} of {} with runs in this window</span>",
            (page_no - 1) * ROWS + 1,
            ((page_no - 1) * ROWS + found.rows.len()),
            found.active
        );
        if page_no < pages {
            w!(body, "<a href=\"{}\">Next jobs →</a>", link(page_no + 1));
        }
        body.push_str("</nav>");
    }
    body.push_str(&legend());
    body.push_str(
        "<p class=\"hint\">Hatched: waiting for a slot. ◆ a skipped fire. ▲ a failure. \
         Runs that overlap get lanes of their own. Click a run for its page; click a time to \
         zoom in there.</p></section>",
    );
    body.push_str(
        "<section class=\"panel\" id=\"load\" data-live><h2>Runs in flight per pool</h2>",
    );
    if found.loads.is_empty() {
        body.push_str("<p class=\"empty-note\">No runs held a slot in this window.</p>");
    } else {
        body.push_str("<div class=\"scroll\">");
        load_chart(
            &mut body,
            &found.loads,
            from,
            to,
            now,
            found.load_cut_at,
            zone,
        );
        body.push_str(
            "</div><p class=\"hint\">Filled: runs in flight; line: fires waiting \
                       for a slot; dashed: the pool's cap.</p>",
        );
    }
    body.push_str("</section>");
    ok(&Page {
        title: "Timeline".to_owned(),
        nav: Nav::Timeline,
        body,
        live: end.is_none(),
        daemon,
        cluster: site.is_cluster(),
    })
}

/// When a run stopped holding its place on the timeline.
fn end_of(run: &WindowRun, now: i64) -> i64 {
    match (run.started_at, run.finished_at) {
        (_, Some(finished)) => finished,
        (Some(_), None) => now,
        // Skipped, or waiting with no start yet: a waiting record lasts until now.
        (None, None) if run.status == Status::Queued => now,
        (None, None) => run.scheduled_at,
    }
}

/// `/timeline?` with the query's `keys` kept, ready for one more parameter.
fn base_href(query: &Query, keys: &[&str]) -> String {
    let mut href = String::from("/timeline?");
    for key in keys {
        if let Some(value) = query.text(key) {
            w!(href, "{key}={}&amp;", url(value));
        }
    }
    href
}

fn controls(body: &mut String, query: &Query, span: i64, end: Option<i64>, now: i64) {
    body.push_str("<div class=\"toolbar\"><span class=\"segmented\" aria-label=\"zoom\">");
    for choice in SPANS {
        let current = if fmt::span(span) == choice {
            " class=\"on\""
        } else {
            ""
        };
        w!(
            body,
            "<a{current} href=\"{}span={choice}\">{choice}</a>",
            base_href(query, &["end", "job"])
        );
    }
    let to = end.unwrap_or(now);
    body.push_str("</span><span class=\"segmented\" aria-label=\"move\">");
    // A window ends in 1970 at the earliest (`end=` refuses earlier ones).
    if to - span / 2 >= 0 {
        w!(
            body,
            "<a href=\"{0}end={1}\" id=\"earlier\">← Earlier</a>",
            base_href(query, &["span", "job"]),
            url(&rfc3339_ms(to - span / 2))
        );
    }
    if end.is_some() {
        let later = to + span / 2;
        if later >= now {
            w!(
                body,
                "<a href=\"{}\" id=\"later\">Later →</a>",
                base_href(query, &["span", "job"])
                    .trim_end_matches("&amp;")
                    .trim_end_matches('?')
            );
        } else {
            w!(
                body,
                "<a href=\"{}end={}\" id=\"later\">Later →</a>",
                base_href(query, &["span", "job"]),
                url(&rfc3339_ms(later))
            );
        }
        w!(
            body,
            "<a href=\"{}\">Now</a>",
            base_href(query, &["span", "job"])
                .trim_end_matches("&amp;")
                .trim_end_matches('?')
        );
    }
    w!(
        body,
        "</span><form method=\"get\" action=\"/timeline\" class=\"inline\">\
         <input type=\"hidden\" name=\"span\" value=\"{}\">{}\
         <input type=\"search\" name=\"job\" value=\"{}\" placeholder=\"Job name\" \
         aria-label=\"Only jobs named\"><button type=\"submit\">Show</button></form></div>",
        fmt::span(span),
        end.map(|end| format!(
            "<input type=\"hidden\" name=\"end\" value=\"{}\">",
            esc(&rfc3339_ms(end))
        ))
        .unwrap_or_default(),
        esc(query.text("job").unwrap_or_default())
    );
}

/// The zoom level below `span`, for clicks on the axis.
fn zoom_in(span: i64) -> i64 {
    match span {
        s if s > 3 * DAY => DAY,
        s if s > DAY => 12 * HOUR,
        s if s > 6 * HOUR => 3 * HOUR,
        _ => HOUR,
    }
}

/// Assigns each run a lane so runs that overlap are side by side; returns the lanes used.
fn lanes(runs: &[WindowRun], now: i64) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| begin_of(&runs[i]));
    let mut lane_ends: Vec<i64> = Vec::new();
    let mut lane_of = vec![0; runs.len()];
    for i in order {
        let run = &runs[i];
        let (begin, end) = (begin_of(run), end_of(run, now).max(begin_of(run)));
        let lane = match lane_ends.iter().position(|&e| e <= begin) {
            Some(lane) => lane,
            None if lane_ends.len() < MAX_LANES => {
                lane_ends.push(i64::MIN);
                lane_ends.len() - 1
            }
            None => MAX_LANES - 1,
        };
        lane_ends[lane] = lane_ends[lane].max(end);
        lane_of[i] = lane;
    }
    (lane_of, lane_ends.len().max(1))
}

/// When a run began to take room on the timeline: its wait for a slot, else its start.
fn begin_of(run: &WindowRun) -> i64 {
    match run.started_at {
        Some(started) => started - run.queue_ms.unwrap_or(0).max(0),
        None => run.waiting_since().unwrap_or(run.scheduled_at),
    }
}

#[allow(clippy::too_many_arguments)]
fn gantt(
    body: &mut String,
    rows: &[Row],
    from: i64,
    to: i64,
    now: i64,
    span: i64,
    filter: Option<&str>,
    zone: &TimeZone,
) {
    let scale = TimeScale {
        from,
        to,
        x0: LABEL_W,
        width: PLOT_W,
    };
    let laid: Vec<(Vec<usize>, usize)> = rows.iter().map(|row| lanes(&row.runs, now)).collect();
    let height: f64 = AXIS_H
        + laid
            .iter()
            .map(|(_, n)| *n as f64 * LANE_H + ROW_PAD)
            .sum::<f64>()
        + 4.0;
    w!(
        body,
        "<svg class=\"gantt\" viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\" \
         aria-label=\"runs per job over time\"><defs><pattern id=\"hatch\" width=\"5\" \
         height=\"5\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
         <rect class=\"hatch-bg\" width=\"5\" height=\"5\"/><line class=\"hatch-line\" x1=\"0\" \
         y1=\"0\" x2=\"0\" y2=\"5\"/></pattern></defs>"
    );
    let zoomed = zoom_in(span);
    for (at, label) in time_ticks(from, to, 9, zone) {
        let x = scale.x(at);
        let end = rfc3339_ms((at + zoomed / 2).min(now));
        let mut href = format!("/timeline?span={}&amp;end={}", fmt::span(zoomed), url(&end));
        if let Some(filter) = filter {
            w!(href, "&amp;job={}", url(filter));
        }
        w!(
            body,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{AXIS_H}\" y2=\"{height:.0}\"/>\
             <a href=\"{href}\"><text class=\"axis tick-link\" x=\"{x:.1}\" y=\"16\" \
             text-anchor=\"middle\">{}<title>zoom in here</title></text></a>",
            esc(&label)
        );
    }
    let mut y = AXIS_H;
    for (row, (lane_of, lane_count)) in rows.iter().zip(&laid) {
        let row_h = *lane_count as f64 * LANE_H + ROW_PAD;
        w!(
            body,
            "<line class=\"row-line\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <a href=\"/jobs/{}\"><text class=\"row-label\" x=\"6\" y=\"{:.1}\">{}\
             <title>{}</title></text></a>",
            url(&row.job),
            y + ROW_PAD / 2.0 + LANE_H - 4.0,
            esc(&fmt::first_line(&row.job, 24)),
            esc(&row.job)
        );
        if let Some(cut) = row.cut_at.filter(|cut| *cut > from) {
            w!(
                body,
                "<rect class=\"dense\" x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\">\
                 <title>more than {ROW_RUNS} runs in this window: zoom in to see each</title></rect>",
                y + ROW_PAD / 2.0,
                scale.x(cut) - LABEL_W,
                row_h - ROW_PAD
            );
            if scale.x(cut) - LABEL_W > 150.0 {
                w!(
                    body,
                    "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">too many runs to draw: zoom in</text>",
                    LABEL_W + 8.0,
                    y + ROW_PAD / 2.0 + LANE_H - 4.0
                );
            }
        }
        for (run, lane) in row.runs.iter().zip(lane_of) {
            let top = y + ROW_PAD / 2.0 + *lane as f64 * LANE_H;
            bar(body, run, &scale, top, now, zone);
        }
        y += row_h;
    }
    if (from..to).contains(&now) {
        let x = scale.x(now);
        w!(
            body,
            "<line class=\"now\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{AXIS_H}\" y2=\"{height:.0}\"/>"
        );
    }
    body.push_str("</svg>");
}

/// One run: its wait, its run time, a diamond if it never started, a mark if it failed.
fn bar(body: &mut String, run: &WindowRun, scale: &TimeScale, top: f64, now: i64, zone: &TimeZone) {
    let title = esc(&run_title(run, None, zone)).into_owned();
    let status = run.status.as_str();
    let h = Px(LANE_H - 3.0);
    let y = Px(top);
    w!(body, "<a href=\"/runs/{}\">", run.id);
    match run.started_at {
        None if let Some(since) = run.waiting_since() => {
            let x = scale.x(since);
            w!(
                body,
                "<rect class=\"wait\" x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{h}\">\
                 <title>{title}</title></rect>",
                Px(x),
                Px((scale.x(now) - x).max(2.0))
            );
        }
        None => {
            let x = scale.x(run.scheduled_at);
            let mid = top + h.0 / 2.0;
            w!(
                body,
                "<path class=\"marker st-{status}\" d=\"M{} {}l4.5 4.5-4.5 4.5-4.5-4.5z\">\
                 <title>{title}</title></path>",
                Px(x),
                Px(mid - 4.5)
            );
        }
        Some(started) => {
            let waited = run.queue_ms.unwrap_or(0);
            if waited > 0 {
                let x = scale.x(started - waited);
                let width = scale.x(started) - x;
                if width >= 0.5 {
                    w!(
                        body,
                        "<rect class=\"wait\" x=\"{}\" y=\"{y}\" width=\"{}\" \
                         height=\"{h}\"><title>{title}</title></rect>",
                        Px(x),
                        Px(width)
                    );
                }
            }
            let x = scale.x(started);
            let width = (scale.x(run.finished_at.unwrap_or(now)) - x).max(2.0);
            w!(
                body,
                "<rect class=\"run st-{status}\" x=\"{}\" y=\"{y}\" width=\"{}\" \
                 height=\"{h}\" rx=\"2\"><title>{title}</title></rect>",
                Px(x),
                Px(width)
            );
            if run.status.is_failure() {
                w!(
                    body,
                    "<path class=\"fail-mark\" d=\"M{} {}l4 -5h-8z\"><title>{title}</title></path>",
                    Px(x + width),
                    Px(top + 1.0)
                );
            }
        }
    }
    body.push_str("</a>");
}

/// Per pool (in the config's order, then pools of removed jobs), the runs in flight and
/// waiting in each column of the window: the highest count the column saw.
fn loads(spans: &[Span], config: &Config, from: i64, to: i64, now: i64) -> Vec<Load> {
    // Each job's pool is found once, not once per run: a window holds thousands of runs of
    // the same few jobs.
    let mut pool_of: HashMap<&str, usize> = HashMap::new();
    let mut pools: Vec<&str> = Vec::new();
    let mut events: Vec<Events> = Vec::new();
    for span in spans {
        let pool = *pool_of.entry(&span.job).or_insert_with(|| {
            let name = config
                .job(&span.job)
                .map_or(crate::config::defaults::POOL, |j| j.pool.as_str());
            pools.iter().position(|p| *p == name).unwrap_or_else(|| {
                pools.push(name);
                events.push(Events::default());
                pools.len() - 1
            })
        });
        let list = &mut events[pool];
        // Waiting until it started (or until now, while it waits), then running.
        let waited_until = span.started_at.unwrap_or(now);
        if span.waiting_from < waited_until {
            list.waiting.push(event(span.waiting_from, true));
            list.waiting.push(event(waited_until, false));
        }
        if let Some(started) = span.started_at {
            list.running.push(event(started, true));
            list.running
                .push(event(span.finished_at.unwrap_or(now), false));
        }
    }
    let mut order: Vec<usize> = (0..pools.len()).collect();
    order.sort_by_key(|&i| {
        (
            config
                .pools
                .keys()
                .position(|p| p == pools[i])
                .unwrap_or(usize::MAX),
            pools[i],
        )
    });
    order
        .into_iter()
        .map(|i| {
            let pool = pools[i];
            let list = &mut events[i];
            list.running.sort_unstable();
            list.waiting.sort_unstable();
            let cap = config
                .pools
                .get(pool)
                .and_then(|p| p.max_concurrency)
                .unwrap_or(config.daemon.max_concurrency);
            Load {
                in_flight: sweep(&list.running, from, to),
                waiting: sweep(&list.waiting, from, to),
                pool: pool.to_owned(),
                cap,
            }
        })
        .collect()
}

/// A pool's starts and ends of runs in flight and of waits, each an [`event`].
#[derive(Debug, Default)]
struct Events {
    running: Vec<i64>,
    waiting: Vec<i64>,
}

/// A start (`true`) or an end at `at` as one number, so that thousands sort as plain integers:
/// by instant, and at the same instant ends before starts (a slot handed on is not two runs).
fn event(at: i64, start: bool) -> i64 {
    at * 2 + i64::from(start)
}

/// The highest level per column of `events` (each an [`event`], sorted): the level carried
/// into a column counts in it, and so does each level reached inside it.
fn sweep(events: &[i64], from: i64, to: i64) -> Vec<u32> {
    let width = ((to - from) as f64 / LOAD_COLUMNS as f64).max(1.0);
    let last = LOAD_COLUMNS - 1;
    let column = |at: i64| (((at - from) as f64 / width) as usize).min(last);
    let count = |level: i64| u32::try_from(level.max(0)).unwrap_or(u32::MAX);
    let mut peaks = vec![0u32; LOAD_COLUMNS];
    let mut level: i64 = 0;
    let mut current = 0;
    for &key in events {
        let at = key.div_euclid(2);
        if at >= to {
            break;
        }
        if at >= from {
            let col = column(at);
            while current < col {
                current += 1;
                peaks[current] = peaks[current].max(count(level));
            }
        }
        level += if key.rem_euclid(2) == 1 { 1 } else { -1 };
        if at >= from {
            peaks[current] = peaks[current].max(count(level));
        } else {
            peaks[0] = count(level);
        }
    }
    while current < last {
        current += 1;
        peaks[current] = peaks[current].max(count(level));
    }
    peaks
}

fn load_chart(
    body: &mut String,
    loads: &[Load],
    from: i64,
    to: i64,
    now: i64,
    cut_at: Option<i64>,
    zone: &TimeZone,
) {
    let scale = TimeScale {
        from,
        to,
        x0: LABEL_W,
        width: PLOT_W,
    };
    let height = AXIS_H + loads.len() as f64 * (LOAD_H + 10.0);
    w!(
        body,
        "<svg class=\"gantt load\" viewBox=\"0 0 {WIDTH} {height:.0}\" role=\"img\" \
         aria-label=\"runs in flight per pool\">"
    );
    for (at, label) in time_ticks(from, to, 9, zone) {
        let x = scale.x(at);
        w!(
            body,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{AXIS_H}\" y2=\"{height:.0}\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"16\" text-anchor=\"middle\">{}</text>",
            esc(&label)
        );
    }
    let column_w = PLOT_W / LOAD_COLUMNS as f64;
    let mut y = AXIS_H + 6.0;
    for load in loads {
        let peak = load
            .in_flight
            .iter()
            .chain(&load.waiting)
            .copied()
            .max()
            .unwrap_or(0)
            .max(load.cap);
        let top = f64::from(peak) * 1.15;
        let level_y = |n: u32| y + LOAD_H - LOAD_H * f64::from(n) / top;
        w!(
            body,
            "<text class=\"row-label\" x=\"6\" y=\"{:.1}\">{}</text>\
             <text class=\"axis\" x=\"6\" y=\"{:.1}\">cap {}</text>",
            y + 16.0,
            esc(&load.pool),
            y + 32.0,
            load.cap
        );
        let mut area = format!("M{} {}", Px(LABEL_W), Px(y + LOAD_H));
        for (i, n) in load.in_flight.iter().enumerate() {
            let x = LABEL_W + i as f64 * column_w;
            w!(area, "L{} {}H{}", Px(x), Px(level_y(*n)), Px(x + column_w));
        }
        w!(area, "V{}Z", Px(y + LOAD_H));
        w!(body, "<path class=\"inflight\" d=\"{area}\"/>");
        if load.waiting.iter().any(|n| *n > 0) {
            let mut line = String::new();
            for (i, n) in load.waiting.iter().enumerate() {
                let x = LABEL_W + i as f64 * column_w;
                let cmd = if i == 0 { 'M' } else { 'L' };
                w!(
                    line,
                    "{cmd}{} {}H{}",
                    Px(x),
                    Px(level_y(*n)),
                    Px(x + column_w)
                );
            }
            w!(body, "<path class=\"waiting\" d=\"{line}\"/>");
        }
        let cap_y = level_y(load.cap);
        w!(
            body,
            "<line class=\"cap\" x1=\"{LABEL_W}\" x2=\"{:.1}\" y1=\"{cap_y:.1}\" y2=\"{cap_y:.1}\">\
             <title>cap {}</title></line><line class=\"row-line\" x1=\"0\" x2=\"{WIDTH}\" \
             y1=\"{:.1}\" y2=\"{:.1}\"/>",
            LABEL_W + PLOT_W,
            load.cap,
            y + LOAD_H + 4.0,
            y + LOAD_H + 4.0
        );
        y += LOAD_H + 10.0;
    }
    if let Some(cut) = cut_at.filter(|cut| *cut > from) {
        w!(
            body,
            "<rect class=\"dense\" x=\"{LABEL_W}\" y=\"{AXIS_H}\" width=\"{:.1}\" height=\"{:.1}\">\
             <title>more than {LOAD_RUNS} runs in this window: the load before this is not \
             drawn; zoom in</title></rect>",
            scale.x(cut) - LABEL_W,
            height - AXIS_H
        );
    }
    if (from..to).contains(&now) {
        let x = scale.x(now);
        w!(
            body,
            "<line class=\"now\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{AXIS_H}\" y2=\"{height:.0}\"/>"
        );
    }
    body.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_counts_each_column_at_its_peak() {
        // Two runs in flight from 10 to 30 and 20 to 40.
        let mut events = vec![
            event(10, true),
            event(30, false),
            event(20, true),
            event(40, false),
        ];
        events.sort_unstable();
        let running = sweep(&events, 0, LOAD_COLUMNS as i64 * 1_000);
        // Columns are a second wide here: all four instants fall in column 0.
        assert_eq!(running[0], 2);
        assert_eq!(running[1], 0);
        let wide = sweep(&events, 0, LOAD_COLUMNS as i64);
        assert_eq!(
            &wide[..45],
            {
                let mut expected = vec![0; 45];
                for (i, e) in expected.iter_mut().enumerate() {
                    *e = match i {
                        10..=19 => 1,
                        20..=29 => 2,
                        30..=39 => 1,
                        40 => 0,
                        _ => 0,
                    };
                }
                // Column 30 sees the first run end and the second still going; column 40 both gone.
                expected[30] = 2;
                expected[40] = 1;
                expected
            }
            .as_slice()
        );
        // A slot handed on at an instant is one run, not two.
        let mut handed_on = vec![event(10, true), event(20, false), event(20, true)];
        handed_on.sort_unstable();
        assert_eq!(sweep(&handed_on, 0, LOAD_COLUMNS as i64)[20], 1);
    }
}
