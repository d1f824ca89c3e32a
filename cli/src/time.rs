//! Times and durations as people read and write them: `30s`, `5m` on the
//! command line, and `2026-12-05T10:00:00.123Z` (humantime) / `in 4.9s` in
//! output. JSON output keeps unix
//! milliseconds (what scripts want) next to the readable text.

use std::time::{Duration, UNIX_EPOCH};

/// `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}; use e.g. 500ms, 30s, 5m, 1h"))?;
    let millis = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("invalid duration unit in {s:?}; use ms, s, m or h")),
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds.
pub fn timestamp(unix_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `unix_ms` relative to `now_ms`: `in 4.9s`, `1m 3s ago`, `now`.
pub fn relative(unix_ms: u64, now_ms: u64) -> String {
    let (span, future) = if unix_ms >= now_ms {
        (unix_ms - now_ms, true)
    } else {
        (now_ms - unix_ms, false)
    };
    if span < 100 {
        return "now".into();
    }
    let shown = short_duration(Duration::from_millis(span));
    if future {
        format!("in {shown}")
    } else {
        format!("{shown} ago")
    }
}

/// A duration rounded for reading: `850ms`, `4.9s`, `2m 5s`, `3h 12m`.
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h {}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// Unix time in milliseconds now.
pub use relay_client::unix_ms as now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "-1s", "10d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_read_well() {
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(relative(10_000, 5_100), "in 4.9s");
        assert_eq!(relative(1_000, 64_000), "1m 3s ago");
        assert_eq!(relative(1_000, 1_050), "now");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 3600 + 720)),
            "3h 12m"
        );
    }
}
