//! A schedule line in words (`30 2 * * MON-FRI`: "at 02:30, Monday to Friday"), for the jobs
//! page. Only the common shapes are put in words; anything else (`L`, `W`, `#`, steps inside
//! ranges, long lists) has none, and the page shows the line alone.

/// A cron field, as far as words go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// `*` or `?`.
    Any,
    /// `*/n`.
    Every(u32),
    /// Numbers and ranges, in the order written.
    Items(Vec<(u32, u32)>),
}

impl Field {
    fn parse(text: &str, names: &[&str]) -> Option<Field> {
        if text == "*" || text == "?" {
            return Some(Field::Any);
        }
        if let Some(step) = text.strip_prefix("*/") {
            return step.parse().ok().filter(|n| *n > 0).map(Field::Every);
        }
        let value = |item: &str| -> Option<u32> {
            item.parse().ok().or_else(|| {
                names
                    .iter()
                    .position(|name| name.eq_ignore_ascii_case(item))
                    .and_then(|i| u32::try_from(i).ok())
                    .map(|i| if names.len() == 12 { i + 1 } else { i })
            })
        };
        let items = text
            .split(',')
            .map(|item| match item.split_once('-') {
                Some((a, b)) => Some((value(a)?, value(b)?)),
                None => value(item).map(|v| (v, v)),
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Field::Items(items))
    }

    /// The one value, if the field names exactly one.
    fn single(&self) -> Option<u32> {
        match self {
            Field::Items(items) if items.len() == 1 && items[0].0 == items[0].1 => Some(items[0].0),
            _ => None,
        }
    }

    /// Every value it names, if it is a short list of single values.
    fn values(&self, max: usize) -> Option<Vec<u32>> {
        match self {
            Field::Items(items) if items.len() <= max && items.iter().all(|(a, b)| a == b) => {
                Some(items.iter().map(|(a, _)| *a).collect())
            }
            _ => None,
        }
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// `schedule` in words, if it has a common shape.
pub(crate) fn describe(schedule: &str) -> Option<String> {
    let line = match schedule.trim() {
        "@reboot" => return Some("once at each boot".to_owned()),
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (second, rest) = match fields.len() {
        5 => (Field::Items(vec![(0, 0)]), &fields[..]),
        6 => (Field::parse(fields[0], &[])?, &fields[1..]),
        _ => return None,
    };
    let minute = Field::parse(rest[0], &[])?;
    let hour = Field::parse(rest[1], &[])?;
    let dom = Field::parse(rest[2], &[])?;
    let month = Field::parse(rest[3], &MONTHS)?;
    let dow = Field::parse(rest[4], &DAYS)?;
    let (time, at_times) = time(&second, &minute, &hour)?;
    let mut words = time;
    match days(&dom, &dow)? {
        Some(days) => {
            words.push_str(", ");
            words.push_str(&days);
        }
        None if at_times => words.push_str(", every day"),
        None => {}
    }
    if let Some(months) = months(&month)? {
        words.push_str(", ");
        words.push_str(&months);
    }
    Some(words)
}

/// The time of day part, and whether it names fixed times (which read "every day" alone).
fn time(second: &Field, minute: &Field, hour: &Field) -> Option<(String, bool)> {
    let plural = |n: u32, unit: &str| {
        if n == 1 {
            format!("every {unit}")
        } else {
            format!("every {n} {unit}s")
        }
    };
    let s = second.single();
    match (second, minute, hour) {
        (Field::Any, Field::Any, Field::Any) => Some(("every second".to_owned(), false)),
        (Field::Every(n), Field::Any, Field::Any) => Some((plural(*n, "second"), false)),
        _ if s.is_none() => None,
        (_, Field::Any, Field::Any) => Some((
            match s {
                Some(0) => "every minute".to_owned(),
                Some(s) => format!("every minute at second {s}"),
                None => return None,
            },
            false,
        )),
        (_, Field::Every(n), Field::Any) if s == Some(0) => Some((plural(*n, "minute"), false)),
        (_, Field::Every(n), Field::Items(hours)) if s == Some(0) && hours.len() == 1 => {
            let (from, to) = hours[0];
            Some((
                format!("{} from {from:02}:00 to {to:02}:59", plural(*n, "minute")),
                false,
            ))
        }
        (_, Field::Items(_), Field::Any) if s == Some(0) => {
            let m = minute.single()?;
            Some((format!("every hour at :{m:02}"), false))
        }
        (_, Field::Items(_), Field::Every(n)) if s == Some(0) => {
            let m = minute.single()?;
            Some((format!("{} at :{m:02}", plural(*n, "hour")), false))
        }
        (_, Field::Items(_), Field::Items(hours))
            if hours.len() == 1 && hours[0].0 != hours[0].1 && s == Some(0) =>
        {
            let m = minute.single()?;
            let (from, to) = hours[0];
            Some((
                format!("every hour at :{m:02} from {from:02}:{m:02} to {to:02}:{m:02}"),
                false,
            ))
        }
        (_, Field::Items(_), Field::Items(_)) => {
            let seconds = s?;
            let mut times = Vec::new();
            for h in hour.values(6)? {
                for m in minute.values(6)? {
                    times.push(if seconds == 0 {
                        format!("{h:02}:{m:02}")
                    } else {
                        format!("{h:02}:{m:02}:{seconds:02}")
                    });
                }
            }
            if times.len() > 6 {
                return None;
            }
            Some((format!("at {}", list(&times)), true))
        }
        _ => None,
    }
}

/// The days part; `None` inside when every day fires.
fn days(dom: &Field, dow: &Field) -> Option<Option<String>> {
    let weekdays = match dow {
        Field::Any => None,
        Field::Items(items) => {
            let mut parts = Vec::new();
            for &(a, b) in items {
                let name = |d: u32| DAY_NAMES.get((d % 7) as usize).copied();
                if a == b {
                    parts.push(name(a)?.to_owned());
                } else {
                    parts.push(format!("{} to {}", name(a)?, name(b)?));
                }
            }
            Some(list(&parts))
        }
        Field::Every(_) => return None,
    };
    let month_days = match dom {
        Field::Any => None,
        Field::Items(_) => {
            let days: Vec<String> = dom.values(4)?.into_iter().map(ordinal).collect();
            Some(format!("on the {} of the month", list(&days)))
        }
        Field::Every(_) => return None,
    };
    Some(match (month_days, weekdays) {
        (None, None) => None,
        (Some(days), None) => Some(days),
        (None, Some(weekdays)) => Some(weekdays),
        (Some(days), Some(weekdays)) => Some(format!("{days} or on {weekdays}")),
    })
}

fn months(month: &Field) -> Option<Option<String>> {
    match month {
        Field::Any => Some(None),
        Field::Items(items) => {
            let mut parts = Vec::new();
            for &(a, b) in items {
                let name = |m: u32| MONTH_NAMES.get(m.checked_sub(1)? as usize).copied();
                if a == b {
                    parts.push(name(a)?.to_owned());
                } else {
                    parts.push(format!("{} to {}", name(a)?, name(b)?));
                }
            }
            Some(Some(format!("in {}", list(&parts))))
        }
        Field::Every(_) => None,
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_schedules_read_as_words() {
        for (line, words) in [
            ("30 2 * * *", "at 02:30, every day"),
            ("0 7 * * MON-FRI", "at 07:00, Monday to Friday"),
            ("0 7 * * 1-5", "at 07:00, Monday to Friday"),
            ("*/5 * * * *", "every 5 minutes"),
            ("* * * * *", "every minute"),
            ("*/10 * * * * *", "every 10 seconds"),
            ("* * * * * *", "every second"),
            ("15 * * * *", "every hour at :15"),
            ("0 */6 * * *", "every 6 hours at :00"),
            (
                "*/15 9-17 * * MON-FRI",
                "every 15 minutes from 09:00 to 17:59, Monday to Friday",
            ),
            ("0 8,12,18 * * *", "at 08:00, 12:00 and 18:00, every day"),
            ("0 0 1 * *", "at 00:00, on the 1st of the month"),
            ("0 0 1,15 * *", "at 00:00, on the 1st and 15th of the month"),
            ("0 3 * * SAT,SUN", "at 03:00, Saturday and Sunday"),
            ("0 4 * * 7", "at 04:00, Sunday"),
            ("0 0 1 1 *", "at 00:00, on the 1st of the month, in January"),
            (
                "0 0 13 * FRI",
                "at 00:00, on the 13th of the month or on Friday",
            ),
            ("@daily", "at 00:00, every day"),
            ("@hourly", "every hour at :00"),
            ("@weekly", "at 00:00, Sunday"),
            ("@reboot", "once at each boot"),
            ("30 15 10 * * *", "at 10:15:30, every day"),
        ] {
            assert_eq!(describe(line).as_deref(), Some(words), "{line}");
        }
    }

    #[test]
    fn unusual_schedules_have_no_words() {
        for line in [
            "0 0 L * *",
            "0 0 * * 5#3",
            "0 1-5/2 * * *",
            "not cron",
            "0 0 */2 * *",
        ] {
            assert_eq!(describe(line), None, "{line}");
        }
    }
}
