//! Sizes and durations as an operator types them: `50GiB`, `30d`.

/// `50GiB`, `1.5 TB`, `4096` → bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size: expected e.g. 50GiB, 500MB or 1024"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// `30d`, `12h`, `90m`, `3600s` or a number of seconds → seconds (more than 0).
pub fn duration_secs(raw: &str) -> Result<u64, String> {
    let bad = || "expected a duration like 30d, 12h, 90m, 3600s or a number of seconds".to_string();
    let text = raw.trim();
    let (digits, unit) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => (&text[..text.len() - 1], c),
        _ => (text, 's'),
    };
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let secs = digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)).ok_or_else(bad)?;
    if secs == 0 {
        return Err("must be more than 0".to_string());
    }
    Ok(secs)
}

/// Seconds as the shortest whole unit: `30d`, `12h`, `90m`, `45s`.
pub fn duration_text(secs: u64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::{duration_secs, duration_text, parse_size};

    #[test]
    fn sizes_parse_in_both_unit_systems() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("1.5 TB"), Ok(1_500_000_000_000));
        assert_eq!(parse_size("500mb"), Ok(500_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }

    #[test]
    fn durations_round_trip() {
        for (text, secs) in [("30d", 30 * 86_400), ("12h", 43_200), ("90m", 5_400), ("45s", 45)] {
            assert_eq!(duration_secs(text), Ok(secs));
            assert_eq!(duration_text(secs), text);
        }
        assert!(duration_secs("0d").is_err());
        assert!(duration_secs("7w").is_err());
    }
}
