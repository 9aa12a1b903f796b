//! A small UCUM subset for `quantity`: parsing unit codes into terms, resolving terms to a
//! dimension vector and a factor to base units, and composing units for `*` and `/`.
//!
//! In: UCUM code strings (`mg`, `cm2`, `g/m`, `mm[Hg]`, `10*3/uL`, `mg{creat}`). Out: `Terms`
//! and `Unit`. Covers the SI prefixes, base and common derived units, time units, the clinical
//! customary units the suite and FHIR examples use, and the special units `Cel`/`[degF]`.
//! Never panics on input; an atom it does not know makes the unit unresolvable (callers then
//! only match identical unit strings). Never does full UCUM validation.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Dimensions: length, mass, time, amount, temperature, charge, luminous intensity, angle,
/// and one for arbitrary units such as `[iU]` (commensurable only with themselves).
pub(crate) const DIMS: usize = 9;
const L: usize = 0;
const M: usize = 1;
const T: usize = 2;
const N: usize = 3;
const TH: usize = 4;
const Q: usize = 5;
const J: usize = 6;
const ANG: usize = 7;
const ARB: usize = 8;

/// UCUM units on non-ratio scales: converting them needs an offset, and they take no part in
/// arithmetic (spec §Math: empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Celsius,
    Fahrenheit,
}

/// A resolved unit: `value * factor` is the value in base units (m, g, s, mol, K, C, cd, rad).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unit {
    pub dims: [i8; DIMS],
    pub factor: Decimal,
    pub special: Option<Special>,
}

/// A unit as flat `(symbol, exponent)` terms; `g/m` is `[("g", 1), ("m", -1)]`.
pub(crate) type Terms = Vec<(String, i32)>;

type Atom = (&'static str, bool, &'static str, [(usize, i8); 4]);

/// (symbol, takes SI prefixes, factor to base units, dimensions).
const ATOMS: &[Atom] = &[
    ("m", true, "1", [(L, 1), (0, 0), (0, 0), (0, 0)]),
    ("g", true, "1", [(M, 1), (0, 0), (0, 0), (0, 0)]),
    ("s", true, "1", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("mol", true, "1", [(N, 1), (0, 0), (0, 0), (0, 0)]),
    ("eq", true, "1", [(N, 1), (0, 0), (0, 0), (0, 0)]),
    ("osm", true, "1", [(N, 1), (0, 0), (0, 0), (0, 0)]),
    ("K", true, "1", [(TH, 1), (0, 0), (0, 0), (0, 0)]),
    ("C", true, "1", [(Q, 1), (0, 0), (0, 0), (0, 0)]),
    ("cd", true, "1", [(J, 1), (0, 0), (0, 0), (0, 0)]),
    ("rad", true, "1", [(ANG, 1), (0, 0), (0, 0), (0, 0)]),
    ("deg", false, "0.0174532925199432957692369077", [(ANG, 1), (0, 0), (0, 0), (0, 0)]),
    ("l", true, "0.001", [(L, 3), (0, 0), (0, 0), (0, 0)]),
    ("L", true, "0.001", [(L, 3), (0, 0), (0, 0), (0, 0)]),
    ("t", true, "1000000", [(M, 1), (0, 0), (0, 0), (0, 0)]),
    ("min", false, "60", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("h", false, "3600", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("d", false, "86400", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("wk", false, "604800", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("mo", false, "2629800", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("a", false, "31557600", [(T, 1), (0, 0), (0, 0), (0, 0)]),
    ("Hz", true, "1", [(T, -1), (0, 0), (0, 0), (0, 0)]),
    ("N", true, "1000", [(L, 1), (M, 1), (T, -2), (0, 0)]),
    ("Pa", true, "1000", [(L, -1), (M, 1), (T, -2), (0, 0)]),
    ("bar", true, "100000000", [(L, -1), (M, 1), (T, -2), (0, 0)]),
    ("m[Hg]", true, "133322000", [(L, -1), (M, 1), (T, -2), (0, 0)]),
    ("J", true, "1000", [(L, 2), (M, 1), (T, -2), (0, 0)]),
    ("cal", true, "4184", [(L, 2), (M, 1), (T, -2), (0, 0)]),
    ("W", true, "1000", [(L, 2), (M, 1), (T, -3), (0, 0)]),
    ("A", true, "1", [(Q, 1), (T, -1), (0, 0), (0, 0)]),
    ("V", true, "1000", [(L, 2), (M, 1), (T, -2), (Q, -1)]),
    ("kat", true, "1", [(N, 1), (T, -1), (0, 0), (0, 0)]),
    ("U", true, "0.0000000166666666666666666667", [(N, 1), (T, -1), (0, 0), (0, 0)]),
    ("[iU]", true, "1", [(ARB, 1), (0, 0), (0, 0), (0, 0)]),
    ("[IU]", true, "1", [(ARB, 1), (0, 0), (0, 0), (0, 0)]),
    ("%", false, "0.01", [(0, 0), (0, 0), (0, 0), (0, 0)]),
    ("[ppm]", false, "0.000001", [(0, 0), (0, 0), (0, 0), (0, 0)]),
    ("[ppb]", false, "0.000000001", [(0, 0), (0, 0), (0, 0), (0, 0)]),
    ("10*", false, "10", [(0, 0), (0, 0), (0, 0), (0, 0)]),
    ("10^", false, "10", [(0, 0), (0, 0), (0, 0), (0, 0)]),
    ("[in_i]", false, "0.0254", [(L, 1), (0, 0), (0, 0), (0, 0)]),
    ("[ft_i]", false, "0.3048", [(L, 1), (0, 0), (0, 0), (0, 0)]),
    ("[yd_i]", false, "0.9144", [(L, 1), (0, 0), (0, 0), (0, 0)]),
    ("[mi_i]", false, "1609.344", [(L, 1), (0, 0), (0, 0), (0, 0)]),
    ("[lb_av]", false, "453.59237", [(M, 1), (0, 0), (0, 0), (0, 0)]),
    ("[oz_av]", false, "28.349523125", [(M, 1), (0, 0), (0, 0), (0, 0)]),
    ("[gr]", false, "0.06479891", [(M, 1), (0, 0), (0, 0), (0, 0)]),
    ("Cel", false, "1", [(TH, 1), (0, 0), (0, 0), (0, 0)]),
    ("[degF]", false, "1", [(TH, 1), (0, 0), (0, 0), (0, 0)]),
];

/// SI prefixes as powers of ten; `da` first so it wins over `d`.
const PREFIXES: &[(&str, i8)] = &[
    ("da", 1),
    ("Y", 24),
    ("Z", 21),
    ("E", 18),
    ("P", 15),
    ("T", 12),
    ("G", 9),
    ("M", 6),
    ("k", 3),
    ("h", 2),
    ("d", -1),
    ("c", -2),
    ("m", -3),
    ("u", -6),
    ("n", -9),
    ("p", -12),
    ("f", -15),
    ("a", -18),
    ("z", -21),
    ("y", -24),
];

/// Units longer than this are not parsed (input bound).
const MAX_UNIT_LEN: usize = 128;

/// Parses a UCUM code into flat terms. Annotations (`{...}`) are dropped; an annotation alone
/// means `1`. `None` for syntax it does not cover.
pub(crate) fn parse_terms(code: &str) -> Option<Terms> {
    if code.is_empty() || code.len() > MAX_UNIT_LEN {
        return None;
    }
    let mut stripped = String::with_capacity(code.len());
    let mut depth = 0usize;
    for c in code.chars() {
        match c {
            '{' if depth == 0 => depth = 1,
            '}' if depth == 1 => depth = 0,
            '{' | '}' => return None,
            _ if depth == 1 => {}
            _ if c.is_ascii() && !c.is_ascii_whitespace() => stripped.push(c),
            _ => return None,
        }
    }
    if depth != 0 {
        return None;
    }
    let mut terms = Terms::new();
    parse_term(stripped.as_bytes(), &mut terms, 1, 0)?;
    Some(merge(terms))
}

/// `term := ['/'] component (('.' | '/') component)*`, each pushed with sign `sign`.
fn parse_term(s: &[u8], out: &mut Terms, sign: i32, nesting: u8) -> Option<()> {
    if nesting > 4 {
        return None;
    }
    let mut i = 0;
    let mut op = 1;
    if s.first() == Some(&b'/') {
        op = -1;
        i = 1;
    }
    loop {
        let start = i;
        if s.get(i) == Some(&b'(') {
            let close = matching_paren(s, i)?;
            let mut inner = Terms::new();
            parse_term(s.get(i + 1..close)?, &mut inner, 1, nesting + 1)?;
            let exp_end = close + 1 + exponent_len(s.get(close + 1..)?);
            let exp = if exp_end > close + 1 { std::str::from_utf8(s.get(close + 1..exp_end)?).ok()?.parse::<i32>().ok()? } else { 1 };
            for (sym, e) in inner {
                out.push((sym, e.checked_mul(exp)?.checked_mul(op * sign)?));
            }
            i = exp_end;
        } else {
            while i < s.len() && !matches!(s.get(i), Some(b'.' | b'/' | b'(' | b')')) {
                i += 1;
            }
            let component = std::str::from_utf8(s.get(start..i)?).ok()?;
            if !component.is_empty() {
                let (sym, exp) = split_exponent(component)?;
                out.push((sym.to_string(), exp.checked_mul(op * sign)?));
            }
        }
        match s.get(i) {
            None => return Some(()),
            Some(b'.') => op = 1,
            Some(b'/') => op = -1,
            _ => return None,
        }
        i += 1;
    }
}

fn matching_paren(s: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, b) in s.iter().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Length of a leading `[+-]?digits` exponent.
fn exponent_len(s: &[u8]) -> usize {
    let sign = usize::from(matches!(s.first(), Some(b'+' | b'-')));
    let digits = s.iter().skip(sign).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        0
    } else {
        sign + digits
    }
}

/// Splits `cm2` into (`cm`, 2) and `s-1` into (`s`, -1). A component that is all digits is a
/// number (`1`, `1000`) and keeps exponent 1; `10*3` is `10*` cubed.
fn split_exponent(component: &str) -> Option<(&str, i32)> {
    if component.bytes().all(|b| b.is_ascii_digit()) {
        return Some((component, 1));
    }
    let bytes = component.as_bytes();
    let digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Some((component, 1));
    }
    let mut cut = bytes.len() - digits;
    if cut > 0 && matches!(bytes.get(cut - 1), Some(b'+' | b'-')) {
        cut -= 1;
    }
    let sym = component.get(..cut)?;
    if sym.is_empty() {
        return None;
    }
    Some((sym, component.get(cut..)?.parse().ok()?))
}

/// Adds up exponents of repeated symbols and drops the ones that cancel or are `1`.
pub(crate) fn merge(terms: Terms) -> Terms {
    let mut out: Terms = Vec::new();
    for (sym, e) in terms {
        if sym == "1" {
            continue;
        }
        match out.iter_mut().find(|(s, _)| *s == sym) {
            Some((_, acc)) => *acc = acc.saturating_add(e),
            None => out.push((sym, e)),
        }
    }
    out.retain(|(_, e)| *e != 0);
    out
}

/// Renders terms as a UCUM code: `cm.m`, `g/m`, `/s`, `m2`; no terms is `1`.
pub(crate) fn render(terms: &Terms) -> String {
    let mut out = String::new();
    for (sym, e) in terms.iter().filter(|(_, e)| *e > 0) {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(sym);
        if *e != 1 {
            out.push_str(&e.to_string());
        }
    }
    for (sym, e) in terms.iter().filter(|(_, e)| *e < 0) {
        out.push('/');
        out.push_str(sym);
        if *e != -1 {
            out.push_str(&e.unsigned_abs().to_string());
        }
    }
    if out.is_empty() {
        out.push('1');
    }
    out
}

/// Resolves terms to dimensions and a factor; `None` for an unknown symbol, overflow, or a
/// special unit that is not alone with exponent 1.
pub(crate) fn resolve(terms: &Terms) -> Option<Unit> {
    let mut unit = Unit { dims: [0; DIMS], factor: Decimal::ONE, special: None };
    for (sym, e) in terms {
        let (dims, factor, special) = symbol(sym)?;
        if special.is_some() {
            if terms.len() != 1 || *e != 1 {
                return None;
            }
            unit.special = special;
        }
        for (k, d) in dims.iter().enumerate() {
            let add = i32::from(*d).checked_mul(*e)?;
            let slot = unit.dims.get_mut(k)?;
            *slot = i8::try_from(i32::from(*slot).checked_add(add)?).ok()?;
        }
        let steps = e.unsigned_abs();
        if steps > 12 {
            return None;
        }
        for _ in 0..steps {
            unit.factor = if *e > 0 { unit.factor.checked_mul(factor)? } else { unit.factor.checked_div(factor)? };
        }
    }
    Some(unit)
}

/// One symbol (prefix + atom, or a plain number) as dimensions, factor and special kind.
fn symbol(sym: &str) -> Option<([i8; DIMS], Decimal, Option<Special>)> {
    if sym.bytes().all(|b| b.is_ascii_digit()) {
        return Some(([0; DIMS], Decimal::from_str(sym).ok()?, None));
    }
    if let Some(found) = atom(sym) {
        return Some(found);
    }
    PREFIXES.iter().find_map(|(p, exp)| {
        let rest = sym.strip_prefix(p)?;
        let (dims, factor, special) = atom(rest).filter(|_| is_metric(rest))?;
        let scale = if *exp < 0 { Decimal::try_new(1, u32::from(exp.unsigned_abs())).ok()? } else { pow10(*exp)? };
        Some((dims, factor.checked_mul(scale)?, special))
    })
}

fn atom(sym: &str) -> Option<([i8; DIMS], Decimal, Option<Special>)> {
    let (name, _, factor, parts) = ATOMS.iter().find(|a| a.0 == sym)?;
    let mut dims = [0i8; DIMS];
    for (k, d) in parts.iter().filter(|(_, d)| *d != 0) {
        *dims.get_mut(*k)? = *d;
    }
    let special = match *name {
        "Cel" => Some(Special::Celsius),
        "[degF]" => Some(Special::Fahrenheit),
        _ => None,
    };
    Some((dims, Decimal::from_str(factor).ok()?, special))
}

fn is_metric(sym: &str) -> bool {
    ATOMS.iter().any(|a| a.0 == sym && a.1)
}

fn pow10(exp: i8) -> Option<Decimal> {
    let mut v = Decimal::ONE;
    for _ in 0..exp {
        v = v.checked_mul(Decimal::TEN)?;
    }
    Some(v)
}

/// A special-unit value in kelvin.
pub(crate) fn special_to_kelvin(value: Decimal, s: Special) -> Option<Decimal> {
    match s {
        Special::Celsius => value.checked_add(Decimal::from_str("273.15").ok()?),
        Special::Fahrenheit => {
            value.checked_add(Decimal::from_str("459.67").ok()?)?.checked_mul(Decimal::from(5))?.checked_div(Decimal::from(9))
        }
    }
}

/// A kelvin value in a special unit.
pub(crate) fn kelvin_to_special(kelvin: Decimal, s: Special) -> Option<Decimal> {
    match s {
        Special::Celsius => kelvin.checked_sub(Decimal::from_str("273.15").ok()?),
        Special::Fahrenheit => {
            kelvin.checked_mul(Decimal::from(9))?.checked_div(Decimal::from(5))?.checked_sub(Decimal::from_str("459.67").ok()?)
        }
    }
}
