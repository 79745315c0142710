//! Field-by-field checks that turn a bad cron line into a message naming the field and its range.

use croner::errors::CronError;

/// A field's name and the numbers it accepts, in the order fields appear without seconds.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const FIVE_FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

/// Checks the field count and every plain number and name against its field's range.
///
/// Items using croner's extensions (`L`, `W`, `#`) are left to croner.
pub fn check(fields: &[&str]) -> Result<(), String> {
    let layout: Vec<&Field> = match fields.len() {
        5 => FIVE_FIELDS.iter().collect(),
        6 => std::iter::once(&SECOND).chain(FIVE_FIELDS.iter()).collect(),
        n => {
            return Err(format!(
                "found {n} field(s); expected 5 (minute hour day-of-month month day-of-week), \
                 6 with seconds first, or a shortcut such as @daily"
            ));
        }
    };
    for (text, field) in fields.iter().zip(layout) {
        check_field(text, field)?;
    }
    Ok(())
}

fn check_field(text: &str, field: &Field) -> Result<(), String> {
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        let (range, step) = match upper.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (upper.as_str(), None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(n) if n > 0 => {}
                _ => {
                    return Err(format!(
                        "{} field `{text}`: the step after `/` must be a positive number",
                        field.name
                    ));
                }
            }
        }
        if range == "*" || range == "?" {
            continue;
        }
        let bounds: Vec<&str> = range.split('-').collect();
        if bounds.len() > 2 || bounds.iter().any(|b| b.is_empty()) {
            return Err(format!(
                "{} field `{text}`: expected a number, a range like 1-5, a list, `*` or a step",
                field.name
            ));
        }
        for bound in bounds {
            if is_extension(bound, field) {
                continue;
            }
            value_of(bound, field)
                .map_err(|reason| format!("{} field `{text}`: {reason}", field.name))?;
        }
    }
    Ok(())
}

/// croner's `L`, `W` and `#` in the day fields (`L`, `15W`, `5L`, `5#2`): croner checks them.
fn is_extension(bound: &str, field: &Field) -> bool {
    matches!(field.name, "day-of-month" | "day-of-week")
        && bound.contains(['L', 'W', '#'])
        && !field.names.contains(&bound)
}

fn value_of(token: &str, field: &Field) -> Result<(), String> {
    if field.names.contains(&token) {
        return Ok(());
    }
    let range_text = if field.names.is_empty() {
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
    match token.parse::<u32>() {
        Ok(n) if (field.min..=field.max).contains(&n) => Ok(()),
        Ok(_) => Err(format!("`{token}` is out of range; {range_text}")),
        Err(_) => Err(format!("`{token}` is not a number or a name; {range_text}")),
    }
}

/// Vixie cron treats a day field that starts with `*` as unrestricted: then a day must match
/// both day fields (the unrestricted one always does); only when both are restricted does a day
/// matching either one fire. croner counts `*/2` as restricted, so the choice is made here.
pub fn vixie_ands_day_fields(dom: &str, dow: &str) -> bool {
    dom.starts_with(['*', '?']) || dow.starts_with(['*', '?'])
}

/// croner's messages name its internals; keep their detail but phrase them for a config file.
pub fn describe_croner_error(error: &CronError) -> String {
    match error {
        CronError::InvalidPattern(msg)
        | CronError::IllegalCharacters(msg)
        | CronError::ComponentError(msg) => format!(
            "{msg}; expected 5 fields (minute hour day-of-month month day-of-week) or 6 with \
             seconds first"
        ),
        other => other.to_string(),
    }
}
