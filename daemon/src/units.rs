//! Durations (`30s`, `1h30m`, `7d`) and sizes (`512M`) as config files and the CLI write them.

use std::time::Duration;

/// What a duration looks like, for error messages.
pub const DURATION_HINT: &str = "a duration such as 500ms, 30s, 10m, 2h, 7d or 1h30m";
/// What a size looks like, for error messages.
pub const SIZE_HINT: &str = "a size such as 65536, 64K, 1M or 2G";

/// Parses a sequence of `<integer><unit>` parts; units are `ms`, `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not {DURATION_HINT}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total = value
            .checked_mul(millis_per_unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Parses a byte count with an optional binary suffix `K`, `M`, `G` (an optional `B` or `iB`
/// after it is accepted too, so `512MiB` and `512MB` mean the same as `512M`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("`{text}` is not {SIZE_HINT}");
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits == 0 {
        return Err(invalid());
    }
    let value: u64 = trimmed[..digits].parse().map_err(|_| invalid())?;
    let suffix = trimmed[digits..].to_ascii_uppercase();
    let unit = suffix.trim_end_matches("IB").trim_end_matches('B');
    let multiplier: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(invalid()),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats a duration the way [`parse_duration`] reads it, largest units first: `1h30m`.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        for bad in ["", "30", "s", "1x", "1.5h", "-1s", "1h 30m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("is not a duration such as"), "{bad}: {err}");
        }
        assert!(parse_duration("99999999999999999999w").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1T").unwrap_err().contains("is not a size"));
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["1h30m", "7d", "500ms", "1d2h3m4s5ms", "30s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
