//! Conversions (`toX()`, `convertsToX()`) and math functions.
//!
//! Conversions follow the FHIRPath conversion table: what cannot convert gives an empty
//! result (and `convertsToX()` false), never an error; more than one input item is an
//! error. Math on Decimals is exact except `exp`, `ln`, `log`, `power` and `sqrt`, which go
//! through `f64` and come back rounded to 8 decimal places.

use std::rc::Rc;

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};

use super::super::ast::Func;
use super::super::decimal::decimal_to_string;
use super::super::eval::R;
use super::super::quantity::Quantity;
use super::super::temporal::{Date, DateTime, Time};
use super::super::value::{Collection, Item};
use super::Call;

pub(super) fn call<'a>(cx: &Call<'_, 'a, '_>, input: &[Item<'a>]) -> R<Option<Collection<'a>>> {
    let func = cx.func;
    let converts = |f: Func| -> Option<Func> {
        Some(match f {
            Func::ConvertsToBoolean => Func::ToBoolean,
            Func::ConvertsToInteger => Func::ToInteger,
            Func::ConvertsToLong => Func::ToLong,
            Func::ConvertsToDecimal => Func::ToDecimal,
            Func::ConvertsToString => Func::ToString,
            Func::ConvertsToDate => Func::ToDate,
            Func::ConvertsToDateTime => Func::ToDateTime,
            Func::ConvertsToTime => Func::ToTime,
            Func::ConvertsToQuantity => Func::ToQuantity,
            _ => return None,
        })
    };
    if let Some(to) = converts(func) {
        let Some(item) = cx.single(input)? else {
            return Ok(Some(Vec::new()));
        };
        let unit = if to == Func::ToQuantity { cx.arg_str(0)? } else { None };
        return Ok(Some(vec![Item::Bool(convert(to, &item, unit.as_deref(), input).is_some())]));
    }
    if matches!(
        func,
        Func::ToBoolean
            | Func::ToInteger
            | Func::ToLong
            | Func::ToDecimal
            | Func::ToString
            | Func::ToDate
            | Func::ToDateTime
            | Func::ToTime
            | Func::ToQuantity
    ) {
        let Some(item) = cx.single(input)? else {
            return Ok(Some(Vec::new()));
        };
        let unit = if func == Func::ToQuantity { cx.arg_str(0)? } else { None };
        return Ok(Some(convert(func, &item, unit.as_deref(), input).into_iter().collect()));
    }
    if !matches!(
        func,
        Func::Abs
            | Func::Ceiling
            | Func::Exp
            | Func::Floor
            | Func::Ln
            | Func::Log
            | Func::Power
            | Func::Round
            | Func::Sqrt
            | Func::Truncate
    ) {
        return Ok(None);
    }
    let Some(item) = cx.single(input)? else {
        return Ok(Some(Vec::new()));
    };
    if let Item::Quantity(q) = &item {
        if func == Func::Abs {
            return Ok(Some(vec![Item::Quantity(Quantity { value: q.value.abs(), unit: q.unit.clone() })]));
        }
    }
    if let (Func::Abs, Some(q)) = (func, item.as_quantity()) {
        return Ok(Some(vec![Item::Quantity(Quantity { value: q.value.abs(), unit: q.unit })]));
    }
    let int = match item {
        Item::Int(i) | Item::Long(i) => Some(i),
        _ => None,
    };
    let Some(x) = super::super::ops::number(&item) else {
        return Err(cx.error(&format!("{}() applies to a number", func.name())));
    };
    let out = match func {
        Func::Abs => match int {
            Some(i) => i.checked_abs().map(Item::Int),
            None => Some(Item::Dec(x.abs())),
        },
        Func::Ceiling => i64::try_from(x.ceil()).ok().map(Item::Int),
        Func::Floor => i64::try_from(x.floor()).ok().map(Item::Int),
        Func::Truncate => i64::try_from(x.trunc()).ok().map(Item::Int),
        Func::Round => {
            let digits = cx.arg_int(0)?.unwrap_or(0);
            let digits = u32::try_from(digits).map_err(|_| cx.error("round() precision must not be negative"))?;
            Some(Item::Dec(x.round_dp_with_strategy(digits.min(28), RoundingStrategy::MidpointAwayFromZero)))
        }
        Func::Exp => float(x, f64::exp),
        Func::Ln => float(x, f64::ln),
        Func::Sqrt => float(x, f64::sqrt),
        Func::Log => match cx.arg_single(0)?.as_ref().and_then(super::super::ops::number) {
            Some(base) => float2(x, base, |v, b| v.ln() / b.ln()),
            None => None,
        },
        Func::Power => match cx.arg_single(0)? {
            Some(exp) => match (int, &exp) {
                (Some(b), Item::Int(e)) if *e >= 0 => u32::try_from(*e).ok().and_then(|e| b.checked_pow(e)).map(Item::Int),
                _ => super::super::ops::number(&exp).and_then(|e| float2(x, e, f64::powf)),
            },
            None => None,
        },
        _ => None,
    };
    Ok(Some(out.into_iter().collect()))
}

fn float<'a>(x: Decimal, f: fn(f64) -> f64) -> Option<Item<'a>> {
    let v = f(x.to_f64()?);
    finite(v)
}

fn float2<'a>(x: Decimal, y: Decimal, f: fn(f64, f64) -> f64) -> Option<Item<'a>> {
    finite(f(x.to_f64()?, y.to_f64()?))
}

fn finite<'a>(v: f64) -> Option<Item<'a>> {
    if !v.is_finite() {
        return None;
    }
    Decimal::from_f64(v).map(|d| Item::Dec(d.round_dp(8).normalize()))
}

/// `item` converted by the `toX()` function `to`, or `None` where the table has no entry.
pub(super) fn convert<'a>(to: Func, item: &Item<'a>, unit: Option<&str>, input: &[Item<'a>]) -> Option<Item<'a>> {
    let _ = input;
    let item = item.to_system();
    match to {
        Func::ToBoolean => match &item {
            Item::Bool(b) => Some(Item::Bool(*b)),
            Item::Int(1) | Item::Long(1) => Some(Item::Bool(true)),
            Item::Int(0) | Item::Long(0) => Some(Item::Bool(false)),
            Item::Dec(d) if *d == Decimal::ONE => Some(Item::Bool(true)),
            Item::Dec(d) if d.is_zero() => Some(Item::Bool(false)),
            Item::Str(s) => match s.to_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(Item::Bool(true)),
                "false" | "f" | "no" | "n" | "0" | "0.0" => Some(Item::Bool(false)),
                _ => None,
            },
            _ => None,
        },
        Func::ToInteger | Func::ToLong => {
            let v = match &item {
                Item::Int(i) | Item::Long(i) => Some(*i),
                Item::Bool(b) => Some(i64::from(*b)),
                Item::Str(s) if is_integer_text(s) => s.parse::<i64>().ok(),
                _ => None,
            }?;
            if to == Func::ToLong {
                Some(Item::Long(v))
            } else {
                i32::try_from(v).ok().map(|_| Item::Int(v))
            }
        }
        Func::ToDecimal => match &item {
            Item::Int(i) | Item::Long(i) => Some(Item::Dec(Decimal::from(*i))),
            Item::Dec(d) => Some(Item::Dec(*d)),
            Item::Bool(b) => Some(Item::Dec(if *b { Decimal::ONE } else { Decimal::ZERO })),
            Item::Str(s) if is_decimal_text(s) => s.parse::<Decimal>().ok().map(Item::Dec),
            _ => None,
        },
        Func::ToString => to_string(&item).map(|s| Item::Str(Rc::from(s))),
        Func::ToDate => match &item {
            Item::Date(d) => Some(Item::Date(d.clone())),
            Item::DateTime(d) => Some(Item::Date(d.date())),
            Item::Str(s) => Date::parse(s).or_else(|| DateTime::parse(s).map(|d| d.date())).map(Item::Date),
            _ => None,
        },
        Func::ToDateTime => match &item {
            Item::DateTime(d) => Some(Item::DateTime(d.clone())),
            Item::Date(d) => Some(Item::DateTime(DateTime::from_date(d))),
            Item::Str(s) => DateTime::parse(s).or_else(|| Date::parse(s).map(|d| DateTime::from_date(&d))).map(Item::DateTime),
            _ => None,
        },
        Func::ToTime => match &item {
            Item::Time(t) => Some(Item::Time(t.clone())),
            Item::Str(s) => Time::parse(s).map(Item::Time),
            _ => None,
        },
        Func::ToQuantity => {
            let q = match &item {
                Item::Int(i) | Item::Long(i) => Some(Quantity { value: Decimal::from(*i), unit: "1".to_owned() }),
                Item::Dec(d) => Some(Quantity { value: *d, unit: "1".to_owned() }),
                Item::Bool(b) => Some(Quantity { value: if *b { Decimal::ONE } else { Decimal::ZERO }, unit: "1".to_owned() }),
                Item::Str(s) => Quantity::parse(s),
                other => other.as_quantity(),
            }?;
            match unit {
                None => Some(Item::Quantity(q)),
                Some(u) if u == q.unit => Some(Item::Quantity(q)),
                Some(u) => q.convert_to(u).map(Item::Quantity),
            }
        }
        _ => None,
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_decimal_text(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (!body.contains('.') || (!frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit())))
}

/// `toString()`: how each System value renders.
pub(in crate::fhir::fhirpath) fn to_string(item: &Item<'_>) -> Option<String> {
    Some(match item {
        Item::Str(s) => s.to_string(),
        Item::Bool(b) => b.to_string(),
        Item::Int(i) | Item::Long(i) => i.to_string(),
        Item::Dec(d) => decimal_to_string(d),
        Item::Date(d) => d.to_fhirpath_string(),
        Item::DateTime(d) => d.to_fhirpath_string(),
        Item::Time(t) => t.to_fhirpath_string(),
        Item::Quantity(q) => q.to_fhirpath_string(),
        Item::Node(n) => n.quantity().map(|q| q.to_fhirpath_string())?,
        Item::Type { .. } => return None,
    })
}
