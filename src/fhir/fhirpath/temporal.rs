//! FHIRPath `Date`, `DateTime` and `Time` values: partial precision, parsing, rendering,
//! comparison, equality and equivalence (spec §6.1 and §6.2, Date/Time rules).
//!
//! In: FHIRPath literal bodies (without `@` / `@T`) and FHIR JSON `date`, `dateTime`,
//! `instant`, `time` strings. Out: values, `Option<Ordering>` / `Option<bool>` for the
//! operators (`None` = empty result), strings for `toString()`.
//! Calendar arithmetic and `lowBoundary()`/`highBoundary()` live in `temporal_calc.rs`.
//! Never panics on input, never reads a local timezone (no tz database), keeps milliseconds
//! at most (extra fraction digits are truncated).

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "temporal_calc.rs"]
mod calc;

pub use calc::{add_to_date, add_to_datetime, add_to_time, TemporalError};

/// How far a value is specified. Seconds and milliseconds are one precision for comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

/// A partial calendar date: `year[-month[-day]]`, years 0001..=9999.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Date {
    year: u16,
    month: Option<u8>,
    day: Option<u8>,
}

/// A partial time of day `hh[:mm[:ss[.fff]]]`, no timezone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Time {
    hour: u8,
    minute: Option<u8>,
    second: Option<u8>,
    millisecond: Option<u16>,
}

/// A partial date and time. A time part needs a full date; an offset needs a time part.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    date: Date,
    time: Option<Time>,
    /// Timezone offset in minutes east of UTC; `Z`, `+00:00` and `-00:00` all become 0.
    offset: Option<i16>,
}

pub(crate) const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;
/// Offsets run from -12:00 to +14:00; a value without one could be anywhere in that span.
pub(crate) const MAX_EAST_MINUTES: i16 = 14 * 60;
pub(crate) const MAX_WEST_MINUTES: i16 = -12 * 60;

impl Precision {
    /// `precision()` digits for a Date/DateTime at this precision (4, 6, 8, 10, 12, 14, 17).
    pub fn date_time_digits(self) -> u32 {
        match self {
            Precision::Year => 4,
            Precision::Month => 6,
            Precision::Day => 8,
            Precision::Hour => 10,
            Precision::Minute => 12,
            Precision::Second => 14,
            Precision::Millisecond => 17,
        }
    }

    /// `precision()` digits for a Time (2, 4, 6, 9); date precisions count as 0.
    pub fn time_digits(self) -> u32 {
        match self {
            Precision::Year | Precision::Month | Precision::Day => 0,
            Precision::Hour => 2,
            Precision::Minute => 4,
            Precision::Second => 6,
            Precision::Millisecond => 9,
        }
    }

    pub(crate) fn from_date_time_digits(digits: u32) -> Option<Precision> {
        ALL.into_iter().find(|p| p.date_time_digits() == digits)
    }

    pub(crate) fn from_time_digits(digits: u32) -> Option<Precision> {
        ALL.into_iter().find(|p| p.time_digits() == digits && digits > 0)
    }
}

const ALL: [Precision; 7] =
    [Precision::Year, Precision::Month, Precision::Day, Precision::Hour, Precision::Minute, Precision::Second, Precision::Millisecond];

impl Date {
    /// A validated date; `None` for year 0 or > 9999, a bad month or day, or a day without month.
    pub fn new(year: u16, month: Option<u8>, day: Option<u8>) -> Option<Date> {
        let ok_year = (1..=9999).contains(&year);
        let ok_month = month.is_none_or(|m| (1..=12).contains(&m));
        let ok_day = match (month, day) {
            (_, None) => true,
            (Some(m), Some(d)) => d >= 1 && d <= days_in_month(i64::from(year), m),
            (None, Some(_)) => false,
        };
        (ok_year && ok_month && ok_day).then_some(Date { year, month, day })
    }

    /// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (FHIR `date`, FHIRPath literal without `@`).
    pub fn parse(s: &str) -> Option<Date> {
        let (date, rest) = parse_date_prefix(s)?;
        rest.is_empty().then_some(date)
    }

    /// Today's date in UTC (the engine has no timezone database).
    pub fn today() -> Date {
        DateTime::now().date()
    }

    pub fn year(&self) -> u16 {
        self.year
    }
    pub fn month(&self) -> Option<u8> {
        self.month
    }
    pub fn day(&self) -> Option<u8> {
        self.day
    }

    pub fn precision(&self) -> Precision {
        match (self.month, self.day) {
            (None, _) => Precision::Year,
            (Some(_), None) => Precision::Month,
            (Some(_), Some(_)) => Precision::Day,
        }
    }

    /// `precision()`: 4, 6 or 8.
    pub fn precision_digits(&self) -> u32 {
        self.precision().date_time_digits()
    }

    /// `YYYY[-MM[-DD]]`, as `toString()` renders it.
    pub fn to_fhirpath_string(&self) -> String {
        let mut out = format!("{:04}", self.year);
        if let Some(m) = self.month {
            out.push_str(&format!("-{m:02}"));
        }
        if let Some(d) = self.day {
            out.push_str(&format!("-{d:02}"));
        }
        out
    }

    /// The implicit Date → DateTime conversion: same components, no time, no offset.
    pub fn to_datetime(&self) -> DateTime {
        DateTime::from_date(self)
    }
}

impl Time {
    /// A validated time (hour < 24, minute and second < 60, millisecond < 1000, no gaps).
    pub fn new(hour: u8, minute: Option<u8>, second: Option<u8>, millisecond: Option<u16>) -> Option<Time> {
        let ok = hour < 24
            && minute.is_none_or(|m| m < 60)
            && second.is_none_or(|s| s < 60 && minute.is_some())
            && millisecond.is_none_or(|ms| ms < 1000 && second.is_some());
        ok.then_some(Time { hour, minute, second, millisecond })
    }

    /// Parses `hh[:mm[:ss[.f+]]]` (FHIR `time`, FHIRPath literal without `@T`). A timezone is
    /// rejected: FHIRPath times have none (suite testLiteralTimeUTC).
    pub fn parse(s: &str) -> Option<Time> {
        let (time, rest) = parse_time_prefix(s)?;
        rest.is_empty().then_some(time)
    }

    /// The current UTC time of day to the millisecond.
    pub fn now() -> Time {
        DateTime::now().time.unwrap_or(Time { hour: 0, minute: Some(0), second: Some(0), millisecond: Some(0) })
    }

    pub fn hour(&self) -> u8 {
        self.hour
    }
    pub fn minute(&self) -> Option<u8> {
        self.minute
    }
    pub fn second(&self) -> Option<u8> {
        self.second
    }
    pub fn millisecond(&self) -> Option<u16> {
        self.millisecond
    }

    pub fn precision(&self) -> Precision {
        match (self.minute, self.second, self.millisecond) {
            (None, _, _) => Precision::Hour,
            (Some(_), None, _) => Precision::Minute,
            (Some(_), Some(_), None) => Precision::Second,
            (Some(_), Some(_), Some(_)) => Precision::Millisecond,
        }
    }

    /// `precision()`: 2, 4, 6 or 9.
    pub fn precision_digits(&self) -> u32 {
        self.precision().time_digits()
    }

    /// `hh[:mm[:ss[.fff]]]`, as `toString()` renders it.
    pub fn to_fhirpath_string(&self) -> String {
        let mut out = format!("{:02}", self.hour);
        if let Some(m) = self.minute {
            out.push_str(&format!(":{m:02}"));
        }
        if let Some(s) = self.second {
            out.push_str(&format!(":{s:02}"));
        }
        if let Some(ms) = self.millisecond {
            out.push_str(&format!(".{ms:03}"));
        }
        out
    }

    /// Milliseconds since midnight of the start of this time.
    pub(crate) fn start_ms(&self) -> i64 {
        i64::from(self.hour) * MS_PER_HOUR
            + i64::from(self.minute.unwrap_or(0)) * 60_000
            + i64::from(self.second.unwrap_or(0)) * 1000
            + i64::from(self.millisecond.unwrap_or(0))
    }

    /// The span this partial time stands for, `[start, end)` in ms since midnight.
    /// Seconds and milliseconds are one precision, so both are single instants.
    fn span_ms(&self) -> (i64, i64) {
        let start = self.start_ms();
        let width = match self.precision() {
            Precision::Hour => MS_PER_HOUR,
            Precision::Minute => 60_000,
            _ => 1,
        };
        (start, start + width)
    }
}

impl DateTime {
    /// A DateTime from parts; `None` when a time is given without a full date or an offset
    /// without a time, or the offset is outside -12:00..=+14:00.
    pub fn new(date: Date, time: Option<Time>, offset_minutes: Option<i16>) -> Option<DateTime> {
        let ok = (time.is_none() || date.day.is_some())
            && (offset_minutes.is_none() || time.is_some())
            && offset_minutes.is_none_or(|o| (MAX_WEST_MINUTES..=MAX_EAST_MINUTES).contains(&o));
        ok.then_some(DateTime { date, time, offset: offset_minutes })
    }

    /// Parses a FHIRPath DateTime literal body (`2015T`, `2015-02-04T14:34:28.123+10:00`) or a
    /// FHIR JSON `dateTime`/`instant` (`2014-01`, `2014-01-25T10:00:00.123Z`).
    pub fn parse(s: &str) -> Option<DateTime> {
        let (date, rest) = parse_date_prefix(s)?;
        let Some(rest) = rest.strip_prefix('T') else {
            return rest.is_empty().then(|| DateTime::from_date(&date));
        };
        if rest.is_empty() {
            return Some(DateTime::from_date(&date));
        }
        let (time, rest) = parse_time_prefix(rest)?;
        let offset = match rest {
            "" => None,
            "Z" => Some(0),
            _ => Some(parse_offset(rest)?),
        };
        DateTime::new(date, Some(time), offset)
    }

    /// The current instant in UTC to the millisecond, offset `Z`.
    pub fn now() -> DateTime {
        let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(0),
            Err(e) => i64::try_from(e.duration().as_millis()).map_or(0, |ms| -ms),
        };
        DateTime::from_unix_millis(ms, 0).unwrap_or_else(|| DateTime::from_date(&Date { year: 1970, month: Some(1), day: Some(1) }))
    }

    /// The millisecond-precision DateTime `ms` after the Unix epoch, shown at `offset_minutes`.
    pub fn from_unix_millis(ms: i64, offset_minutes: i16) -> Option<DateTime> {
        let local = ms.checked_add(i64::from(offset_minutes) * 60_000)?;
        let fields = calc::Fields::from_epoch_ms(local, Precision::Millisecond)?;
        fields.to_datetime(Some(offset_minutes))
    }

    /// `toDateTime()` on a Date: same date components, time and offset empty (not zero).
    pub fn from_date(date: &Date) -> DateTime {
        DateTime { date: date.clone(), time: None, offset: None }
    }

    /// `toDate()` on a DateTime: the date components as written, no timezone shift.
    pub fn date(&self) -> Date {
        self.date.clone()
    }

    /// The time part, when the value is more precise than a day.
    pub fn time(&self) -> Option<Time> {
        self.time.clone()
    }

    pub fn offset_minutes(&self) -> Option<i16> {
        self.offset
    }

    pub fn precision(&self) -> Precision {
        self.time.as_ref().map_or_else(|| self.date.precision(), Time::precision)
    }

    /// `precision()`: 4, 6, 8, 10, 12, 14 or 17.
    pub fn precision_digits(&self) -> u32 {
        self.precision().date_time_digits()
    }

    /// `YYYY[-MM[-DD[Thh[:mm[:ss[.fff]]][Z|±hh:mm]]]]`: no trailing `T` on a date-only value,
    /// as the suite prints `@2014-01-01T08.lowBoundary(8)` as `2014-01-01`.
    pub fn to_fhirpath_string(&self) -> String {
        let mut out = self.date.to_fhirpath_string();
        if let Some(t) = &self.time {
            out.push('T');
            out.push_str(&t.to_fhirpath_string());
            if let Some(o) = self.offset {
                out.push_str(&offset_string(o));
            }
        }
        out
    }

    /// The span this value stands for, `[start, end)` in ms since the epoch, on its own
    /// wall clock (no offset applied).
    fn local_span_ms(&self) -> (i64, i64) {
        let d = &self.date;
        let year = i64::from(d.year);
        match (d.month, d.day, &self.time) {
            (None, _, _) => (days_from_civil(year, 1, 1) * MS_PER_DAY, days_from_civil(year + 1, 1, 1) * MS_PER_DAY),
            (Some(m), None, _) => {
                let start = days_from_civil(year, m, 1) * MS_PER_DAY;
                (start, start + i64::from(days_in_month(year, m)) * MS_PER_DAY)
            }
            (Some(m), Some(day), None) => {
                let start = days_from_civil(year, m, day) * MS_PER_DAY;
                (start, start + MS_PER_DAY)
            }
            (Some(m), Some(day), Some(t)) => {
                let base = days_from_civil(year, m, day) * MS_PER_DAY;
                let (s, e) = t.span_ms();
                (base + s, base + e)
            }
        }
    }
}

/// `<`, `>`, `<=`, `>=` on Dates; `None` when the precisions differ and the common part is equal.
pub fn compare_dates(a: &Date, b: &Date) -> Option<Ordering> {
    compare_datetimes(&DateTime::from_date(a), &DateTime::from_date(b))
}

/// `=` on Dates: `None` (empty) when precisions differ and the common part is equal.
pub fn dates_equal(a: &Date, b: &Date) -> Option<bool> {
    compare_dates(a, b).map(Ordering::is_eq)
}

/// `~` on Dates: different precision gives `false`.
pub fn dates_equivalent(a: &Date, b: &Date) -> bool {
    dates_equal(a, b) == Some(true)
}

/// `<`, `>`, `<=`, `>=` on DateTimes.
///
/// Each value stands for the span of instants its precision leaves open; the result is
/// definite only when the spans are equal or disjoint, which is the spec's precision-by-precision
/// rule (seconds and milliseconds as one decimal precision). When both values have a time and
/// an offset they are compared in UTC. When only one has an offset, the other could carry any
/// offset from -12:00 to +14:00, so it is widened by that much: `@2012-04-15T15:00:00Z =
/// @2012-04-15T10:00:00` is empty (suite testEquality23). A value without a time part is
/// compared as written, ignoring the other side's offset.
pub fn compare_datetimes(a: &DateTime, b: &DateTime) -> Option<Ordering> {
    let (mut sa, mut sb) = (a.local_span_ms(), b.local_span_ms());
    if a.time.is_some() && b.time.is_some() {
        match (a.offset, b.offset) {
            (Some(x), Some(y)) => {
                sa = shift(sa, x);
                sb = shift(sb, y);
            }
            (Some(x), None) => {
                sa = shift(sa, x);
                sb = widen(sb);
            }
            (None, Some(y)) => {
                sa = widen(sa);
                sb = shift(sb, y);
            }
            (None, None) => {}
        }
    }
    compare_spans(sa, sb)
}

/// `=` on DateTimes; `None` (empty) when the result is unknown.
pub fn datetimes_equal(a: &DateTime, b: &DateTime) -> Option<bool> {
    compare_datetimes(a, b).map(Ordering::is_eq)
}

/// `~` on DateTimes: unknown (different precision, one offset missing) gives `false`.
pub fn datetimes_equivalent(a: &DateTime, b: &DateTime) -> bool {
    datetimes_equal(a, b) == Some(true)
}

/// Date against DateTime: the Date is implicitly converted to a DateTime first.
pub fn compare_date_datetime(a: &Date, b: &DateTime) -> Option<Ordering> {
    compare_datetimes(&DateTime::from_date(a), b)
}

/// `=` for a Date against a DateTime (after the implicit conversion).
pub fn date_datetime_equal(a: &Date, b: &DateTime) -> Option<bool> {
    datetimes_equal(&DateTime::from_date(a), b)
}

/// `~` for a Date against a DateTime (after the implicit conversion).
pub fn date_datetime_equivalent(a: &Date, b: &DateTime) -> bool {
    datetimes_equivalent(&DateTime::from_date(a), b)
}

/// `<`, `>`, `<=`, `>=` on Times; same precision rules as dates, no timezone.
pub fn compare_times(a: &Time, b: &Time) -> Option<Ordering> {
    compare_spans(a.span_ms(), b.span_ms())
}

/// `=` on Times.
pub fn times_equal(a: &Time, b: &Time) -> Option<bool> {
    compare_times(a, b).map(Ordering::is_eq)
}

/// `~` on Times.
pub fn times_equivalent(a: &Time, b: &Time) -> bool {
    times_equal(a, b) == Some(true)
}

fn compare_spans(a: (i64, i64), b: (i64, i64)) -> Option<Ordering> {
    if a == b {
        Some(Ordering::Equal)
    } else if a.1 <= b.0 {
        Some(Ordering::Less)
    } else if b.1 <= a.0 {
        Some(Ordering::Greater)
    } else {
        None
    }
}

/// Local wall-clock span to UTC: UTC = local - offset.
fn shift(span: (i64, i64), offset_minutes: i16) -> (i64, i64) {
    let by = i64::from(offset_minutes) * 60_000;
    (span.0 - by, span.1 - by)
}

/// Every UTC span a wall-clock span without an offset could mean.
fn widen(span: (i64, i64)) -> (i64, i64) {
    (span.0 - i64::from(MAX_EAST_MINUTES) * 60_000, span.1 - i64::from(MAX_WEST_MINUTES) * 60_000)
}

pub(crate) fn offset_string(minutes: i16) -> String {
    if minutes == 0 {
        return "Z".to_string();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    let abs = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
}

/// Reads `YYYY[-MM[-DD]]` from the start of `s`, returning the rest.
fn parse_date_prefix(s: &str) -> Option<(Date, &str)> {
    let year = fixed_digits(s, 4)?;
    let mut rest = s.get(4..)?;
    let mut month = None;
    let mut day = None;
    if let Some(m) = rest.strip_prefix('-') {
        month = Some(u8::try_from(fixed_digits(m, 2)?).ok()?);
        rest = m.get(2..)?;
        if let Some(d) = rest.strip_prefix('-') {
            day = Some(u8::try_from(fixed_digits(d, 2)?).ok()?);
            rest = d.get(2..)?;
        }
    }
    Some((Date::new(u16::try_from(year).ok()?, month, day)?, rest))
}

/// Reads `hh[:mm[:ss[.f+]]]` from the start of `s`, returning the rest. Fraction digits past
/// the third are dropped (millisecond step, spec §Time).
fn parse_time_prefix(s: &str) -> Option<(Time, &str)> {
    let hour = u8::try_from(fixed_digits(s, 2)?).ok()?;
    let mut rest = s.get(2..)?;
    let (mut minute, mut second, mut millisecond) = (None, None, None);
    if let Some(m) = rest.strip_prefix(':') {
        minute = Some(u8::try_from(fixed_digits(m, 2)?).ok()?);
        rest = m.get(2..)?;
        if let Some(sec) = rest.strip_prefix(':') {
            second = Some(u8::try_from(fixed_digits(sec, 2)?).ok()?);
            rest = sec.get(2..)?;
            if let Some(frac) = rest.strip_prefix('.') {
                let n = frac.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return None;
                }
                let digits = frac.get(..n)?;
                let first3 = format!("{:0<3}", digits.get(..n.min(3))?);
                millisecond = Some(first3.parse::<u16>().ok()?);
                rest = frac.get(n..)?;
            }
        }
    }
    Some((Time::new(hour, minute, second, millisecond)?, rest))
}

/// `+hh:mm` / `-hh:mm`, hours up to 14.
fn parse_offset(s: &str) -> Option<i16> {
    let (sign, body) = match s.strip_prefix('+') {
        Some(b) => (1, b),
        None => (-1, s.strip_prefix('-')?),
    };
    if body.len() != 5 || body.get(2..3) != Some(":") {
        return None;
    }
    let h = i16::try_from(fixed_digits(body, 2)?).ok()?;
    let m = i16::try_from(fixed_digits(body.get(3..)?, 2)?).ok()?;
    let total = h * 60 + m;
    (m < 60 && total <= MAX_EAST_MINUTES).then_some(sign * total)
}

/// Exactly `n` ASCII digits at the start of `s`, as a number.
fn fixed_digits(s: &str, n: usize) -> Option<u32> {
    let part = s.get(..n)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

pub(crate) fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(crate) fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u8::try_from(month).unwrap_or(1), u8::try_from(day).unwrap_or(1))
}

#[cfg(test)]
#[path = "temporal_tests.rs"]
mod tests;
