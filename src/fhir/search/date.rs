//! Dates as ranges, for date search: every FHIR date, dateTime or instant stands for the
//! interval its precision implies (`2026` is the whole year; `2026-03-01T10:00` the whole
//! minute), and every search prefix compares two such intervals (R5 search, "date").
//!
//! In: date strings from search values and from resources (date, dateTime, instant, and the
//! ends of a Period). Out: [`DateRange`], half-open in milliseconds since the Unix epoch, UTC.
//! A value without a time zone is taken as UTC (Herald's documented choice: the server has
//! no local zone to assume).

use std::cmp::Ordering;

/// `[start, end)` in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub start: i64,
    pub end: i64,
}

impl DateRange {
    /// Everything from the beginning to the end of time.
    pub const ALL: DateRange = DateRange { start: i64::MIN, end: i64::MAX };

    pub fn new(start: i64, end: i64) -> DateRange {
        DateRange { start, end: end.max(start) }
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn number(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// The range a FHIR date, dateTime or instant covers. `None` when `text` is none of them.
pub fn parse_range(text: &str) -> Option<DateRange> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = number(parts.next()?, 4)?;
    let month = parts.next().map(|m| number(m, 2)).map_or(Ok(None), |m| m.map(Some).ok_or(()));
    let month = month.ok()?;
    let day = parts.next().map(|d| number(d, 2)).map_or(Ok(None), |d| d.map(Some).ok_or(()));
    let day = day.ok()?;
    if parts.next().is_some() || month.is_some_and(|m| !(1..=12).contains(&m)) {
        return None;
    }
    if let (Some(m), Some(d)) = (month, day) {
        if d < 1 || d > days_in_month(year, m) {
            return None;
        }
    }
    let Some(time) = time else {
        return Some(match (month, day) {
            (None, _) => {
                let start = days_from_civil(year, 1, 1) * MS_PER_DAY;
                DateRange::new(start, days_from_civil(year + 1, 1, 1) * MS_PER_DAY)
            }
            (Some(m), None) => {
                let start = days_from_civil(year, m, 1) * MS_PER_DAY;
                DateRange::new(start, start + days_in_month(year, m) * MS_PER_DAY)
            }
            (Some(m), Some(d)) => {
                let start = days_from_civil(year, m, d) * MS_PER_DAY;
                DateRange::new(start, start + MS_PER_DAY)
            }
        });
    };
    let (Some(m), Some(d)) = (month, day) else { return None };
    // hh:mm[:ss[.fff...]] then Z, +hh:mm or -hh:mm (or nothing: UTC).
    let (clock, offset_minutes) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, mi) = zone.get(1..)?.split_once(':')?;
        (c, sign * (number(h, 2)? * 60 + number(mi, 2)?))
    } else {
        (time, 0)
    };
    let mut fields = clock.split(':');
    let hour = number(fields.next()?, 2)?;
    let minute = fields.next().map(|v| number(v, 2)).map_or(Ok(None), |v| v.map(Some).ok_or(())).ok()?;
    let (second, fraction) = match fields.next() {
        None => (None, None),
        Some(s) => match s.split_once('.') {
            Some((sec, frac)) if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) => (Some(number(sec, 2)?), Some(frac)),
            Some(_) => return None,
            None => (Some(number(s, 2)?), None),
        },
    };
    if fields.next().is_some() || hour > 23 || minute.is_some_and(|v| v > 59) || second.is_some_and(|v| v > 59) {
        return None;
    }
    let base = days_from_civil(year, m, d) * MS_PER_DAY + hour * 3_600_000 + minute.unwrap_or(0) * 60_000 + second.unwrap_or(0) * 1000
        - offset_minutes * 60_000;
    let (start, width) = match (minute, second, fraction) {
        (None, _, _) => (base, 3_600_000),
        (Some(_), None, _) => (base, 60_000),
        (Some(_), Some(_), None) => (base, 1000),
        (Some(_), Some(_), Some(frac)) => {
            let digits = frac.len().min(3);
            let ms: i64 = frac.get(..digits).unwrap_or("0").parse().unwrap_or(0) * 10_i64.pow(3 - digits as u32);
            (base + ms, 10_i64.pow(3 - digits as u32).max(1))
        }
    };
    Some(DateRange::new(start, start + width))
}

/// Search prefixes (R5 search, "prefixes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Split a leading prefix off a value (`gt2026` gives `(Gt, "2026")`); none means `eq`.
    pub fn split(text: &str) -> (Prefix, &str) {
        let prefix = match text.get(..2) {
            Some("eq") => Prefix::Eq,
            Some("ne") => Prefix::Ne,
            Some("gt") => Prefix::Gt,
            Some("lt") => Prefix::Lt,
            Some("ge") => Prefix::Ge,
            Some("le") => Prefix::Le,
            Some("sa") => Prefix::Sa,
            Some("eb") => Prefix::Eb,
            Some("ap") => Prefix::Ap,
            _ => return (Prefix::Eq, text),
        };
        (prefix, text.get(2..).unwrap_or(""))
    }
}

/// Does a target covering `target` satisfy `prefix` against the search range `search`?
/// R5: `eq` the search range contains the target; `gt`/`lt` the target reaches above/below
/// the search range; `ge`/`le` either; `sa`/`eb` the target lies wholly after/before; `ap`
/// the two overlap once the search range is widened by 10 % of its distance from `now`.
pub fn compare_ranges(prefix: Prefix, search: DateRange, target: DateRange, now: i64) -> bool {
    let contains = search.start <= target.start && target.end <= search.end;
    match prefix {
        Prefix::Eq => contains,
        Prefix::Ne => !contains,
        Prefix::Gt => target.end > search.end,
        Prefix::Lt => target.start < search.start,
        Prefix::Ge => target.end > search.end || contains,
        Prefix::Le => target.start < search.start || contains,
        Prefix::Sa => target.start >= search.end,
        Prefix::Eb => target.end <= search.start,
        Prefix::Ap => {
            let distance = (search.start.saturating_sub(now)).saturating_abs().max(search.end.saturating_sub(now).saturating_abs());
            let slack = (distance / 10).max(search.end.saturating_sub(search.start) / 10);
            let widened = DateRange::new(search.start.saturating_sub(slack), search.end.saturating_add(slack));
            widened.start < target.end && target.start < widened.end
        }
    }
}

/// Ordering of two ranges by start, then end (for `_sort` on date parameters).
pub fn order(a: &DateRange, b: &DateRange) -> Ordering {
    a.start.cmp(&b.start).then(a.end.cmp(&b.end))
}
