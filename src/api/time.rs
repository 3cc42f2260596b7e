//! Time bounds in query strings: `YYYY-MM-DD` (a whole UTC day) or RFC 3339 in UTC
//! (`2026-11-27T10:00:00Z`, fractional seconds allowed).

use crate::audit::record::parse_day;
use crate::error::{ErrorCode, GatewayError};

/// Which end of a range a value bounds (a bare date covers its whole day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

const DAY_MS: u64 = 86_400_000;

/// Unix milliseconds of `text`.
pub fn parse_bound(text: &str, bound: Bound, param: &'static str) -> Result<u64, GatewayError> {
    let bad = || {
        GatewayError::new(
            ErrorCode::InvalidBody,
            format!("`{param}` must be YYYY-MM-DD or RFC 3339 in UTC (e.g. 2026-11-27T10:00:00Z)"),
        )
        .with_param(param)
    };
    if text.len() == 10 {
        let days = parse_day(text).ok_or_else(bad)?;
        let start = u64::try_from(days).map_err(|_| bad())? * DAY_MS;
        return Ok(match bound {
            Bound::Start => start,
            Bound::End => start + DAY_MS - 1,
        });
    }
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).map_err(|_| bad())?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(
            parse_bound("1970-01-02", Bound::Start, "start").unwrap(),
            DAY_MS
        );
        assert_eq!(
            parse_bound("1970-01-01", Bound::End, "end").unwrap(),
            DAY_MS - 1
        );
        assert_eq!(
            parse_bound("1970-01-01T00:00:01Z", Bound::Start, "start").unwrap(),
            1000
        );
        assert_eq!(
            parse_bound("1970-01-01T00:00:01.5Z", Bound::Start, "start").unwrap(),
            1500
        );
        assert!(parse_bound("yesterday", Bound::Start, "start").is_err());
        assert!(parse_bound("2026-02-30", Bound::Start, "start").is_err());
    }
}
