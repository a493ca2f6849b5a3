//! Human-friendly numbers on the command line: `16MiB`, `64k`, `10s`, `250ms`.
//!
//! Shared by `wsloop` and `loadgen` so both read `--max-message-size 16MiB` or
//! `--connections 10k` the same way (tcpkali's suffix convention).

use std::time::Duration;

/// Parses a byte size: a plain number of bytes, or one with a binary
/// (`KiB`, `MiB`, `GiB`) or decimal (`k`/`KB`, `M`/`MB`, `G`/`GB`) suffix. `B` is allowed.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let (number, suffix) = split_number(text)?;
    let multiplier: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("unknown size suffix {suffix:?} in {text:?} (use B, KiB, MiB, GiB, k, M, G)")),
    };
    scale(number, multiplier, text)
}

/// Parses a count with an optional decimal suffix: `500`, `10k`, `1M`.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let (number, suffix) = split_number(text)?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "m" | "M" => 1_000_000,
        _ => return Err(format!("unknown count suffix {suffix:?} in {text:?} (use k or M)")),
    };
    scale(number, multiplier, text).map(|n| n as u64)
}

/// Parses a duration: a plain number of seconds, or one with `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, suffix) = split_number(text)?;
    let seconds_per_unit = match suffix {
        "" | "s" => 1.0,
        "us" => 1e-6,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown duration unit {suffix:?} in {text:?} (use us, ms, s, m, h)")),
    };
    let seconds = number * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a byte count the way [`parse_size`] reads it back (`16MiB`, `512B`).
pub fn format_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes}B")
}

/// Formats a duration compactly (`10s`, `250ms`), readable back by [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn split_number(text: &str) -> Result<(f64, &str), String> {
    let text = text.trim();
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(end);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(format!("{text:?} is not a number"));
    }
    let number: f64 = digits.parse().map_err(|_| format!("{text:?} is not a number"))?;
    Ok((number, suffix.trim()))
}

fn scale(number: f64, multiplier: u64, text: &str) -> Result<usize, String> {
    let value = number * multiplier as f64;
    if !value.is_finite() || value < 0.0 || value > (usize::MAX / 2) as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    if value.fract() != 0.0 {
        return Err(format!("{text:?} is not a whole number"));
    }
    Ok(value as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0.3B").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert_eq!(parse_count("1_000"), Ok(1000));
        assert_eq!(parse_count("2M"), Ok(2_000_000));
        assert!(parse_count("ten").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn round_trips() {
        for bytes in [0, 1, 512, 1024, 16 << 20, 3 << 30, 1000] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        for ms in [0, 250, 1000, 120_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
