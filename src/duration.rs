//! Durations written the way PostgreSQL writes timeouts: `500ms`, `5s`,
//! `10min`, `2h`, or `0` for "no limit". Pure; shared with `build.rs`.

use std::time::Duration;

/// Parses `"<integer><unit>"` with unit `ms`, `s`, `min` or `h`; `"0"` alone
/// means zero (for a PostgreSQL timeout: disabled). Returns a message naming
/// the accepted forms when the text is not one of them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad(text))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1_000),
        "min" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        _ => return Err(bad(text)),
    }
    .ok_or_else(|| bad(text))?;
    Ok(Duration::from_millis(millis))
}

fn bad(text: &str) -> String {
    format!(
        "`{text}` is not a duration: write a whole number with ms, s, min or h (e.g. 5s, 10min), or 0"
    )
}

/// Formats a duration as a PostgreSQL setting value in milliseconds (`'5000ms'`),
/// ready to be put after `SET ... =`.
pub fn pg_setting(d: Duration) -> String {
    format!("'{}ms'", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration(" 10min "), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_is_ambiguous_or_malformed() {
        for text in [
            "",
            "5",
            "s",
            "5 s",
            "1.5s",
            "5m",
            "-1s",
            "99999999999999999999h",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("not a duration"), "{text}: {err}");
        }
    }

    #[test]
    fn formats_for_postgres() {
        assert_eq!(pg_setting(Duration::from_secs(5)), "'5000ms'");
    }
}
