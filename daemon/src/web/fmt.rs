//! Text for people: escaped HTML, instants in the machine's zone, durations and "3 min ago".

use std::borrow::Cow;

use jiff::tz::TimeZone;

use crate::time::from_ms;

/// `text` safe inside HTML text and quoted attribute values.
pub(crate) fn esc(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` as a URL query value.
pub(crate) fn url(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A coordinate of a chart, written with one decimal. Formatted with integers: `{:.1}` takes
/// the exact, slow path of float formatting, and a timeline writes tens of thousands of them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Px(pub(crate) f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Coordinates are far inside i64's range; a NaN (never drawn) writes 0.0.
        let tenths = (self.0 * 10.0).round() as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let tenths = tenths.unsigned_abs();
        write!(f, "{sign}{}.{}", tenths / 10, tenths % 10)
    }
}

/// An instant in full: `2027-01-05 10:00:03 CET`.
pub(crate) fn when(ms: i64, zone: &TimeZone) -> String {
    crate::time::local(ms, zone)
}

/// An instant in short, for tables: `Jan 05 10:00:03`.
pub(crate) fn short_when(ms: i64, zone: &TimeZone) -> String {
    from_ms(ms)
        .to_zoned(zone.clone())
        .strftime("%b %d %H:%M:%S")
        .to_string()
}

/// A window `from – to`, as [`short_when`] within the current year, with the year on both ends
/// when either lies in another (`Dec 31 2026 00:00:00 – Jan 01 2027 00:00:00`), so that a
/// window in the past says which year it is.
pub(crate) fn window(from: i64, to: i64, now: i64, zone: &TimeZone) -> String {
    let year = |ms: i64| from_ms(ms).to_zoned(zone.clone()).year();
    let format = if year(from) == year(now) && year(to) == year(now) {
        "%b %d %H:%M:%S"
    } else {
        "%b %d %Y %H:%M:%S"
    };
    let at = |ms: i64| {
        from_ms(ms)
            .to_zoned(zone.clone())
            .strftime(format)
            .to_string()
    };
    format!("{} – {}", at(from), at(to))
}

/// How far `at` is from `now`: `in 4 min`, `3 h ago`, `now`.
pub(crate) fn relative(at: i64, now: i64) -> String {
    let delta = at - now;
    if delta.abs() < 1_000 {
        return "now".to_owned();
    }
    let amount = rough(delta.abs());
    if delta > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A span in its largest unit: `45 s`, `12 min`, `3 h`, `2 d`.
fn rough(ms: i64) -> String {
    if ms < 60_000 {
        format!("{} s", ms / 1_000)
    } else if ms < 3_600_000 {
        format!("{} min", ms / 60_000)
    } else if ms < 172_800_000 {
        format!("{} h", ms / 3_600_000)
    } else {
        format!("{} d", ms / 86_400_000)
    }
}

/// A duration to the precision that matters: `250 ms`, `1.2 s`, `3 min 05 s`, `2 h 03 min`.
pub(crate) fn duration(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1_000.0)
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else if ms < 600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1_000)
    } else if ms < 3_600_000 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// A round duration for an axis: `500 ms`, `30 s`, `15 min`, `2 h`.
pub(crate) fn axis_duration(ms: i64) -> String {
    if ms == 0 {
        "0".to_owned()
    } else if ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{} s", ms / 1_000)
    } else if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1_000.0)
    }
}

/// An optional duration, `–` when absent.
pub(crate) fn maybe_duration(ms: Option<i64>) -> String {
    ms.map_or_else(|| "–".to_owned(), duration)
}

/// A window or zoom span in its unit: `1h`, `24h`, `7d`, `90m`.
pub(crate) fn span(ms: i64) -> String {
    if ms % 86_400_000 == 0 && ms >= 2 * 86_400_000 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1_000)
    }
}

/// A share as a percentage: `98.5%`, `100%`.
pub(crate) fn percent(share: f64) -> String {
    let pct = share * 100.0;
    if pct >= 99.95 || pct == 0.0 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%")
    }
}

/// The first line of `text`, cut to `max` characters.
pub(crate) fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && !text.contains('\n') {
        return line.to_owned();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_names_its_year_outside_the_current_one() {
        let now = 1_800_000_000_000; // 2027-01-15
        let day = 86_400_000;
        assert_eq!(
            window(now - day, now, now, &TimeZone::UTC),
            "Jan 14 08:00:00 – Jan 15 08:00:00"
        );
        assert_eq!(
            window(-day, 0, now, &TimeZone::UTC),
            "Dec 31 1969 00:00:00 – Jan 01 1970 00:00:00"
        );
        assert_eq!(
            window(now - 20 * day, now, now, &TimeZone::UTC),
            "Dec 26 2026 08:00:00 – Jan 15 2027 08:00:00"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("plain"), "plain");
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(url("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(1_234), "1.23 s");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(185_000), "3 min 05 s");
        assert_eq!(duration(2_580_000), "43 min");
        assert_eq!(axis_duration(900_000), "15 min");
        assert_eq!(axis_duration(2_500), "2.5 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        assert_eq!(relative(10_000, 250_000), "4 min ago");
        assert_eq!(relative(7_300_000, 0), "in 2 h");
        assert_eq!(relative(3 * 86_400_000, 0), "in 3 d");
        assert_eq!(span(3_600_000), "1h");
        assert_eq!(span(86_400_000), "24h");
        assert_eq!(span(7 * 86_400_000), "7d");
        assert_eq!(percent(0.985), "98.5%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(first_line("boom\nmore", 40), "boom…");
        assert_eq!(Px(12.345).to_string(), "12.3");
        assert_eq!(Px(-0.04).to_string(), "0.0");
        assert_eq!(Px(-2.25).to_string(), "-2.3");
        assert_eq!(Px(0.96).to_string(), "1.0");
    }
}
