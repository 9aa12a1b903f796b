//! Calendar arithmetic (`+`/`-` of a time-valued Quantity) and `lowBoundary()`/`highBoundary()`
//! for `temporal`'s Date, DateTime and Time (spec §Date/Time Arithmetic, §Utility functions).
//!
//! In: a value and a `Quantity` or a digit-count precision. Out: a new value, `None` (empty)
//! or a `TemporalError` where the spec says the evaluation signals an error.
//! Never panics: every step on input-derived numbers is checked, and results outside years
//! 0001..=9999 are errors. Never touches timezones: arithmetic runs on the wall clock as written.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::super::quantity::Quantity;
use super::{civil_from_days, days_from_civil, days_in_month, Date, DateTime, Precision, Time, MS_PER_DAY};

/// Why date/time arithmetic signals an error (the engine turns these into execution errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemporalError {
    /// Not a time-valued unit, a UCUM `'a'`/`'mo'` (not calendar units), or a date unit on a Time.
    #[error("unit '{unit}' cannot be added to or subtracted from a {target}")]
    UnsupportedUnit { unit: String, target: &'static str },
    /// The result (or the quantity itself) is outside the supported range.
    #[error("date/time arithmetic result is outside years 0001-9999")]
    OutOfRange,
}

/// A calendar step; hours and smaller are kept as milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Years(i64),
    Months(i64),
    Days(i64),
    Millis(i64),
}

/// `date ± quantity`. Never returns `Ok(None)` today; the `Option` leaves room for the engine's
/// empty-propagation without an API change.
pub fn add_to_date(d: &Date, q: &Quantity, negate: bool) -> Result<Option<Date>, TemporalError> {
    let step = step_of(q, negate, "Date")?;
    let fields = Fields::from_date(d).apply(step, d.precision())?;
    Ok(Some(fields.to_date()?))
}

/// `datetime ± quantity`, on the wall clock as written; the offset is kept.
pub fn add_to_datetime(dt: &DateTime, q: &Quantity, negate: bool) -> Result<Option<DateTime>, TemporalError> {
    let step = step_of(q, negate, "DateTime")?;
    let fields = Fields::from_datetime(dt).apply(step, dt.precision())?;
    Ok(Some(fields.to_datetime(dt.offset).ok_or(TemporalError::OutOfRange)?))
}

/// `time ± quantity`; wraps around midnight. Years, months, weeks and days are errors.
pub fn add_to_time(t: &Time, q: &Quantity, negate: bool) -> Result<Option<Time>, TemporalError> {
    let step = step_of(q, negate, "Time")?;
    let Step::Millis(ms) = step else {
        return Err(TemporalError::UnsupportedUnit { unit: q.unit.clone(), target: "Time" });
    };
    let p = t.precision();
    let moved = t.start_ms().checked_add(truncate_to(ms, unit_ms(p))).ok_or(TemporalError::OutOfRange)?.rem_euclid(MS_PER_DAY);
    let f = Fields::from_epoch_ms(moved, p).ok_or(TemporalError::OutOfRange)?;
    Ok(f.to_time())
}

/// The quantity as a calendar step. Calendar keywords and the UCUM definite units `wk`, `d`,
/// `h`, `min`, `s`, `ms` are accepted; `'a'` and `'mo'` are errors (suite testPlusDate14/16).
/// Fractions are dropped except for seconds, which keep milliseconds (suite testPlusDate19).
fn step_of(q: &Quantity, negate: bool, target: &'static str) -> Result<Step, TemporalError> {
    let unsupported = || TemporalError::UnsupportedUnit { unit: q.unit.clone(), target };
    let value = if negate { -q.value } else { q.value };
    let whole = || value.trunc().to_i64().ok_or(TemporalError::OutOfRange);
    let times = |n: i64, k: i64| n.checked_mul(k).ok_or(TemporalError::OutOfRange);
    Ok(match q.unit.as_str() {
        "year" | "years" => Step::Years(whole()?),
        "month" | "months" => Step::Months(whole()?),
        "week" | "weeks" | "wk" => Step::Days(times(whole()?, 7)?),
        "day" | "days" | "d" => Step::Days(whole()?),
        "hour" | "hours" | "h" => Step::Millis(times(whole()?, 3_600_000)?),
        "minute" | "minutes" | "min" => Step::Millis(times(whole()?, 60_000)?),
        "second" | "seconds" | "s" => {
            let ms = value.checked_mul(Decimal::ONE_THOUSAND).ok_or(TemporalError::OutOfRange)?;
            Step::Millis(ms.trunc().to_i64().ok_or(TemporalError::OutOfRange)?)
        }
        "millisecond" | "milliseconds" | "ms" => Step::Millis(whole()?),
        _ => return Err(unsupported()),
    })
}

/// Milliseconds in one unit of a time precision (1 for seconds-with-millis).
fn unit_ms(p: Precision) -> i64 {
    match p {
        Precision::Hour => 3_600_000,
        Precision::Minute => 60_000,
        Precision::Second => 1000,
        _ => 1,
    }
}

/// Drops the part of `ms` finer than `unit` (toward zero): a partial value only moves in
/// whole units of its own precision (spec: `@2014 + 23 months` is `@2015`).
fn truncate_to(ms: i64, unit: i64) -> i64 {
    (ms / unit) * unit
}

/// Every component of a value, the missing ones at their lowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    millisecond: u16,
    precision: Precision,
}

impl Fields {
    fn from_date(d: &Date) -> Fields {
        Fields {
            year: i64::from(d.year),
            month: d.month.unwrap_or(1),
            day: d.day.unwrap_or(1),
            hour: 0,
            minute: 0,
            second: 0,
            millisecond: 0,
            precision: d.precision(),
        }
    }

    fn from_datetime(dt: &DateTime) -> Fields {
        let mut f = Fields::from_date(&dt.date);
        if let Some(t) = &dt.time {
            f.hour = t.hour;
            f.minute = t.minute.unwrap_or(0);
            f.second = t.second.unwrap_or(0);
            f.millisecond = t.millisecond.unwrap_or(0);
        }
        f.precision = dt.precision();
        f
    }

    /// The components of `ms` after the epoch (any wall clock), kept to `precision`.
    pub(crate) fn from_epoch_ms(ms: i64, precision: Precision) -> Option<Fields> {
        let days = ms.div_euclid(MS_PER_DAY);
        let in_day = ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Some(Fields {
            year,
            month,
            day,
            hour: u8::try_from(in_day / 3_600_000).ok()?,
            minute: u8::try_from(in_day / 60_000 % 60).ok()?,
            second: u8::try_from(in_day / 1000 % 60).ok()?,
            millisecond: u16::try_from(in_day % 1000).ok()?,
            precision,
        })
    }

    fn epoch_ms(&self) -> Option<i64> {
        let days = days_from_civil(self.year, self.month, self.day);
        let in_day = i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millisecond);
        days.checked_mul(MS_PER_DAY)?.checked_add(in_day)
    }

    /// Applies a step at the value's own precision, converting the step down to it when the
    /// value is coarser (months → years /12, days → months /30 → years /365; spec table).
    fn apply(mut self, step: Step, p: Precision) -> Result<Fields, TemporalError> {
        let over = TemporalError::OutOfRange;
        match (step, p) {
            (Step::Years(n), _) => self.year = self.year.checked_add(n).ok_or(over)?,
            (Step::Months(n), Precision::Year) => self.year = self.year.checked_add(n / 12).ok_or(over)?,
            (Step::Months(n), _) => {
                let total = self.year.checked_mul(12).and_then(|y| y.checked_add(i64::from(self.month) - 1 + n)).ok_or(over)?;
                self.year = total.div_euclid(12);
                self.month = u8::try_from(total.rem_euclid(12) + 1).map_err(|_| TemporalError::OutOfRange)?;
            }
            (Step::Days(n), Precision::Year) => self.year = self.year.checked_add(n / 365).ok_or(over)?,
            (Step::Days(n), Precision::Month) => return self.apply(Step::Months(n / 30), p),
            (Step::Millis(n), Precision::Year | Precision::Month | Precision::Day) => return self.apply(Step::Days(n / MS_PER_DAY), p),
            (Step::Days(n), _) => {
                let moved = n.checked_mul(MS_PER_DAY).ok_or(over)?;
                return self.moved_by(moved, p);
            }
            (Step::Millis(n), _) => return self.moved_by(truncate_to(n, unit_ms(p)), p),
        }
        self.check_year()?;
        self.day = self.day.min(days_in_month(self.year, self.month));
        Ok(self)
    }

    fn moved_by(self, ms: i64, p: Precision) -> Result<Fields, TemporalError> {
        let at = self.epoch_ms().and_then(|e| e.checked_add(ms)).ok_or(TemporalError::OutOfRange)?;
        // Years past 9999 are rejected below; this bound keeps the calendar maths in range.
        if at.unsigned_abs() > 400_000_000_000_000 {
            return Err(TemporalError::OutOfRange);
        }
        let f = Fields::from_epoch_ms(at, p).ok_or(TemporalError::OutOfRange)?;
        f.check_year()?;
        Ok(f)
    }

    fn check_year(&self) -> Result<(), TemporalError> {
        if (1..=9999).contains(&self.year) {
            Ok(())
        } else {
            Err(TemporalError::OutOfRange)
        }
    }

    fn to_date(self) -> Result<Date, TemporalError> {
        let year = u16::try_from(self.year).map_err(|_| TemporalError::OutOfRange)?;
        let p = self.precision;
        let month = (p >= Precision::Month).then_some(self.month);
        let day = (p >= Precision::Day).then_some(self.day);
        Date::new(year, month, day).ok_or(TemporalError::OutOfRange)
    }

    fn to_time(self) -> Option<Time> {
        let p = self.precision;
        Time::new(
            self.hour,
            (p >= Precision::Minute).then_some(self.minute),
            (p >= Precision::Second).then_some(self.second),
            (p >= Precision::Millisecond).then_some(self.millisecond),
        )
    }

    pub(crate) fn to_datetime(self, offset: Option<i16>) -> Option<DateTime> {
        let date = self.to_date().ok()?;
        if self.precision <= Precision::Day {
            return Some(DateTime::from_date(&date));
        }
        DateTime::new(date, self.to_time(), offset)
    }

    /// Fills every component finer than the current precision up to `target` with its lowest
    /// (`high == false`) or highest value; a coarser `target` truncates.
    fn boundary(mut self, target: Precision, high: bool) -> Fields {
        let p = self.precision;
        if high {
            if p < Precision::Month {
                self.month = 12;
            }
            if p < Precision::Day {
                self.day = days_in_month(self.year, self.month);
            }
            if p < Precision::Hour {
                self.hour = 23;
            }
            if p < Precision::Minute {
                self.minute = 59;
            }
            if p < Precision::Second {
                self.second = 59;
            }
            if p < Precision::Millisecond {
                self.millisecond = 999;
            }
        }
        self.precision = target;
        self
    }
}

impl Date {
    /// `lowBoundary([precision])`: precision 4, 6 or 8 (default 8); other digits give `None`.
    pub fn low_boundary(&self, precision: Option<u32>) -> Option<Date> {
        self.boundary(precision, false)
    }

    /// `highBoundary([precision])`: `@2014.highBoundary(6)` is `@2014-12`.
    pub fn high_boundary(&self, precision: Option<u32>) -> Option<Date> {
        self.boundary(precision, true)
    }

    fn boundary(&self, precision: Option<u32>, high: bool) -> Option<Date> {
        let target = Precision::from_date_time_digits(precision.unwrap_or(8)).filter(|p| *p <= Precision::Day)?;
        Fields::from_date(self).boundary(target, high).to_date().ok()
    }
}

impl DateTime {
    /// `lowBoundary([precision])`: digits 4, 6, 8, 10, 12, 14 or 17 (default 17).
    ///
    /// A value without an offset gets the earliest one, +14:00, once the result has a time
    /// (suite LowBoundaryDateTimeMillisecond1); a value with one keeps it.
    pub fn low_boundary(&self, precision: Option<u32>) -> Option<DateTime> {
        self.boundary(precision, false)
    }

    /// `highBoundary([precision])`; without an offset the latest one, -12:00, is used.
    pub fn high_boundary(&self, precision: Option<u32>) -> Option<DateTime> {
        self.boundary(precision, true)
    }

    fn boundary(&self, precision: Option<u32>, high: bool) -> Option<DateTime> {
        let target = Precision::from_date_time_digits(precision.unwrap_or(17))?;
        let mut fields = Fields::from_datetime(self);
        // Suite HighBoundaryDateTimeMillisecond1/3: an hour-only value is read as hh:00, since
        // FHIR has no hour-only dateTime (`@2014-01-01T08.highBoundary(17)` = `08:00:59.999`).
        // The spec text's example says 08:59:59.999; the suite is authoritative here.
        if fields.precision == Precision::Hour {
            fields.precision = Precision::Minute;
        }
        let offset = match (self.offset, high) {
            (Some(o), _) => o,
            (None, false) => super::MAX_EAST_MINUTES,
            (None, true) => super::MAX_WEST_MINUTES,
        };
        fields.boundary(target, high).to_datetime(Some(offset))
    }
}

impl Time {
    /// `lowBoundary([precision])`: digits 2, 4, 6 or 9 (default 9).
    pub fn low_boundary(&self, precision: Option<u32>) -> Option<Time> {
        self.boundary(precision, false)
    }

    /// `highBoundary([precision])`: `@T10:30.highBoundary(9)` is `@T10:30:59.999`.
    pub fn high_boundary(&self, precision: Option<u32>) -> Option<Time> {
        self.boundary(precision, true)
    }

    fn boundary(&self, precision: Option<u32>, high: bool) -> Option<Time> {
        let target = Precision::from_time_digits(precision.unwrap_or(9))?;
        let mut fields = Fields::from_epoch_ms(self.start_ms(), self.precision())?;
        fields.precision = self.precision();
        fields.boundary(target, high).to_time()
    }
}
