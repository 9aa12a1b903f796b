//! FHIR `instant` values: Herald writes them in UTC with millisecond precision
//! (`2026-11-27T06:19:47.123Z`) and reads any RFC 3339 timestamp a client sends.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, the unit Herald stores times in.
pub type Millis = i64;

/// The current time in milliseconds since the epoch.
pub fn now_millis() -> Millis {
    millis_of(OffsetDateTime::now_utc())
}

fn millis_of(t: OffsetDateTime) -> Millis {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Formats epoch milliseconds as a FHIR instant in UTC.
pub fn format_millis(ms: Millis) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s, milli) = (t.hour(), t.minute(), t.second(), t.millisecond());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Parses an RFC 3339 instant (FHIR `instant`, or a `dateTime` with a time and zone).
pub fn parse_instant(text: &str) -> Option<Millis> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(millis_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = 1_795_760_387_123;
        let text = format_millis(ms);
        assert_eq!(text, "2026-11-27T06:19:47.123Z");
        assert_eq!(parse_instant(&text), Some(ms));
        assert_eq!(parse_instant("2026-11-27T07:19:47.123+01:00"), Some(ms));
        assert_eq!(parse_instant("2026-11-27"), None);
        assert_eq!(parse_instant("garbage"), None);
    }
}
