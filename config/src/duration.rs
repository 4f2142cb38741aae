//! Duration strings such as `"100ms"`, `"2s"`, `"1m30s"` (humantime syntax).

use std::time::Duration;

/// Parses a duration string; the error says what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("expected a duration such as \"100ms\" or \"2s\", got an empty string".into());
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("expected a duration such as \"100ms\" or \"2s\", got {text:?} ({e})"))
}

/// Formats a duration the way the config file writes it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("100").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
