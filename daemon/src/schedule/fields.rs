//! The text of a schedule line read field by field into the values each field allows, with
//! errors that name the field, its range and the fix.
//!
//! The grammar is crontab(5)'s: each field is a comma-separated list whose items are `*`, a
//! value, or a range `a-b`, the last two optionally followed by a step `/n`; months and days
//! of the week also take names. Day-of-month adds `L` and `15W`, day-of-week `5L` and `MON#2`.

use jiff::civil::Time;

use super::pattern::{DayRule, Days, Pattern, Weekdays};

/// A field's name, the numbers it accepts, and its names (the first stands for `min`).
struct Field {
    name: &'static str,
    min: u8,
    max: u8,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// 7 is Sunday too, but only when written as a number: the name `SUN` is always 0, as in
/// cron(8), so `SUN-SUN` is Sunday alone and `MON-SUN` ends before it starts.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// Reads the 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
pub(super) fn parse(fields: &[&str]) -> Result<Pattern, String> {
    let (second, [minute, hour, dom, month, dow]) = match *fields {
        [minute, hour, dom, month, dow] => ("0", [minute, hour, dom, month, dow]),
        [second, minute, hour, dom, month, dow] => (second, [minute, hour, dom, month, dow]),
        _ => {
            return Err(format!(
                "found {} field(s); expected 5 (minute hour day-of-month month day-of-week), \
                 6 with seconds first, or a shortcut such as @daily",
                fields.len()
            ));
        }
    };
    let seconds = values(second, &SECOND, no_extension)?;
    let minutes = values(minute, &MINUTE, no_extension)?;
    let hours = values(hour, &HOUR, no_extension)?;
    let mut days = Days::default();
    days.each = values(dom, &DAY_OF_MONTH, |item| {
        day_of_month_extension(item, &mut days)
    })?;
    let months = values(month, &MONTH, no_extension)?;
    let mut weekdays = Weekdays::default();
    let each = values(dow, &DAY_OF_WEEK, |item| {
        day_of_week_extension(item, &mut weekdays)
    })?;
    weekdays.each = sunday_as_zero(each);
    Ok(Pattern {
        seconds,
        minutes,
        hours,
        days,
        months,
        weekdays,
        day_rule: day_rule(dom, dow),
        fixed_time: fixed_time([(second, seconds), (minute, minutes), (hour, hours)]),
    })
}

/// Vixie cron treats a day field that starts with `*` (`*`, `*/2`, `*,5`) as unrestricted:
/// then a day must match both day fields; only when both are restricted does either suffice.
fn day_rule(dom: &str, dow: &str) -> DayRule {
    if dom.starts_with('*') || dow.starts_with('*') {
        DayRule::Both
    } else {
        DayRule::Either
    }
}

/// The time of day of a fixed-time line: one value in each of second, minute and hour, none
/// written starting with `*` (so `0 2-3/5 * * *` is fixed at 02:00 and `*/60 2 * * *` is not).
fn fixed_time(fields: [(&str, u64); 3]) -> Option<Time> {
    let mut hms = [0_i8; 3];
    for (slot, (text, set)) in hms.iter_mut().zip(fields) {
        if text.starts_with('*') || set.count_ones() != 1 {
            return None;
        }
        *slot = i8::try_from(set.trailing_zeros()).ok()?;
    }
    let [second, minute, hour] = hms;
    Time::new(hour, minute, second, 0).ok()
}

/// Folds day-of-week 7 into 0: both are Sunday.
fn sunday_as_zero(set: u64) -> u64 {
    if set & (1 << 7) != 0 {
        (set & !(1 << 7)) | 1
    } else {
        set
    }
}

/// The set of values `text` allows in `field`, as bits; `extension` claims the items that are
/// not plain crontab syntax (returning `None` for the others).
fn values(
    text: &str,
    field: &Field,
    mut extension: impl FnMut(&str) -> Option<Result<(), String>>,
) -> Result<u64, String> {
    let fail = |reason: String| format!("{} field `{text}`: {reason}", field.name);
    let mut set = 0;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(fail(
                "an empty item; separate values with single commas, as in `1,15,30`".to_owned(),
            ));
        }
        let upper = item.to_ascii_uppercase();
        match extension(&upper) {
            Some(claimed) => claimed.map_err(fail)?,
            None => set |= item_values(&upper, field).map_err(fail)?,
        }
    }
    Ok(set)
}

fn no_extension(_item: &str) -> Option<Result<(), String>> {
    None
}

/// One item: `*`, a value, or a range, the last two optionally with a step.
fn item_values(item: &str, field: &Field) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step_of(step)?)),
        None => (item, None),
    };
    let (low, high) = if range == "*" {
        (field.min, field.max)
    } else if range.matches('-').count() > 1 {
        return Err(
            "expected a number, a range like 1-5, a list, `*` or a step, as in `0-30/10`"
                .to_owned(),
        );
    } else if let Some((low, high)) = range.split_once('-') {
        let (low, high) = (value(low, field)?, value(high, field)?);
        if low > high {
            return Err(reversed_range(range, field));
        }
        (low, high)
    } else if step.is_some() {
        return Err(format!(
            "a step follows `*` or a range, as in `*/15` or `{range}-{}/15`",
            field.max
        ));
    } else {
        let single = value(range, field)?;
        (single, single)
    };
    let step = step.unwrap_or(1);
    Ok((low..=high)
        .step_by(step)
        .fold(0, |set, value| set | (1_u64 << value)))
}

fn step_of(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("the step after `/` must be a positive number".to_owned()),
    }
}

fn reversed_range(range: &str, field: &Field) -> String {
    let mut reason = format!("the range `{range}` ends before it starts");
    if std::ptr::eq(field, &DAY_OF_WEEK) && range.ends_with("SUN") {
        reason.push_str("; `SUN` is 0, so a range that ends on Sunday ends with 7, as in `MON-7`");
    }
    reason
}

/// A number or a name within the field's range.
fn value(token: &str, field: &Field) -> Result<u8, String> {
    if let Some(index) = field.names.iter().position(|name| *name == token) {
        return Ok(field.min + u8::try_from(index).unwrap_or(u8::MAX));
    }
    let range = if field.names.is_empty() {
        format!("values are {}-{}", field.min, field.max)
    } else {
        format!(
            "values are {}-{} or {}-{}",
            field.min,
            field.max,
            field.names[0],
            field.names[field.names.len() - 1]
        )
    };
    if token.is_empty() {
        return Err(format!(
            "a range needs a value on each side of `-`; {range}"
        ));
    }
    match token.parse::<u8>() {
        Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("`{token}` is out of range; {range}")),
        Err(_) if token.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("`{token}` is out of range; {range}"))
        }
        Err(_) => Err(format!(
            "`{token}` is not a number or a name; {range}, or a range like 1-5, a list, `*` \
             or a step"
        )),
    }
}

/// Day-of-month's `L` (the last day of the month) and `15W` (the weekday nearest the 15th).
fn day_of_month_extension(item: &str, days: &mut Days) -> Option<Result<(), String>> {
    if item == "L" {
        days.last = true;
        return Some(Ok(()));
    }
    let day = item.strip_suffix('W').filter(|day| !day.is_empty())?;
    Some(value(day, &DAY_OF_MONTH).map(|day| days.nearest_weekday |= 1 << day))
}

/// Day-of-week's `5L` (the last Friday of the month) and `MON#2` (its second Monday).
fn day_of_week_extension(item: &str, weekdays: &mut Weekdays) -> Option<Result<(), String>> {
    if let Some((day, nth)) = item.split_once('#').filter(|(day, _)| !day.is_empty()) {
        let claimed = value(day, &DAY_OF_WEEK).and_then(|day| match nth.parse::<usize>() {
            Ok(n @ 1..=5) => {
                weekdays.nth[n - 1] |= sunday_as_zero(1 << day) as u8;
                Ok(())
            }
            _ => Err(format!(
                "`{item}` needs an occurrence from 1 to 5 after `#`, as in `MON#2`"
            )),
        });
        return Some(claimed);
    }
    let day = item.strip_suffix('L').filter(|day| !day.is_empty())?;
    Some(value(day, &DAY_OF_WEEK).map(|day| weekdays.last |= sunday_as_zero(1 << day) as u8))
}

/// Checks that `text` holds only what a schedule line may: ASCII letters and digits, the
/// punctuation of the grammar, and spaces or tabs between fields. Other white space (a
/// no-break space pasted from a web page, an em space, a line break) is refused by name and
/// position, since it would otherwise split or join fields invisibly.
pub(super) fn check_characters(text: &str) -> Result<(), String> {
    for (index, c) in text.chars().enumerate() {
        if c.is_ascii_alphanumeric() || matches!(c, ' ' | '\t' | '*' | ',' | '-' | '/' | '#' | '@')
        {
            continue;
        }
        let position = index + 1;
        let what = describe(c);
        return Err(if c == '?' {
            format!("`?` at character {position} is not cron(8) syntax; write `*` for any day")
        } else if c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}' {
            format!(
                "{what} at character {position} is not a field separator; separate fields with \
                 spaces or tabs"
            )
        } else {
            format!(
                "{what} at character {position} is not allowed; a schedule holds ASCII letters, \
                 digits, `*`, `,`, `-`, `/`, `#`, and spaces or tabs between fields"
            )
        });
    }
    Ok(())
}

/// A character as an error message shows it: its code point, and its name for the invisible
/// ones that look like a space or a line break.
fn describe(c: char) -> String {
    let name = match c {
        '\n' => "line feed",
        '\r' => "carriage return",
        '\u{b}' => "vertical tab",
        '\u{c}' => "form feed",
        '\u{85}' => "next line, NEL",
        '\u{a0}' => "no-break space",
        '\u{1680}' => "ogham space mark",
        '\u{2000}' => "en quad",
        '\u{2001}' => "em quad",
        '\u{2002}' => "en space",
        '\u{2003}' => "em space",
        '\u{2004}' => "three-per-em space",
        '\u{2005}' => "four-per-em space",
        '\u{2006}' => "six-per-em space",
        '\u{2007}' => "figure space",
        '\u{2008}' => "punctuation space",
        '\u{2009}' => "thin space",
        '\u{200a}' => "hair space",
        '\u{200b}' => "zero width space",
        '\u{2028}' => "line separator",
        '\u{2029}' => "paragraph separator",
        '\u{202f}' => "narrow no-break space",
        '\u{205f}' => "medium mathematical space",
        '\u{3000}' => "ideographic space",
        '\u{feff}' => "zero width no-break space",
        c if c.is_control() => "a control character",
        c => return format!("`{c}` (U+{:04X})", u32::from(c)),
    };
    format!("U+{:04X} ({name})", u32::from(c))
}
