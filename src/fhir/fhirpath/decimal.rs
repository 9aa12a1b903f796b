//! FHIRPath `Decimal` helpers over `rust_decimal::Decimal`, shared by the engine and `quantity`.
//!
//! Owns: parsing decimal text (FHIRPath literals, `toDecimal()` strings, JSON number text),
//! rendering with the scale as written (`1.0` stays `1.0`), `precision()`, `~` on decimals,
//! and `lowBoundary()`/`highBoundary()` for decimals.
//! In: `&str` or `Decimal`. Out: `Option<Decimal>`, `String`, `bool`, `u32`.
//! Never panics on input, never goes through `f64`, never normalises a value's scale
//! unless a FHIRPath rule says so.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

/// The largest scale `rust_decimal` can hold; boundary precisions above it give empty.
pub const MAX_PRECISION: u32 = 28;

/// `lowBoundary()`/`highBoundary()` without an argument use 8 digits (spec examples: `1.58650000`).
pub const DEFAULT_BOUNDARY_PRECISION: u32 = 8;

/// Renders a decimal as FHIRPath output does: the scale as written, no exponent.
pub fn decimal_to_string(d: &Decimal) -> String {
    d.to_string()
}

/// Parses FHIRPath decimal text, `(\+|-)?\d+(\.\d+)?`: the literal grammar plus the sign that
/// `toDecimal()`/`toQuantity()` accept. Digits past scale 28 are rounded; too many integer
/// digits give `None`.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let (negative, body) = split_sign(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    Decimal::from_str(if negative { s } else { body }).ok()
}

/// Parses the text of a JSON number (RFC 8259 grammar, exponent allowed), e.g. the raw text
/// serde_json keeps for `valueDecimal`. Without an exponent the scale is kept as written.
pub fn parse_json_decimal(s: &str) -> Option<Decimal> {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
        None => (s, None),
    };
    let body = mantissa.strip_prefix('-').unwrap_or(mantissa);
    let int = body.split_once('.').map_or(body, |(i, _)| i);
    if int.len() > 1 && int.starts_with('0') {
        return None;
    }
    let m = parse_decimal(mantissa).filter(|_| !mantissa.starts_with('+'))?;
    let Some(exp) = exponent else { return Some(m) };
    let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if !all_digits(exp_digits) {
        return None;
    }
    Decimal::from_scientific(s).ok()
}

/// Negation that never yields `-0`: FHIRPath unary minus on `0.0` renders `0.0`
/// (suite HighBoundaryDecimal16), whereas `rust_decimal` would print `-0.0`.
pub fn negate_decimal(d: Decimal) -> Decimal {
    if d.is_zero() {
        let mut z = d;
        z.set_sign_positive(true);
        z
    } else {
        -d
    }
}

/// `precision()` on a decimal: the digits after the point as written (`1.58700` gives 5).
pub fn decimal_precision(d: &Decimal) -> u32 {
    d.scale()
}

/// `~` on decimals: both values rounded to the precision of the less precise operand,
/// trailing zeros ignored when counting precision (`1.2 / 1.8 ~ 0.67` is true).
pub fn decimals_equivalent(a: &Decimal, b: &Decimal) -> bool {
    let scale = a.normalize().scale().min(b.normalize().scale());
    let round = |d: &Decimal| d.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
    round(a) == round(b)
}

/// `lowBoundary([precision])` on a decimal; `None` (empty) for a precision outside 0..=28.
///
/// The value stands for the range of half a unit in its last written digit either side.
/// The suite pins how that range is cut to fewer digits: the low end is truncated, the high
/// end rounded half-up, and a negative value mirrors its magnitude
/// (`1.587.lowBoundary(2)` = 1.58, `(-1.587).lowBoundary(2)` = -1.59, `0.0034.highBoundary(1)` = 0.0).
pub fn decimal_low_boundary(d: &Decimal, precision: Option<i64>) -> Option<Decimal> {
    let p = boundary_precision(precision)?;
    if d.is_sign_negative() && !d.is_zero() {
        return edge(&d.abs(), p, true).map(negative);
    }
    edge(d, p, false)
}

/// `highBoundary([precision])` on a decimal; see [`decimal_low_boundary`].
pub fn decimal_high_boundary(d: &Decimal, precision: Option<i64>) -> Option<Decimal> {
    let p = boundary_precision(precision)?;
    if d.is_sign_negative() && !d.is_zero() {
        return edge(&d.abs(), p, false).map(negative);
    }
    edge(d, p, true)
}

fn boundary_precision(precision: Option<i64>) -> Option<u32> {
    let p = precision.unwrap_or(i64::from(DEFAULT_BOUNDARY_PRECISION));
    u32::try_from(p).ok().filter(|p| *p <= MAX_PRECISION)
}

/// The low (`high == false`) or high edge of a non-negative value, cut to `p` digits.
fn edge(d: &Decimal, p: u32, high: bool) -> Option<Decimal> {
    let half = Decimal::try_new(5, d.scale().checked_add(1)?).ok()?;
    let full = if high { d.checked_add(half)? } else { d.checked_sub(half)? };
    let mut cut = if p >= full.scale() {
        full
    } else if high {
        full.round_dp_with_strategy(p, RoundingStrategy::MidpointAwayFromZero)
    } else {
        full.trunc_with_scale(p)
    };
    cut.rescale(p);
    Some(cut)
}

/// Negates, keeping the minus sign on zero: `(-0.0034).lowBoundary(1)` renders `-0.0`.
fn negative(d: Decimal) -> Decimal {
    let mut n = d;
    n.set_sign_negative(true);
    n
}

fn split_sign(s: &str) -> (bool, &str) {
    if let Some(rest) = s.strip_prefix('-') {
        (true, rest)
    } else {
        (false, s.strip_prefix('+').unwrap_or(s))
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
#[path = "decimal_tests.rs"]
mod tests;
