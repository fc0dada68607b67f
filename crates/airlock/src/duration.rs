//! Durations on the command line: `90s`, `15m`, `12h`, `30d`.

use std::time::Duration;

/// Parses a positive whole number followed by `s`, `m`, `h` or `d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as `30d`, `12h`, `15m` or `90s`"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    match secs {
        Some(0) => Err("the duration must be greater than zero".to_owned()),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("`{text}` is not a duration such as `30d`, `12h`, `15m` or `90s`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in ["", "d", "0d", "10", "10y", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
