//! Charts as inline SVG, drawn on the server: a strip of recent runs, durations over time with
//! p50/p95 lines, outcomes over time, and the time axis the timeline shares. Colours come from
//! the stylesheet through classes (`st-failed`), never from inline styles, which the page's
//! Content-Security-Policy forbids. Every run drawn is a link to its page with its details as
//! the hover text.

use jiff::tz::TimeZone;

use super::fmt::{self, esc};
use super::page::w;
use crate::store::RunRecord;
use crate::store::{WindowRun, percentile};
use crate::time::from_ms;

/// Maps instants in `[from, to)` onto `x0..x0 + width`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeScale {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) x0: f64,
    pub(crate) width: f64,
}

impl TimeScale {
    /// The x of instant `ms`, clamped to the plot.
    pub(crate) fn x(&self, ms: i64) -> f64 {
        let span = (self.to - self.from).max(1) as f64;
        let share = ((ms - self.from) as f64 / span).clamp(0.0, 1.0);
        self.x0 + share * self.width
    }
}

/// Tick steps the time axis picks from, shortest first.
const STEPS: [i64; 14] = [
    60_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
    2_592_000_000,
];

/// Ticks for `[from, to)`: at most `max` instants on round local times, each with its label
/// (the date where the day changes or the step is a day or more, else the time).
pub(crate) fn time_ticks(from: i64, to: i64, max: usize, zone: &TimeZone) -> Vec<(i64, String)> {
    let span = (to - from).max(1);
    let step = STEPS
        .into_iter()
        .find(|step| span / step < max as i64)
        .unwrap_or(STEPS[STEPS.len() - 1]);
    let offset = zone.to_offset(from_ms(from)).seconds() as i64 * 1_000;
    let mut at = (from + offset).div_euclid(step) * step - offset;
    if at < from {
        at += step;
    }
    let mut ticks = Vec::new();
    let mut previous_day = None;
    while at < to {
        let zoned = from_ms(at).to_zoned(zone.clone());
        let day = zoned.date();
        let label = if step >= 86_400_000 || previous_day.is_some_and(|d| d != day) {
            zoned.strftime("%b %d").to_string()
        } else if previous_day.is_none() && span > 86_400_000 {
            zoned.strftime("%b %d %H:%M").to_string()
        } else {
            zoned.strftime("%H:%M").to_string()
        };
        previous_day = Some(day);
        ticks.push((at, label));
        at += step;
    }
    ticks
}

/// A run's hover text: what, when, how long, and why it failed when `error` is known.
pub(crate) fn run_title(run: &WindowRun, error: Option<&str>, zone: &TimeZone) -> String {
    let mut title = format!(
        "#{} {} · {} · {}",
        run.id,
        run.job,
        run.status.as_str().replace('_', " "),
        run.trigger
    );
    if run.attempt > 1 {
        w!(title, " #{}", run.attempt);
    }
    w!(title, "\ndue {}", fmt::when(run.scheduled_at, zone));
    if let Some(ms) = run.duration_ms() {
        w!(title, "\nran {}", fmt::duration(ms));
    }
    if let Some(wait) = run.queue_ms.filter(|wait| *wait > 0) {
        w!(title, "\nwaited {} for a slot", fmt::duration(wait));
    }
    if let Some(since) = run.waiting_since() {
        w!(
            title,
            "\nwaiting for a slot since {}",
            fmt::when(since, zone)
        );
    }
    if let Some(error) = error {
        w!(title, "\n{}", fmt::first_line(error, 120));
    }
    title
}

/// The last runs of a job as a strip of blocks, oldest left, each a link to its run.
pub(crate) fn strip(runs: &[RunRecord], slots: usize, zone: &TimeZone) -> String {
    const W: usize = 9;
    let width = slots * W;
    let mut out = format!(
        "<svg class=\"strip\" viewBox=\"0 0 {width} 20\" width=\"{width}\" height=\"20\" \
         role=\"img\" aria-label=\"last {} runs\">",
        runs.len()
    );
    let pad = slots.saturating_sub(runs.len());
    for slot in 0..pad {
        w!(
            out,
            "<rect class=\"empty\" x=\"{}\" y=\"2\" width=\"7\" height=\"16\" rx=\"1.5\"/>",
            slot * W
        );
    }
    for (i, run) in runs.iter().rev().enumerate() {
        w!(
            out,
            "<a href=\"/runs/{}\"><rect class=\"st-{}\" x=\"{}\" y=\"2\" width=\"7\" \
             height=\"16\" rx=\"1.5\"><title>{}</title></rect></a>",
            run.id,
            run.status.as_str(),
            (pad + i) * W,
            esc(&run_title(
                &WindowRun::from(run),
                run.error.as_deref(),
                zone
            ))
        );
    }
    out.push_str("</svg>");
    out
}

/// A chart's frame: its size and the plot inside the margins.
const CHART_W: f64 = 800.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;

/// Durations over `[from, to)`: each run a dot (a link, coloured by status), and the p50 and
/// p95 of each of `buckets` slices as lines.
pub(crate) fn durations(
    runs: &[WindowRun],
    from: i64,
    to: i64,
    buckets: usize,
    zone: &TimeZone,
) -> String {
    const H: f64 = 230.0;
    const TOP: f64 = 14.0;
    const BOTTOM: f64 = 26.0;
    let plot_h = H - TOP - BOTTOM;
    let scale = TimeScale {
        from,
        to,
        x0: LEFT,
        width: CHART_W - LEFT - RIGHT,
    };
    let mut sorted: Vec<i64> = runs.iter().filter_map(WindowRun::duration_ms).collect();
    sorted.sort_unstable();
    // The 99th percentile sets the scale, so one outlier does not flatten the rest; longer
    // runs are drawn on the top edge.
    let highest = percentile(&sorted, 99).unwrap_or(1_000);
    let step = STEPS_MS
        .into_iter()
        .find(|step| highest * 10 / 9 <= step * 4)
        .unwrap_or(STEPS_MS[STEPS_MS.len() - 1]);
    let lines = ((highest * 10 / 9 + step - 1) / step).clamp(1, 4);
    let top = (step * lines) as f64;
    let y = |ms: i64| TOP + plot_h * (1.0 - (ms as f64 / top).min(1.0));
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_W} {H}\" role=\"img\" \
         aria-label=\"run durations over time\">"
    );
    for i in 0..=lines {
        let value = step * i;
        let yy = y(value);
        w!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            CHART_W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt::axis_duration(value)
        );
    }
    axis(&mut out, &scale, H - BOTTOM, zone);
    // The percentile lines go under the dots, so that every run stays a click away.
    let slice = ((to - from) / buckets.max(1) as i64).max(1);
    for (class, pct) in [("p50", 50), ("p95", 95)] {
        let mut points = Vec::new();
        for b in 0..buckets {
            let start = from + b as i64 * slice;
            let mut inside: Vec<i64> = runs
                .iter()
                .filter(|r| {
                    r.started_at
                        .is_some_and(|s| s >= start && s < start + slice)
                })
                .filter_map(WindowRun::duration_ms)
                .collect();
            inside.sort_unstable();
            if let Some(value) = percentile(&inside, pct) {
                points.push(format!("{:.1},{:.1}", scale.x(start + slice / 2), y(value)));
            }
        }
        if points.len() > 1 {
            w!(
                out,
                "<polyline class=\"line {class}\" points=\"{}\"/>",
                points.join(" ")
            );
        }
    }
    for run in runs {
        let (Some(ms), Some(started)) = (run.duration_ms(), run.started_at) else {
            continue;
        };
        w!(
            out,
            "<a href=\"/runs/{}\"><circle class=\"dot st-{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.2\">\
             <title>{}</title></circle></a>",
            run.id,
            run.status.as_str(),
            scale.x(started),
            y(ms),
            esc(&run_title(run, None, zone))
        );
    }
    out.push_str("</svg>");
    out
}

/// Outcomes over `[from, to)`: per slice, a bar of runs split by status, tallest slice full
/// height.
pub(crate) fn outcomes(
    runs: &[WindowRun],
    from: i64,
    to: i64,
    buckets: usize,
    zone: &TimeZone,
) -> String {
    const H: f64 = 130.0;
    const TOP: f64 = 8.0;
    const BOTTOM: f64 = 26.0;
    let plot_h = H - TOP - BOTTOM;
    let scale = TimeScale {
        from,
        to,
        x0: LEFT,
        width: CHART_W - LEFT - RIGHT,
    };
    let slice = ((to - from) / buckets.max(1) as i64).max(1);
    let mut counts: Vec<Vec<(&'static str, usize)>> = vec![Vec::new(); buckets];
    for run in runs {
        let b = usize::try_from((run.scheduled_at - from) / slice).unwrap_or(usize::MAX);
        if let Some(bucket) = counts.get_mut(b) {
            let name = run.status.as_str();
            match bucket.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => bucket.push((name, 1)),
            }
        }
    }
    let tallest = counts
        .iter()
        .map(|b| b.iter().map(|(_, c)| c).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_W} {H}\" role=\"img\" \
         aria-label=\"outcomes over time\">"
    );
    w!(
        out,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{tallest}</text>\
         <line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{TOP}\" y2=\"{TOP}\"/>",
        LEFT - 6.0,
        TOP + 4.0,
        CHART_W - RIGHT
    );
    axis(&mut out, &scale, H - BOTTOM, zone);
    let bar_w = (scale.width / buckets.max(1) as f64 - 2.0).max(1.0);
    let order = super::page::legend_statuses();
    for (b, bucket) in counts.iter_mut().enumerate() {
        bucket.sort_by_key(|(name, _)| order.iter().position(|o| o == name));
        let total: usize = bucket.iter().map(|(_, c)| c).sum();
        let x = scale.x(from + b as i64 * slice) + 1.0;
        let mut y = H - BOTTOM;
        for (name, count) in bucket.iter() {
            let h = plot_h * *count as f64 / tallest as f64;
            y -= h;
            w!(
                out,
                "<rect class=\"st-{name}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" \
                 height=\"{h:.1}\"><title>{count} {} of {total}</title></rect>",
                name.replace('_', " ")
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// The time axis along `y`, with grid lines up the plot.
fn axis(out: &mut String, scale: &TimeScale, y: f64, zone: &TimeZone) {
    w!(
        out,
        "<line class=\"axis-line\" x1=\"{}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>",
        scale.x0,
        scale.x0 + scale.width
    );
    for (at, label) in time_ticks(scale.from, scale.to, 8, zone) {
        let x = scale.x(at);
        w!(
            out,
            "<line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y:.1}\" y2=\"{:.1}\"/>\
             <text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y + 4.0,
            y + 16.0,
            esc(&label)
        );
    }
}

/// Steps of a duration axis: round figures from 10 ms to a day.
const STEPS_MS: [i64; 24] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000,
    300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
    86_400_000,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_round_local_times() {
        let zone = TimeZone::get("Asia/Kolkata").unwrap();
        // 2027-01-05 10:07 in Kolkata (+05:30).
        let from = 1_799_123_820_000;
        let ticks = time_ticks(from, from + 3_600_000, 8, &zone);
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["10:10", "10:20", "10:30", "10:40", "10:50", "11:00"]
        );
        let week = time_ticks(from, from + 7 * 86_400_000, 8, &zone);
        assert_eq!(week[0].1, "Jan 06");
        assert_eq!(week.len(), 7);
    }
}
