//! FHIRPath `Quantity`: a decimal value with a UCUM unit or a calendar duration keyword.
//!
//! Owns: `toQuantity()` string parsing, `toString()` rendering, unit conversion (UCUM subset in
//! `quantity_units.rs` plus the calendar table of spec §Time-valued Quantities), `=`, `~`,
//! ordering, `comparable()`, `+ - * /`, and the decimal boundaries/precision on quantities.
//! In: quantities and unit strings. Out: `Option` results, `None` meaning an empty collection.
//! Never panics on input, never uses floating point, never treats `year`/`month` and UCUM
//! `'a'`/`'mo'` as equal (only equivalent).

use std::cmp::Ordering;

use rust_decimal::Decimal;

use super::decimal::{
    decimal_high_boundary, decimal_low_boundary, decimal_precision, decimal_to_string, decimals_equivalent, negate_decimal, parse_decimal,
};

#[path = "quantity_units.rs"]
mod units;

use units::{kelvin_to_special, merge, parse_terms, render, resolve, special_to_kelvin, Unit};

/// A FHIRPath Quantity. `unit` is a UCUM code, a calendar keyword (singular or plural, as
/// written), or `1` for a unitless quantity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: String,
}

/// Time units, least granular first (the order of the spec's conversion table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimeUnit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
}

/// How a unit string is understood.
#[derive(Clone, Debug)]
enum Kind {
    Calendar(TimeUnit),
    /// A UCUM unit; the time unit is set when it is one of `a mo wk d h min s ms`.
    Ucum(Unit, Option<TimeUnit>),
}

const TIME_UNITS: [TimeUnit; 8] = [
    TimeUnit::Year,
    TimeUnit::Month,
    TimeUnit::Week,
    TimeUnit::Day,
    TimeUnit::Hour,
    TimeUnit::Minute,
    TimeUnit::Second,
    TimeUnit::Millisecond,
];

impl TimeUnit {
    fn keyword(self) -> (&'static str, &'static str) {
        match self {
            TimeUnit::Year => ("year", "years"),
            TimeUnit::Month => ("month", "months"),
            TimeUnit::Week => ("week", "weeks"),
            TimeUnit::Day => ("day", "days"),
            TimeUnit::Hour => ("hour", "hours"),
            TimeUnit::Minute => ("minute", "minutes"),
            TimeUnit::Second => ("second", "seconds"),
            TimeUnit::Millisecond => ("millisecond", "milliseconds"),
        }
    }

    fn ucum(self) -> &'static str {
        match self {
            TimeUnit::Year => "a",
            TimeUnit::Month => "mo",
            TimeUnit::Week => "wk",
            TimeUnit::Day => "d",
            TimeUnit::Hour => "h",
            TimeUnit::Minute => "min",
            TimeUnit::Second => "s",
            TimeUnit::Millisecond => "ms",
        }
    }

    /// Calendar length in seconds: a year is 365 days and a month 30 (spec conversion table).
    fn calendar_seconds(self) -> Decimal {
        match self {
            TimeUnit::Year => Decimal::from(31_536_000),
            TimeUnit::Month => Decimal::from(2_592_000),
            TimeUnit::Week => Decimal::from(604_800),
            TimeUnit::Day => Decimal::from(86_400),
            TimeUnit::Hour => Decimal::from(3600),
            TimeUnit::Minute => Decimal::from(60),
            TimeUnit::Second => Decimal::ONE,
            TimeUnit::Millisecond => Decimal::new(1, 3),
        }
    }

    /// Year and month are the units whose calendar and UCUM forms differ.
    fn is_approximate(self) -> bool {
        matches!(self, TimeUnit::Year | TimeUnit::Month)
    }
}

/// Whether a bare word is a calendar duration keyword, singular or plural.
pub fn is_calendar_keyword(unit: &str) -> bool {
    calendar_unit(unit).is_some()
}

fn calendar_unit(unit: &str) -> Option<TimeUnit> {
    TIME_UNITS.into_iter().find(|t| t.keyword().0 == unit || t.keyword().1 == unit)
}

fn kind(unit: &str) -> Option<Kind> {
    if let Some(t) = calendar_unit(unit) {
        return Some(Kind::Calendar(t));
    }
    let resolved = resolve(&parse_terms(unit)?)?;
    Some(Kind::Ucum(resolved, TIME_UNITS.into_iter().find(|t| t.ucum() == unit)))
}

/// `value * num / den`, multiplying first so exact ratios stay exact.
fn scale(value: Decimal, num: Decimal, den: Decimal) -> Option<Decimal> {
    value.checked_mul(num)?.checked_div(den)
}

fn ucum_convert(value: Decimal, from: &Unit, to: &Unit) -> Option<Decimal> {
    if from.dims != to.dims {
        return None;
    }
    match (from.special, to.special) {
        (None, None) => scale(value, from.factor, to.factor),
        (Some(s), None) => scale(special_to_kelvin(value, s)?, Decimal::ONE, to.factor),
        (None, Some(s)) => kelvin_to_special(scale(value, from.factor, Decimal::ONE)?, s),
        (Some(a), Some(b)) => kelvin_to_special(special_to_kelvin(value, a)?, b),
    }
}

fn calendar_convert(value: Decimal, from: TimeUnit, to: TimeUnit) -> Option<Decimal> {
    match (from, to) {
        (TimeUnit::Year, TimeUnit::Month) => value.checked_mul(Decimal::from(12)),
        (TimeUnit::Month, TimeUnit::Year) => value.checked_div(Decimal::from(12)),
        _ => scale(value, from.calendar_seconds(), to.calendar_seconds()),
    }
}

/// Converts `value` from one unit to another. The flag is set when the conversion crossed
/// between calendar and UCUM units at year or month, where `=` and ordering give empty.
/// Across systems the value is converted inside its own system to the counterpart of the
/// target unit, then relabelled (spec §Time-valued unit conversions).
fn convert(value: Decimal, from: &Kind, to: &Kind) -> Option<(Decimal, bool)> {
    match (from, to) {
        (Kind::Calendar(a), Kind::Calendar(b)) => Some((calendar_convert(value, *a, *b)?, false)),
        (Kind::Ucum(a, _), Kind::Ucum(b, _)) => Some((ucum_convert(value, a, b)?, false)),
        (Kind::Calendar(a), Kind::Ucum(_, Some(b))) => Some((calendar_convert(value, *a, *b)?, b.is_approximate())),
        (Kind::Calendar(a), Kind::Ucum(b, None)) => {
            let relabelled = resolve(&parse_terms(a.ucum())?)?;
            Some((ucum_convert(value, &relabelled, b)?, a.is_approximate()))
        }
        (Kind::Ucum(a, _), Kind::Calendar(b)) => {
            let counterpart = resolve(&parse_terms(b.ucum())?)?;
            Some((ucum_convert(value, a, &counterpart)?, b.is_approximate()))
        }
    }
}

/// Orders two commensurable units by size: `Greater` when `a` is the less granular one.
/// Time units of either system compare by their row in the conversion table.
fn granularity(a: &Kind, b: &Kind) -> Option<Ordering> {
    let time = |k: &Kind| match k {
        Kind::Calendar(t) | Kind::Ucum(_, Some(t)) => Some(*t),
        Kind::Ucum(_, None) => None,
    };
    if let (Some(x), Some(y)) = (time(a), time(b)) {
        return Some(y.cmp(&x));
    }
    let size = |k: &Kind| -> Option<Decimal> {
        match k {
            Kind::Calendar(t) => Some(t.calendar_seconds()),
            Kind::Ucum(u, _) => match u.special {
                None => Some(u.factor),
                Some(units::Special::Celsius) => Some(Decimal::ONE),
                Some(units::Special::Fahrenheit) => Decimal::from(5).checked_div(Decimal::from(9)),
            },
        }
    };
    Some(size(a)?.cmp(&size(b)?))
}

impl Quantity {
    pub fn new(value: Decimal, unit: impl Into<String>) -> Quantity {
        Quantity { value, unit: unit.into() }
    }

    /// A unitless quantity (`toQuantity()` on a number): unit `1`.
    pub fn unitless(value: Decimal) -> Quantity {
        Quantity::new(value, "1")
    }

    /// Parses the `toQuantity()` string form `(\+|-)?\d+(\.\d+)?\s*('unit'|keyword)?`:
    /// `4 'g'`, `1 day`, `4.5 'mg'`, `10` (unit `1`). A bare word must be a calendar keyword
    /// (`'1 wk'` does not convert, suite testStringQuantityWeekConvertsToQuantityFalse).
    pub fn parse(s: &str) -> Option<Quantity> {
        let sign = usize::from(s.starts_with(['+', '-']));
        let body = s.get(sign..)?;
        let int = body.bytes().take_while(u8::is_ascii_digit).count();
        let mut number_len = sign + int;
        if let Some(frac) = body.get(int..).and_then(|r| r.strip_prefix('.')) {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            number_len += 1 + digits;
        }
        let value = parse_decimal(s.get(..number_len)?)?;
        let rest = s.get(number_len..)?.trim_start();
        if rest.is_empty() {
            return Some(Quantity::unitless(value));
        }
        if let Some(quoted) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return (!quoted.is_empty() && !quoted.contains('\'')).then(|| Quantity::new(value, quoted));
        }
        is_calendar_keyword(rest).then(|| Quantity::new(value, rest))
    }

    /// `toString()`: `4 'g'`, `1 week` (calendar keywords unquoted), `1 '1'`.
    pub fn to_fhirpath_string(&self) -> String {
        let value = decimal_to_string(&self.value);
        if is_calendar_keyword(&self.unit) {
            format!("{value} {}", self.unit)
        } else {
            format!("{value} '{}'", self.unit)
        }
    }

    /// Whether the unit is one this module can convert (UCUM subset or calendar keyword).
    pub fn has_known_unit(&self) -> bool {
        kind(&self.unit).is_some()
    }

    /// `toQuantity(unit)`: the value in `unit`, or `None` when not convertible. Explicit
    /// conversion may cross calendar and UCUM years/months (`1 year.toQuantity('a')`).
    pub fn convert_to(&self, unit: &str) -> Option<Quantity> {
        if self.unit == unit {
            return Some(self.clone());
        }
        let (value, _) = convert(self.value, &kind(&self.unit)?, &kind(unit)?)?;
        Some(Quantity::new(value, unit))
    }

    /// Both values in the less granular of the two units (left on a tie), plus the
    /// year/month system-crossing flag.
    fn in_least_granular(&self, o: &Quantity) -> Option<(Decimal, Decimal, bool)> {
        if same_unit(&self.unit, &o.unit) {
            return Some((self.value, o.value, false));
        }
        let (a, b) = (kind(&self.unit)?, kind(&o.unit)?);
        if granularity(&a, &b)? == Ordering::Less {
            let (v, approx) = convert(self.value, &a, &b)?;
            Some((v, o.value, approx))
        } else {
            let (v, approx) = convert(o.value, &b, &a)?;
            Some((self.value, v, approx))
        }
    }

    /// `=`: values equal after conversion to a common unit; `None` (empty) when the units are
    /// unknown, not commensurable, or mix calendar and UCUM years/months (`1 year = 1 'a'`).
    pub fn equal(&self, o: &Quantity) -> Option<bool> {
        self.compare(o).map(Ordering::is_eq)
    }

    /// `~`: both values in the least granular unit, compared at the precision of the less
    /// precise one (`4 'g' ~ 4040 'mg'`). Calendar and UCUM years/months are equivalent.
    /// Units that cannot be converted give `false`.
    pub fn equivalent(&self, o: &Quantity) -> bool {
        self.in_least_granular(o).is_some_and(|(a, b, _)| decimals_equivalent(&a, &b))
    }

    /// `<`, `>`, `<=`, `>=`: `None` when not comparable.
    pub fn compare(&self, o: &Quantity) -> Option<Ordering> {
        let (a, b, approx) = self.in_least_granular(o)?;
        (!approx).then(|| a.cmp(&b))
    }

    /// `comparable()`: whether `=` and ordering give a result.
    pub fn comparable(&self, o: &Quantity) -> bool {
        self.compare(o).is_some()
    }

    /// `+`: the result is in the more granular unit (`3 'm' + 3 'cm'` is `303 'cm'`), in
    /// calendar units when the operands come from both systems. Years and months only add to
    /// the same unit; special units (`Cel`) and overflow give `None`.
    pub fn add(&self, o: &Quantity) -> Option<Quantity> {
        if is_special(&self.unit) || is_special(&o.unit) {
            return None;
        }
        if same_unit(&self.unit, &o.unit) {
            return Some(Quantity::new(self.value.checked_add(o.value)?, self.unit.clone()));
        }
        let (a, b) = (kind(&self.unit)?, kind(&o.unit)?);
        let time = |k: &Kind| match k {
            Kind::Calendar(t) => Some((true, *t)),
            Kind::Ucum(_, t) => t.map(|t| (false, t)),
        };
        let (ta, tb) = (time(&a), time(&b));
        // Year/month need an explicit toQuantity() first (spec §Math +, note).
        if ta.is_some_and(|(_, t)| t.is_approximate()) || tb.is_some_and(|(_, t)| t.is_approximate()) {
            return None;
        }
        let cross = matches!((ta, tb), (Some((x, _)), Some((y, _))) if x != y);
        let (left, right, target_unit, target_time) = if granularity(&a, &b)? == Ordering::Greater {
            (convert(self.value, &a, &b)?.0, o.value, &o.unit, tb)
        } else {
            (self.value, convert(o.value, &b, &a)?.0, &self.unit, ta)
        };
        let unit = match target_time {
            Some((_, t)) if cross => t.keyword().1.to_string(),
            _ => target_unit.clone(),
        };
        Some(Quantity::new(left.checked_add(right)?, unit))
    }

    /// `-`: addition of the negated right operand.
    pub fn sub(&self, o: &Quantity) -> Option<Quantity> {
        self.add(&Quantity::new(negate_decimal(o.value), o.unit.clone()))
    }

    /// `*`: units compose per UCUM (`2.0 'cm' * 2.0 'm'` is `4.00 'cm.m'`, equal to
    /// `0.040 'm2'`). Calendar units only multiply with `'1'`; special units give `None`.
    pub fn mul(&self, o: &Quantity) -> Option<Quantity> {
        let value = self.value.checked_mul(o.value)?;
        if o.unit == "1" && !is_special(&self.unit) {
            return Some(Quantity::new(value, self.unit.clone()));
        }
        if self.unit == "1" && !is_special(&o.unit) {
            return Some(Quantity::new(value, o.unit.clone()));
        }
        let mut terms = algebra_terms(&self.unit)?;
        terms.extend(algebra_terms(&o.unit)?);
        Some(Quantity::new(value, render(&merge(terms))))
    }

    /// `/`: units compose per UCUM (`4.0 'g' / 2.0 'm'` is `2 'g/m'`, `'m' / 'm'` is `'1'`).
    /// Division by zero, calendar units (other than dividing by `'1'`) and special units give `None`.
    pub fn div(&self, o: &Quantity) -> Option<Quantity> {
        if o.value.is_zero() {
            return None;
        }
        let value = self.value.checked_div(o.value)?;
        if o.unit == "1" && !is_special(&self.unit) {
            return Some(Quantity::new(value, self.unit.clone()));
        }
        if self.unit == o.unit && !is_special(&self.unit) && !is_calendar_keyword(&self.unit) {
            return Some(Quantity::unitless(value));
        }
        let mut terms = algebra_terms(&self.unit)?;
        for (sym, e) in algebra_terms(&o.unit)? {
            terms.push((sym, e.checked_neg()?));
        }
        Some(Quantity::new(value, render(&merge(terms))))
    }

    /// `lowBoundary([precision])` on the value; the unit is kept.
    pub fn low_boundary(&self, precision: Option<i64>) -> Option<Quantity> {
        Some(Quantity::new(decimal_low_boundary(&self.value, precision)?, self.unit.clone()))
    }

    /// `highBoundary([precision])` on the value; the unit is kept.
    pub fn high_boundary(&self, precision: Option<i64>) -> Option<Quantity> {
        Some(Quantity::new(decimal_high_boundary(&self.value, precision)?, self.unit.clone()))
    }

    /// `precision()` of the value: digits after the decimal point.
    pub fn precision(&self) -> u32 {
        decimal_precision(&self.value)
    }
}

/// Unit terms for `*` and `/`: calendar keywords and special units take no part.
fn algebra_terms(unit: &str) -> Option<units::Terms> {
    if is_calendar_keyword(unit) || is_special(unit) {
        return None;
    }
    parse_terms(unit)
}

/// Identical codes, or the singular and plural of one calendar keyword (`day`, `days`).
fn same_unit(a: &str, b: &str) -> bool {
    a == b || calendar_unit(a).is_some_and(|t| calendar_unit(b) == Some(t))
}

fn is_special(unit: &str) -> bool {
    matches!(kind(unit), Some(Kind::Ucum(u, _)) if u.special.is_some())
}

#[cfg(test)]
#[path = "quantity_tests.rs"]
mod tests;
